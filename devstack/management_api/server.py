"""Supabase's Management API as `supabase functions deploy --use-api` uses it, bundling as hosted does.

What the CLI (2.117.0) sends, read from its source (apps/cli-go/pkg/function/deploy.go, the generated
client's v1DeployAFunction / v1BulkUpdateFunctions) and seen on the wire:
- `POST /v1/projects/{ref}/functions/deploy?slug=<slug>[&bundleOnly=true]`, multipart/form-data: a
  `metadata` part (JSON: entrypoint_path, import_map_path, static_patterns, verify_jwt, name) and one `file`
  part per source file, named by its path relative to the project (the entrypoint and every file its
  relative imports reach, walked by the CLI). 201 with the function (id, slug, version, status, ...).
  With several functions each is sent `bundleOnly=true`, then all are activated at once by
- `PUT /v1/projects/{ref}/functions` with the list of bundled functions: 200 `{"functions": [...]}`.
- `GET /v1/projects/{ref}` afterwards, for the project.
Requests carry `Authorization: Bearer sbp_<40 hex>`; errors are `{"message": "..."}`.

Server-side bundling resolves the entrypoint's module graph from the uploaded files alone; a module that
is not among them fails the deploy with 400, as the platform's bundler does. Here the real Deno resolves it
(`deno info`, npm packages from the local cache, nothing fetched). `GET /_control/functions` shows tests
what was deployed.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from aiohttp import BodyPartReader, web

ACCESS_TOKEN = re.compile(r"^Bearer sbp_(oauth_)?[a-f0-9]{40}$")
PROJECT_REF = re.compile(r"^[a-z]{20}$")
FUNCTION_SLUG = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")
MAX_UPLOAD_BYTES = 20 * 1024 * 1024
BUNDLE_TIMEOUT_SECS = 120


@dataclass(frozen=True, slots=True)
class Deno:
    """The Deno that bundles: its binary and environment (the cache npm packages are read from, offline)."""

    binary: Path
    env: dict[str, str]


@dataclass(slots=True)
class Function:
    """One deployed function of a project."""

    id: str
    slug: str
    name: str
    version: int
    entrypoint_path: str
    import_map_path: str | None
    verify_jwt: bool
    files: list[str]
    sha256: str
    created_at: int
    updated_at: int
    active: bool = False

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "slug": self.slug,
            "name": self.name,
            "version": self.version,
            "status": "ACTIVE" if self.active else "THROTTLED",
            "entrypoint_path": self.entrypoint_path,
            "import_map_path": self.import_map_path,
            "import_map": self.import_map_path is not None,
            "verify_jwt": self.verify_jwt,
            "ezbr_sha256": self.sha256,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }


@dataclass(slots=True)
class Projects:
    functions: dict[str, dict[str, Function]] = field(default_factory=dict)


PROJECTS: web.AppKey[Projects] = web.AppKey("projects", Projects)
DENO: web.AppKey[Deno] = web.AppKey("deno", Deno)


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@web.middleware
async def errors(request: web.Request, handler: Any) -> web.StreamResponse:
    if request.path.startswith("/v1/"):
        if not ACCESS_TOKEN.match(request.headers.get("Authorization", "")):
            return web.json_response({"message": "Unauthorized"}, status=401)
        ref = request.match_info.get("ref")
        if ref is not None and not PROJECT_REF.match(ref):
            return web.json_response({"message": f"Invalid project ref: {ref}"}, status=400)
    try:
        response: web.StreamResponse = await handler(request)
    except ApiError as error:
        return web.json_response({"message": error.message}, status=error.status)
    return response


async def _read_upload(request: web.Request) -> tuple[dict[str, Any], dict[str, bytes]]:
    if not request.content_type.startswith("multipart/form-data"):
        raise ApiError(400, "the body must be multipart/form-data")
    metadata: dict[str, Any] | None = None
    files: dict[str, bytes] = {}
    total = 0
    async for part in await request.multipart():
        if not isinstance(part, BodyPartReader):
            raise ApiError(400, "nested multipart bodies are not accepted")
        data = await part.read()
        total += len(data)
        if total > MAX_UPLOAD_BYTES:
            raise ApiError(413, "the upload is larger than 20 MB")
        if part.name == "metadata":
            try:
                metadata = json.loads(data)
            except ValueError as error:
                raise ApiError(400, f"metadata is not JSON: {error}") from None
        elif part.name == "file":
            path = PurePosixPath(part.filename or "")
            if not part.filename or path.is_absolute() or ".." in path.parts:
                raise ApiError(400, f"invalid file name {part.filename!r}")
            files[str(path)] = data
        else:
            raise ApiError(400, f"unexpected form field {part.name!r}")
    if not isinstance(metadata, dict) or not isinstance(metadata.get("entrypoint_path"), str):
        raise ApiError(400, "metadata with an entrypoint_path is required")
    return metadata, files


def _write_tree(root: str, files: dict[str, bytes]) -> None:
    for name, content in files.items():
        target = Path(root, name)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)


async def _bundle(deno: Deno, files: dict[str, bytes], entrypoint: str) -> None:
    """Resolve the entrypoint's module graph from the uploaded files alone; ApiError when it does not."""
    if entrypoint not in files:
        raise ApiError(400, f"Failed to bundle the function (reason: {entrypoint} was not uploaded).")
    with tempfile.TemporaryDirectory(prefix="functions-deploy-") as root:
        await asyncio.to_thread(_write_tree, root, files)
        process = await asyncio.create_subprocess_exec(
            str(deno.binary), "info", "--json", "--no-lock", str(Path(root, entrypoint)),
            env=deno.env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            stdout, stderr = await asyncio.wait_for(process.communicate(), BUNDLE_TIMEOUT_SECS)
        except TimeoutError:
            process.kill()
            raise ApiError(504, "Failed to bundle the function (reason: timed out).") from None
        if process.returncode != 0:
            reason = stderr.decode(errors="replace").strip()
        else:
            reason = "; ".join(m["error"] for m in json.loads(stdout)["modules"] if m.get("error"))
        if reason:
            raise ApiError(400, f"Failed to bundle the function (reason: {reason.replace(root + '/', '')}).")


async def deploy_function(request: web.Request) -> web.Response:
    ref = request.match_info["ref"]
    slug = request.query.get("slug", "")
    if not FUNCTION_SLUG.match(slug):
        raise ApiError(400, f"Invalid function slug: {slug!r}")
    metadata, files = await _read_upload(request)
    await _bundle(request.app[DENO], files, metadata["entrypoint_path"])
    sha256 = hashlib.sha256(b"".join(name.encode() + content for name, content in sorted(files.items())))
    functions = request.app[PROJECTS].functions.setdefault(ref, {})
    now = int(time.time() * 1000)
    previous = functions.get(slug)
    function = Function(
        id=previous.id if previous else str(uuid.uuid4()),
        slug=slug,
        name=str(metadata.get("name") or slug),
        version=previous.version + 1 if previous else 1,
        entrypoint_path=metadata["entrypoint_path"],
        import_map_path=metadata.get("import_map_path") or None,
        verify_jwt=bool(metadata.get("verify_jwt", True)),
        files=sorted(files),
        sha256=sha256.hexdigest(),
        created_at=previous.created_at if previous else now,
        updated_at=now,
        # bundleOnly: stored, not serving until the bulk update activates it.
        active=request.query.get("bundleOnly") != "true",
    )
    functions[slug] = function
    return web.json_response(function.as_json(), status=201)


async def bulk_update(request: web.Request) -> web.Response:
    functions = request.app[PROJECTS].functions.get(request.match_info["ref"], {})
    try:
        body = await request.json()
    except ValueError:
        raise ApiError(400, "the body must be a JSON list of functions") from None
    if not isinstance(body, list) or not all(isinstance(item, dict) for item in body):
        raise ApiError(400, "the body must be a JSON list of functions")
    updated = []
    for item in body:
        function = functions.get(str(item.get("slug")))
        if function is None or function.id != item.get("id"):
            raise ApiError(404, f"Function {item.get('slug')!r} was not bundled in this project")
        function.active = True
        updated.append(function.as_json())
    return web.json_response({"functions": updated})


async def list_functions(request: web.Request) -> web.Response:
    functions = request.app[PROJECTS].functions.get(request.match_info["ref"], {})
    return web.json_response([function.as_json() for function in functions.values()])


async def get_project(request: web.Request) -> web.Response:
    ref = request.match_info["ref"]
    return web.json_response(
        {"id": ref, "ref": ref, "name": ref, "organization_id": "local", "region": "us-east-1",
         "status": "ACTIVE_HEALTHY", "created_at": "2026-01-01T00:00:00Z"}
    )  # fmt: skip


async def control_functions(request: web.Request) -> web.Response:
    """Every project's functions with the files each deploy uploaded (tests only)."""
    projects = request.app[PROJECTS].functions
    return web.json_response(
        {
            ref: {slug: fn.as_json() | {"files": fn.files} for slug, fn in functions.items()}
            for ref, functions in projects.items()
        }
    )


async def health(_: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def create_app(deno: Deno) -> web.Application:
    app = web.Application(middlewares=[errors], client_max_size=MAX_UPLOAD_BYTES)
    app[PROJECTS] = Projects()
    app[DENO] = deno
    app.router.add_post("/v1/projects/{ref}/functions/deploy", deploy_function)
    app.router.add_put("/v1/projects/{ref}/functions", bulk_update)
    app.router.add_get("/v1/projects/{ref}/functions", list_functions)
    app.router.add_get("/v1/projects/{ref}", get_project)
    app.router.add_get("/_control/functions", control_functions)
    app.router.add_get("/_control/health", health)
    return app
