"""Phoenix channel frames and Supabase Realtime's two serializers (vsn 1.0.0 objects, 2.0.0 arrays)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Protocol

PHOENIX_TOPIC = "phoenix"

# Close codes (RFC 6455): 1003 a frame kind we do not accept, 1007 a frame we cannot decode, 1008 a
# client that went silent, 1012 the server is restarting (realtime-py and realtime-js reconnect),
# 1013 a client too slow to keep up with its own stream.
CLOSE_UNSUPPORTED_DATA = 1003
CLOSE_INVALID_FRAME = 1007
CLOSE_POLICY = 1008
CLOSE_SERVICE_RESTART = 1012
CLOSE_TRY_AGAIN_LATER = 1013


class FrameError(ValueError):
    """A text frame that is not a Phoenix message; the connection is closed with CLOSE_INVALID_FRAME."""


@dataclass(frozen=True, slots=True)
class Frame:
    """One Phoenix message, whichever serializer carried it."""

    join_ref: str | None
    ref: str | None
    topic: str
    event: str
    payload: dict[str, Any]


class Serializer(Protocol):
    vsn: str

    def decode(self, text: str) -> Frame: ...

    def encode(self, frame: Frame) -> str: ...

    def encode_push(self, topic_json: str, event: str, payload_json: str) -> str:
        """A server push (ref null) whose topic and payload are already JSON text (the hot path)."""
        ...


def _ref(value: object, what: str) -> str | None:
    # Phoenix refs are strings; some clients send integers, which Phoenix would echo back as given.
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise FrameError(f"{what} must be a string or null, received {type(value).__name__}")


def _frame(join_ref: object, ref: object, topic: object, event: object, payload: object) -> Frame:
    if not isinstance(topic, str) or not topic:
        raise FrameError("topic must be a non-empty string")
    if not isinstance(event, str) or not event:
        raise FrameError("event must be a non-empty string")
    if not isinstance(payload, dict):
        raise FrameError(f"payload must be an object, received {type(payload).__name__}")
    return Frame(_ref(join_ref, "join_ref"), _ref(ref, "ref"), topic, event, payload)


def _loads(text: str) -> Any:
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError) as error:
        raise FrameError(f"not JSON: {error}") from error


class V1Serializer:
    """Phoenix V1.JSONSerializer: objects; the server sends exactly topic, event, payload and ref."""

    vsn = "1.0.0"

    def decode(self, text: str) -> Frame:
        message = _loads(text)
        if not isinstance(message, dict):
            raise FrameError("a vsn 1.0.0 frame must be a JSON object")
        missing = [key for key in ("topic", "event", "payload", "ref") if key not in message]
        if missing:
            raise FrameError(f"missing {', '.join(missing)}")
        return _frame(
            message.get("join_ref"), message["ref"], message["topic"], message["event"], message["payload"]
        )

    def encode(self, frame: Frame) -> str:
        return json.dumps(
            {"topic": frame.topic, "event": frame.event, "payload": frame.payload, "ref": frame.ref},
            separators=(",", ":"),
        )

    def encode_push(self, topic_json: str, event: str, payload_json: str) -> str:
        return f'{{"topic":{topic_json},"event":"{event}","payload":{payload_json},"ref":null}}'


class V2Serializer:
    """Realtime's V2 serializer for text frames: [join_ref, ref, topic, event, payload]."""

    vsn = "2.0.0"

    def decode(self, text: str) -> Frame:
        message = _loads(text)
        if not isinstance(message, list) or len(message) != 5:
            raise FrameError("a vsn 2.0.0 frame must be an array [join_ref, ref, topic, event, payload]")
        return _frame(*message)

    def encode(self, frame: Frame) -> str:
        return json.dumps(
            [frame.join_ref, frame.ref, frame.topic, frame.event, frame.payload], separators=(",", ":")
        )

    def encode_push(self, topic_json: str, event: str, payload_json: str) -> str:
        return f'[null,null,{topic_json},"{event}",{payload_json}]'


def serializer_for(vsn: str | None) -> Serializer | None:
    """The serializer for a `vsn` query parameter (1.0.0 when absent, as Phoenix), or None if unsupported."""
    if vsn is None or vsn.startswith("1."):
        return V1Serializer()
    if vsn.startswith("2."):
        return V2Serializer()
    return None


def reply(request: Frame, status: str, response: dict[str, Any], *, join_ref: str | None = None) -> Frame:
    """A phx_reply to `request`, echoing its ref."""
    return Frame(
        join_ref if join_ref is not None else request.join_ref,
        request.ref,
        request.topic,
        "phx_reply",
        {"status": status, "response": response},
    )
