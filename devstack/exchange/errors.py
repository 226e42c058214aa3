"""Binance's error reply: an HTTP status with `{"code": ..., "msg": ...}`."""

from __future__ import annotations


class ApiError(Exception):
    """A request Binance would refuse; rendered as its JSON error body."""

    def __init__(self, code: int, msg: str, http_status: int = 400) -> None:
        super().__init__(f"{code}: {msg}")
        self.code = code
        self.msg = msg
        self.http_status = http_status


def filter_failure(name: str) -> ApiError:
    return ApiError(-1013, f"Filter failure: {name}")


def rejected(msg: str) -> ApiError:
    return ApiError(-2010, msg)


def mandatory(name: str) -> ApiError:
    return ApiError(-1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.")


def illegal(name: str) -> ApiError:
    return ApiError(
        -1100, f"Illegal characters found in parameter '{name}'; legal range is '^[0-9]{{1,20}}$'."
    )


INVALID_SYMBOL = ApiError(-1121, "Invalid symbol.")
INSUFFICIENT_BALANCE = ApiError(-2010, "Account has insufficient balance for requested action.")
UNKNOWN_ORDER = ApiError(-2011, "Unknown order sent.")
NO_SUCH_ORDER = ApiError(-2013, "Order does not exist.")
