"""The wire format between the worker and its sandbox processes: length-prefixed frames on a socket pair.

Worker -> sandbox frames are JSON objects (the sandbox trusts its parent): `snapshot` (map a sweep's
segment), `check` (one program over symbols of a snapshot) and `steps` (one program over one symbol at many
moments of a replay: each step names, per timeframe, the window of the snapshot's series the code sees and
the candle still forming then, and the ticker of that moment; results are per step). Sandbox -> worker
frames are a tiny fixed binary format that the worker parses strictly: a process running hostile code could
write anything, so nothing it sends is ever unpickled or evaluated, every length and index is bounded, and
a malformed frame gets the process killed.

    frame    = length:u32 body                  (big-endian; length counts the body)
    body     = kind:u8 payload
    READY    'R'                                the process is set up and waits for requests
    RESULTS  'S' start:u32 status:u8*           one byte per symbol from `start`: 0 no, 1 match, 2 error,
                                                3 declined (no, with the reason the code raised)
    ERROR    'E' index:u32 message:utf-8        why symbol `index` failed or was declined (sent before
                                                its status)
    DONE     'D' count:u32                      the batch is complete
    FATAL    'F' index:u32 reason:utf-8         the program was stopped at symbol `index`; the process exits
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any

LENGTH = struct.Struct("!I")
INDEX = struct.Struct("!I")
MAX_CHILD_FRAME_BYTES = 64 * 1024
MAX_REQUEST_BYTES = 64 * 1024 * 1024
MAX_MESSAGE_CHARS = 500
# The longest a sandbox holds results before sending them: the worker reads silence beyond the deadline
# plus this as a process that no longer answers.
FLUSH_SECS = 0.02
# Snapshots a sandbox keeps mapped (least recently used first out); the worker mirrors the same LRU.
MAX_SNAPSHOTS = 2

READY = ord("R")
RESULTS = ord("S")
ERROR = ord("E")
DONE = ord("D")
FATAL = ord("F")

# Exit codes of a sandbox process: after a FATAL frame, and after a failure of its own (not the program's).
EXIT_FATAL = 3
EXIT_INTERNAL = 4

NO_MATCH = 0
MATCH = 1
FAILED = 2
DECLINED = 3


class ProtocolViolation(Exception):
    """A sandbox process sent something that is not a valid frame (treated as a compromised process)."""


@dataclass(frozen=True, slots=True)
class Ready:
    pass


@dataclass(frozen=True, slots=True)
class Results:
    start: int
    statuses: bytes


@dataclass(frozen=True, slots=True)
class Error:
    index: int
    message: str


@dataclass(frozen=True, slots=True)
class Done:
    count: int


@dataclass(frozen=True, slots=True)
class Fatal:
    index: int
    reason: str


ChildFrame = Ready | Results | Error | Done | Fatal


# Sandbox side ----------------------------------------------------------------------------------------------
def frame(kind: int, payload: bytes = b"") -> bytes:
    body = bytes((kind,)) + payload
    return LENGTH.pack(len(body)) + body


def encode_results(start: int, statuses: bytes) -> bytes:
    return frame(RESULTS, INDEX.pack(start) + statuses)


def encode_error(index: int, message: str) -> bytes:
    return frame(ERROR, INDEX.pack(index) + clip(message).encode())


def encode_done(count: int) -> bytes:
    return frame(DONE, INDEX.pack(count))


def encode_fatal(index: int, reason: str) -> bytes:
    return frame(FATAL, INDEX.pack(index) + clip(reason).encode())


def clip(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """One line of at most `limit` characters (messages end up in logs and in traders.error_message)."""
    single = " ".join(text.split())
    return single if len(single) <= limit else single[: limit - 3] + "..."


def decode_request(body: bytes) -> dict[str, Any]:
    request = json.loads(body)
    if not isinstance(request, dict):
        raise ValueError("a request must be a JSON object")
    return request


# Worker side -----------------------------------------------------------------------------------------------
def encode_request(request: dict[str, Any]) -> bytes:
    body = json.dumps(request, separators=(",", ":")).encode()
    return LENGTH.pack(len(body)) + body


def encode_raw_request(body: bytes) -> bytes:
    """A request whose JSON body is already encoded (a snapshot index, encoded once per sweep)."""
    return LENGTH.pack(len(body)) + body


def check_child_length(length: int) -> None:
    if not 1 <= length <= MAX_CHILD_FRAME_BYTES:
        raise ProtocolViolation(f"frame length {length} is out of range")


def decode_child_frame(body: bytes) -> ChildFrame:
    """Parse one sandbox -> worker frame body, refusing anything malformed."""
    kind, payload = body[0], body[1:]
    if kind == READY and not payload:
        return Ready()
    if kind in (RESULTS, ERROR, DONE, FATAL) and len(payload) >= INDEX.size:
        (number,) = INDEX.unpack_from(payload)
        rest = payload[INDEX.size :]
        if kind == RESULTS:
            if any(status > DECLINED for status in rest):
                raise ProtocolViolation("unknown status byte")
            return Results(number, rest)
        if kind == DONE and not rest:
            return Done(number)
        if kind in (ERROR, FATAL):
            text = clip(rest.decode("utf-8", errors="replace"))
            return Error(number, text) if kind == ERROR else Fatal(number, text)
    raise ProtocolViolation(f"malformed frame of kind {kind}")
