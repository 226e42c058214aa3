"""Log lines carry RFC 3339 UTC timestamps and never a secret, wherever the secret appears."""

from __future__ import annotations

import logging
import re

from worker.log_setup import LogOnce, RedactingFormatter

SECRET = "sk_live_0123456789abcdef"


def record(message: str, *args: object, exc_info: object = None) -> logging.LogRecord:
    return logging.LogRecord("worker.test", logging.INFO, __file__, 1, message, args, exc_info)  # type: ignore[arg-type]


def test_line_format_is_timestamp_level_logger_message() -> None:
    line = RedactingFormatter([]).format(record("order placed client_order_id=%s", "tm-1"))

    assert re.fullmatch(
        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z INFO worker\.test order placed client_order_id=tm-1", line
    )


def test_secrets_are_masked_in_arguments_and_tracebacks() -> None:
    formatter = RedactingFormatter([SECRET])
    try:
        raise RuntimeError(f"auth failed with {SECRET}")
    except RuntimeError as error:
        failing = record("call failed key=%s", SECRET, exc_info=(type(error), error, error.__traceback__))

    line = formatter.format(failing)

    assert SECRET not in line
    assert line.count("***") == 2


def test_log_once_throttles_repeats_per_key() -> None:
    logger = logging.getLogger("worker.test.once")
    once = LogOnce(logger, interval_secs=3600)
    messages: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda rec: messages.append(rec.getMessage())  # type: ignore[method-assign]
    logger.addHandler(handler)
    try:
        for _ in range(5):
            once.warning("bad-frame", "malformed message skipped stream=%s", "btcusdt@kline_1m")
        once.warning("other", "another problem")
    finally:
        logger.removeHandler(handler)

    assert messages == ["malformed message skipped stream=btcusdt@kline_1m", "another problem"]
