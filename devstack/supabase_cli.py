"""The Supabase CLI (npm `supabase`, pinned in package.json) on the stack's database: push, reset, lint, list.

Migrations and the seed are applied, and recorded in `supabase_migrations`, by the CLI itself, exactly as
`supabase db push` does to a hosted project. The database is given as a `localhost` URL: the CLI takes
127.0.0.1 on config.toml's db.port for the Docker container it manages itself, and would try to re-create
that container on `db reset`.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from devstack.config import StackConfig
from devstack.errors import StackError

# What the CLI prints as it works that is worth passing on; everything else is prompts and connection notes.
_PROGRESS_PREFIXES = ("Applying migration ", "Seeding data from ", "Resetting remote database")
_SKIPPED_MIGRATION = "Skipping migration "


class SupabaseCliError(StackError):
    """The CLI failed; the message carries its own words (the migration file and the failing statement)."""


@dataclass(frozen=True)
class LintFinding:
    """One issue plpgsql_check reported through `supabase db lint`."""

    function: str
    level: str
    message: str
    sql_state: str = ""
    line: str = ""
    statement: str = ""
    hint: str = ""

    def describe(self) -> str:
        where = f" at line {self.line}" if self.line else ""
        code = f" [{self.sql_state}]" if self.sql_state else ""
        text = f"{self.function}{where}: {self.level}{code}: {self.message}"
        if self.statement:
            text += f" (in: {' '.join(self.statement.split())})"
        return text + (f"; hint: {self.hint}" if self.hint else "")


@dataclass(frozen=True)
class HistoryRow:
    """One row of `supabase migration list`: a version present locally, in the database's history, or both."""

    local: str | None
    remote: str | None


class SupabaseCli:
    """Run the CLI against one database of the stack's cluster, for one project folder."""

    def __init__(self, config: StackConfig, *, workdir: Path | None = None, dbname: str = "postgres") -> None:
        self._config = config
        self._workdir = workdir or config.repo_root
        self.db_url = f"postgresql://postgres:postgres@localhost:{config.db_port}/{dbname}?sslmode=disable"

    def push(self, progress: Callable[[str], None] = lambda _: None) -> None:
        """Apply every migration not in the history (older versions too: others' work arrives late) and the
        seed files not yet recorded; a file in supabase/migrations the CLI would skip is an error."""
        output = self._run(["db", "push", "--include-all", "--include-seed", "--yes"], progress)
        skipped = [line for line in output.splitlines() if line.startswith(_SKIPPED_MIGRATION)]
        if skipped:
            raise SupabaseCliError("supabase db push ignored a migration file: " + "; ".join(skipped))

    def reset(self, progress: Callable[[str], None] = lambda _: None) -> None:
        """`supabase db reset`: drop every user schema and object, then apply every migration and the seed."""
        self._run(["db", "reset", "--yes"], progress)

    def lint(self) -> list[LintFinding]:
        """`supabase db lint --level warning`: every warning and error plpgsql_check finds, by function."""
        output = self._run(["db", "lint", "--level", "warning"], stdout_only=True)
        findings = []
        for result in json.loads(output) if output.strip() else []:
            for issue in result.get("issues") or []:
                statement = issue.get("statement") or {}
                findings.append(
                    LintFinding(
                        function=result["function"],
                        level=issue["level"],
                        message=issue["message"],
                        sql_state=issue.get("sqlState", ""),
                        line=statement.get("lineNumber", ""),
                        statement=statement.get("text", ""),
                        hint=issue.get("hint", ""),
                    )
                )
        return findings

    def migration_list(self) -> list[HistoryRow]:
        """The rows of `supabase migration list`: local files against the database's history."""
        rows = []
        for line in self._run(["migration", "list"], stdout_only=True).splitlines():
            cells = [cell.strip().strip("`").strip() for cell in line.split("|")]
            if len(cells) != 3 or not any(cell.isdigit() for cell in cells[:2]):
                continue  # the header, its rule, blank lines
            rows.append(HistoryRow(local=cells[0] or None, remote=cells[1] or None))
        return rows

    def _run(
        self, args: list[str], progress: Callable[[str], None] = lambda _: None, *, stdout_only: bool = False
    ) -> str:
        """Run the CLI without a terminal; return its output (stdout alone, for JSON and tables, if asked)."""
        argv = [str(self._config.supabase_bin), "--workdir", str(self._workdir), *args]
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": os.environ.get("HOME", str(self._config.state_dir)),
            "DO_NOT_TRACK": "1",
            "SUPABASE_TELEMETRY_DISABLED": "1",
            "NO_COLOR": "1",
        }
        lines = []
        with subprocess.Popen(
            [*argv, "--db-url", self.db_url],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE if stdout_only else subprocess.STDOUT,
            env=env,
            text=True,
        ) as process:
            for line in process.stdout or ():
                lines.append(line.rstrip("\n"))
                if line.startswith(_PROGRESS_PREFIXES):
                    progress(line.strip().removesuffix("..."))
            errors = process.stderr.read().splitlines() if process.stderr else []
        if process.returncode != 0:
            raise SupabaseCliError(_failure(args, [*lines, *errors]))
        return "\n".join(lines)


def _failure(args: list[str], lines: list[str]) -> str:
    """The CLI's own account of the failure, from the step it was on (which names the file)."""
    steps = [index for index, line in enumerate(lines) if line.startswith(_PROGRESS_PREFIXES)]
    relevant = lines[steps[-1] :] if steps else lines[-12:]
    relevant = [line for line in relevant if line.strip() and not line.startswith("Try rerunning")]
    return f"supabase {' '.join(args[:2])} failed: " + "\n  ".join(relevant)
