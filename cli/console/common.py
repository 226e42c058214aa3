"""What every console command shares: the chosen profile, the API, one-line errors, confirmations, JSON/CSV
output, and finding the trader a command names.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import re
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from cli.console.api import Api
from cli.console.errors import ConsoleError, UsageProblem
from cli.console.session import Profile

out = Console(highlight=False)
# soft_wrap: an error stays one line however narrow the terminal.
err = Console(stderr=True, highlight=False, soft_wrap=True)
P = ParamSpec("P")
R = TypeVar("R")

_profile_name = "default"
_SINCE = re.compile(r"^(\d+)([mhdw])$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def choose_profile(name: str) -> None:
    global _profile_name  # noqa: PLW0603 - one profile per CLI invocation, chosen by the root options
    _profile_name = name


def profile() -> Profile:
    return Profile(_profile_name)


def api() -> Api:
    return Api(profile())


def command(function: Callable[P, R]) -> Callable[P, R]:
    """Run a command body; a ConsoleError becomes one red line on stderr and its exit code."""

    @functools.wraps(function)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return function(*args, **kwargs)
        except ConsoleError as error:
            err.print(f"[red]error:[/] {escape(str(error))}")
            raise typer.Exit(error.exit_code) from error
        except KeyboardInterrupt:
            err.print("[yellow]interrupted[/]")
            raise typer.Exit(130) from None

    return run


def confirm(question: str, *, assume_yes: bool) -> None:
    """Ask before a change; refused (exit 1) when the answer is no, or when nobody can answer and no --yes."""
    if assume_yes:
        return
    try:
        answer = typer.confirm(question, default=False)
    except typer.Abort as error:  # no terminal, or input ended before an answer
        raise UsageProblem("this needs a confirmation: answer y, or pass --yes") from error
    if not answer:
        raise ConsoleError("cancelled: nothing changed")


def emit_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2, default=_plain))


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    return str(value)


def write_csv(rows: Sequence[dict[str, Any]], columns: Sequence[str], target: Path | None) -> None:
    """Rows as CSV with a header, to `target` ('-' or None: stdout)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({column: _csv_value(row.get(column)) for column in columns})
    if target is None or str(target) == "-":
        typer.echo(buffer.getvalue(), nl=False)
        return
    try:
        target.write_text(buffer.getvalue())
    except OSError as error:
        raise ConsoleError(f"cannot write {target}: {error.strerror}") from error
    err.print(f"wrote {len(rows)} row(s) to {target}")


def _csv_value(value: Any) -> Any:
    if isinstance(value, dict | list):
        return json.dumps(value, default=_plain)
    return "" if value is None else value


def parse_since(text: str) -> str:
    """'30m', '12h', '7d', '2w', a date or an ISO time -> an RFC 3339 UTC time PostgREST compares with."""
    match = _SINCE.match(text.strip())
    if match:
        delta = timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
        return (datetime.now(UTC) - delta).isoformat()
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError as error:
        raise UsageProblem(
            f"--since must be like 30m, 12h, 7d, 2w, 2026-12-01 or 2026-12-01T08:00:00Z, not {text!r}"
        ) from error
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC).isoformat()


def find_trader(client: Api, reference: str, columns: str = "*") -> dict[str, Any]:
    """The caller's trader by id, unique id prefix (4+ characters) or exact name."""
    reference = reference.strip()
    try:
        trader_id = str(uuid.UUID(reference))
    except ValueError:
        trader_id = None
    if trader_id:
        row = client.one("traders", {"select": columns, "id": f"eq.{trader_id}"}, what="reading the trader")
        if row is None:
            raise ConsoleError(f"no trader {reference} among yours (trademind traders list shows them)")
        return row
    everyone = client.rows("traders", {"select": "id,name"}, what="reading your traders")
    matches = [row for row in everyone if row["name"] == reference]
    if not matches and len(reference) >= 4:
        matches = [row for row in everyone if str(row["id"]).startswith(reference.lower())]
    if not matches:
        raise ConsoleError(f"no trader {reference!r} among yours (trademind traders list shows them)")
    if len(matches) > 1:
        ids = ", ".join(str(row["id"])[:8] for row in matches)
        raise ConsoleError(f"{reference!r} names {len(matches)} traders ({ids}): give more of the id")
    return find_trader(client, str(matches[0]["id"]), columns)


def find_position(client: Api, reference: str) -> str:
    """The id of the caller's position named by its id or a unique prefix (4+ characters, as tables show)."""
    reference = reference.strip().lower()
    try:
        return str(uuid.UUID(reference))
    except ValueError:
        pass
    digits = reference.replace("-", "")
    if len(digits) < 4 or len(digits) > 32 or not all(digit in "0123456789abcdef" for digit in digits):
        raise UsageProblem(f"--position takes a position id or its first 4+ characters, not {reference!r}")
    # uuids order as their hex digits do, so a prefix is the range between its lowest and highest completion.
    lowest, highest = (str(uuid.UUID(digits.ljust(32, fill))) for fill in "0f")
    matches = client.rows(
        "positions",
        {"select": "id", "and": f"(id.gte.{lowest},id.lte.{highest})"},
        what="reading your positions",
        limit=2,
    )
    if not matches:
        raise ConsoleError(f"no position {reference!r} among yours (trademind positions shows them)")
    if len(matches) > 1:
        raise ConsoleError(f"{reference!r} names more than one of your positions: give more of the id")
    return str(matches[0]["id"])


def short_time(value: str | None) -> str:
    if not value:
        return "-"
    moment = datetime.fromisoformat(value).astimezone(UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S")
