"""Request bodies checked against the Machines API spec (`../shared/specs/fly-machines-openapi.json`)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft7Validator
from jsonschema.exceptions import ValidationError

from devstack.config import REPO_ROOT

SPEC_PATH = REPO_ROOT.parent / "shared" / "specs" / "fly-machines-openapi.json"


@dataclass(frozen=True, slots=True)
class SpecViolation(Exception):
    """A request body the spec does not allow; `message` reads like Fly's own 400 answers."""

    message: str


@cache
def _spec(path: Path = SPEC_PATH) -> dict[str, Any]:
    with path.open() as spec_file:
        spec: dict[str, Any] = json.load(spec_file)
    return spec


@cache
def _validator(schema_name: str) -> Any:
    # OpenAPI 3.0 schemas are a JSON Schema dialect close to draft 7; refs resolve inside the spec document
    # because the spec's `components` sit next to the `$ref` in one root schema.
    spec = _spec()
    if schema_name not in spec["components"]["schemas"]:
        raise KeyError(f"the spec has no schema {schema_name!r}")
    root = {"$ref": f"#/components/schemas/{schema_name}", "components": spec["components"]}
    return Draft7Validator(root)


def validate(schema_name: str, body: Any) -> None:
    """Raise SpecViolation naming the first problem when `body` does not match the spec's schema."""
    try:
        _validator(schema_name).validate(body)
    except ValidationError as error:
        where = ".".join(str(part) for part in error.absolute_path) or "body"
        raise SpecViolation(f"invalid {schema_name} at {where}: {error.message}") from None


def query_enum(path: str, method: str, parameter: str) -> tuple[str, ...]:
    """The allowed values of a query parameter, e.g. the states `/wait` accepts."""
    operation = _spec()["paths"][path][method]
    for declared in operation.get("parameters", []):
        if declared.get("name") == parameter:
            return tuple(declared.get("schema", {}).get("enum", ()))
    raise KeyError(f"{method.upper()} {path} has no parameter {parameter!r}")
