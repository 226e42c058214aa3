"""Gemini's wire shapes: request checks (strict about unknown fields, like the real API), answers, errors."""

from __future__ import annotations

import math
import re
import uuid
from dataclasses import dataclass
from typing import Any

# Fields of the v1beta `Schema` message; the real API rejects any other name with INVALID_ARGUMENT.
SCHEMA_FIELDS = frozenset(
    {
        "type",
        "format",
        "title",
        "description",
        "nullable",
        "enum",
        "maxItems",
        "minItems",
        "properties",
        "required",
        "minProperties",
        "maxProperties",
        "minLength",
        "maxLength",
        "pattern",
        "example",
        "anyOf",
        "propertyOrdering",
        "default",
        "items",
        "minimum",
        "maximum",
    }
)
SCHEMA_TYPES = frozenset(
    {"TYPE_UNSPECIFIED", "STRING", "NUMBER", "INTEGER", "BOOLEAN", "ARRAY", "OBJECT", "NULL"}
)
MODEL_NAME = re.compile(r"^gemini-[A-Za-z0-9.-]+$")


class GeminiApiError(Exception):
    """An error answer in Google's format: {"error": {"code", "message", "status", "details"?}}."""

    def __init__(
        self, code: int, status: str, message: str, details: list[dict[str, Any]] | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.status = status
        self.message = message
        self.details = details or []

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message, "status": self.status}
        if self.details:
            error["details"] = self.details
        return {"error": error}


def invalid_argument(message: str) -> GeminiApiError:
    return GeminiApiError(400, "INVALID_ARGUMENT", message)


def unknown_field(name: str, where: str) -> GeminiApiError:
    return invalid_argument(
        f"Invalid JSON payload received. Unknown name \"{name}\" at '{where}': Cannot find field."
    )


def check_schema(schema: Any, where: str) -> None:
    """Reject what the real API rejects in a responseSchema: unknown names, bad types."""
    if not isinstance(schema, dict):
        raise invalid_argument(f"Invalid value at '{where}', expected an object")
    for name, value in schema.items():
        if name not in SCHEMA_FIELDS:
            raise unknown_field(name, where)
        if name == "type" and (not isinstance(value, str) or value.upper() not in SCHEMA_TYPES):
            raise invalid_argument(
                f"Invalid value at '{where}.type' (type.googleapis.com/google.ai.generativelanguage"
                f'.v1beta.Type), "{value}"'
            )
        _check_children(name, value, where)
    if isinstance(schema.get("required"), list) and isinstance(schema.get("properties"), dict):
        missing = [name for name in schema["required"] if name not in schema["properties"]]
        if missing:
            raise invalid_argument(
                f"* GenerateContentRequest.{where}.required[0]: property is not defined: {missing[0]}"
            )


def _check_children(name: str, value: Any, where: str) -> None:
    if name == "properties":
        if not isinstance(value, dict):
            raise invalid_argument(f"Invalid value at '{where}.properties', expected an object")
        for index, sub in enumerate(value.values()):
            check_schema(sub, f"{where}.properties[{index}].value")
    elif name == "items":
        check_schema(value, f"{where}.items")
    elif name == "anyOf":
        for index, sub in enumerate(value if isinstance(value, list) else []):
            check_schema(sub, f"{where}.any_of[{index}]")


@dataclass(frozen=True)
class GenerateRequest:
    """What the stand-in needs from a generateContent body."""

    model: str
    system_text: str
    turns: list[tuple[str, str]]  # (role, text), oldest first
    response_mime_type: str | None
    response_schema: dict[str, Any] | None
    max_output_tokens: int | None

    @property
    def first_user_text(self) -> str:
        return next((text for role, text in self.turns if role == "user"), "")

    @property
    def prompt_chars(self) -> int:
        schema_chars = len(str(self.response_schema)) if self.response_schema else 0
        return len(self.system_text) + sum(len(text) for _, text in self.turns) + schema_chars


def _text_of(content: Any, where: str) -> str:
    if not isinstance(content, dict):
        raise invalid_argument(f"Invalid value at '{where}', expected a Content object")
    parts = content.get("parts")
    if not isinstance(parts, list) or not parts:
        raise invalid_argument(f"* GenerateContentRequest.{where}.parts: contents.parts must not be empty.")
    texts = []
    for index, part in enumerate(parts):
        if not isinstance(part, dict) or not isinstance(part.get("text"), str):
            raise invalid_argument(
                f"Invalid value at '{where}.parts[{index}]': only text parts are supported here"
            )
        texts.append(part["text"])
    return "".join(texts)


def parse_request(model: str, body: Any) -> GenerateRequest:
    if not MODEL_NAME.match(model):
        raise GeminiApiError(
            404,
            "NOT_FOUND",
            f"models/{model} is not found for API version v1beta, or is not supported for generateContent.",
        )
    if not isinstance(body, dict):
        raise invalid_argument("Invalid JSON payload received. Expected an object.")
    known = {
        "contents",
        "systemInstruction",
        "system_instruction",
        "generationConfig",
        "generation_config",
        "safetySettings",
        "tools",
        "toolConfig",
        "cachedContent",
    }
    for name in body:
        if name not in known:
            raise unknown_field(name, "")
    contents = body.get("contents")
    if not isinstance(contents, list) or not contents:
        raise invalid_argument("* GenerateContentRequest.contents: contents is not specified")
    turns = []
    for index, content in enumerate(contents):
        role = content.get("role", "user") if isinstance(content, dict) else "user"
        if role not in ("user", "model"):
            raise invalid_argument(
                f"Please use a valid role: user, model. (contents[{index}].role was {role})"
            )
        turns.append((role, _text_of(content, f"contents[{index}]")))
    system = body.get("systemInstruction", body.get("system_instruction"))
    system_text = _text_of(system, "system_instruction") if system is not None else ""
    config = body.get("generationConfig", body.get("generation_config")) or {}
    if not isinstance(config, dict):
        raise invalid_argument("Invalid value at 'generation_config', expected an object")
    schema = config.get("responseSchema", config.get("response_schema"))
    mime = config.get("responseMimeType", config.get("response_mime_type"))
    if schema is not None:
        check_schema(schema, "generation_config.response_schema")
        if mime != "application/json":
            raise invalid_argument(
                "* GenerateContentRequest.generation_config.response_schema: response_mime_type must be "
                "application/json when response_schema is set."
            )
    max_tokens = config.get("maxOutputTokens", config.get("max_output_tokens"))
    return GenerateRequest(
        model=model,
        system_text=system_text,
        turns=turns,
        response_mime_type=mime if isinstance(mime, str) else None,
        response_schema=schema,
        max_output_tokens=max_tokens if isinstance(max_tokens, int) else None,
    )


def count_tokens(chars: int) -> int:
    """About four characters per token, as Gemini's tokenizer averages on English and code."""
    return max(1, math.ceil(chars / 4))


def answer(request: GenerateRequest, text: str, finish_reason: str = "STOP") -> dict[str, Any]:
    prompt_tokens = count_tokens(request.prompt_chars)
    output_tokens = count_tokens(len(text))
    return {
        "candidates": [
            {
                "content": {"parts": [{"text": text}], "role": "model"},
                "finishReason": finish_reason,
                "index": 0,
            }
        ],
        "usageMetadata": {
            "promptTokenCount": prompt_tokens,
            "candidatesTokenCount": output_tokens,
            "totalTokenCount": prompt_tokens + output_tokens,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt_tokens}],
        },
        "modelVersion": request.model,
        "responseId": uuid.uuid4().hex[:22],
    }
