"""The `analyze-signal` Edge Function: a decision for one signal, with retries, a deadline and a budget.

Every attempt of one analysis carries the same `requestId` (a UUID generated per analysis), so a retry
after a timeout or a lost answer gets the decision the function already recorded (`replayed: true`)
instead of a second model call. 429 and 5xx answers and timeouts are retried with full-jitter backoff,
waiting at least as long as `Retry-After` asks, within the analysis deadline; a `Retry-After` beyond the
deadline (the user's daily token budget is used up until midnight UTC) fails at once. Each trader may
start at most `calls_per_hour` analyses in any rolling hour (`AnalysisBudget`). A backtest calls the
function's backtest form (`judge_backtest`: the signal's context in the body, nothing recorded) as its user.
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import httpx

from worker.clock import Clock, LiveClock
from worker.domain.decision import Decision, InvalidDecision, parse_decision
from worker.errors import WorkerError
from worker.retry import Backoff, retry_after_secs
from worker.tls import client_tls

logger = logging.getLogger(__name__)

HOUR_SECS = 3600.0
BUDGET_CODE = "budget_exhausted"  # analyze-signal's 429 (supabase/functions/_shared/budget.ts)


@dataclass(frozen=True, slots=True)
class AnalysisSettings:
    functions_url: str  # https://<project>/functions/v1
    connect_timeout_secs: float = 5.0
    # The function waits for the model (which it retries itself): give each attempt room for that.
    attempt_timeout_secs: float = 45.0
    deadline_secs: float = 120.0
    max_attempts: int = 4
    backoff: Backoff = field(default_factory=lambda: Backoff(base_secs=1.0, max_secs=15.0))
    calls_per_hour: int = 60


class FailureKind(StrEnum):
    """Why an analysis failed for good (the signal is closed with this in its reason)."""

    BUDGET = "budget_exhausted"  # 429 with a Retry-After beyond the deadline: the daily AI budget
    UNAVAILABLE = "unavailable"  # retries or the deadline ran out on 429/5xx/timeouts
    REFUSED = "refused"  # 4xx: the function will not analyse this request (400/401/403/404/409)
    INVALID = "invalid_decision"  # the answer does not satisfy the decision schema


class AnalysisFailed(WorkerError):
    """The analysis did not produce a usable decision; `kind` says why, the message gives the detail."""

    def __init__(self, kind: FailureKind, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.status = status


@dataclass(frozen=True, slots=True)
class Analysis:
    decision: Decision
    analysis_id: uuid.UUID
    request_id: uuid.UUID
    replayed: bool
    attempts: int


class AnalysisBudget:
    """At most `calls_per_hour` analyses per trader in any rolling hour (memory: one deque per trader)."""

    def __init__(self, calls_per_hour: int, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._limit = calls_per_hour
        self._monotonic = monotonic
        self._calls: dict[str, deque[float]] = {}

    def try_spend(self, trader_id: str) -> bool:
        """Take one call from the trader's budget; False (nothing taken) when the hour's calls are used."""
        now = self._monotonic()
        calls = self._calls.setdefault(trader_id, deque())
        while calls and calls[0] <= now - HOUR_SECS:
            calls.popleft()
        if len(calls) >= self._limit:
            return False
        calls.append(now)
        return True

    def forget(self, trader_id: str) -> None:
        self._calls.pop(trader_id, None)


class AnalysisClient:
    """Calls analyze-signal as the machine (apikey + trader_machine JWT); a backtest as its user."""

    def __init__(
        self,
        settings: AnalysisSettings,
        auth: httpx.Auth,
        *,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._settings = settings
        self._clock = clock or LiveClock()
        self._rng = rng  # None: the module's generator (jitter needs no cryptographic quality)
        timeout = httpx.Timeout(settings.attempt_timeout_secs, connect=settings.connect_timeout_secs)
        self._http = httpx.AsyncClient(
            base_url=settings.functions_url.rstrip("/"),
            auth=auth,
            timeout=timeout,
            transport=transport,
            verify=client_tls(settings.functions_url),
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def analyze(
        self,
        trader_id: uuid.UUID,
        signal_id: uuid.UUID,
        market_data: dict[str, Any],
        *,
        request_id: uuid.UUID | None = None,
    ) -> Analysis:
        """The validated decision for the signal.

        Raises:
            AnalysisFailed: no usable decision (budget, refusal, invalid answer, or retries exhausted).
        """
        request_id = request_id or uuid.uuid4()
        body = {
            "traderId": str(trader_id),
            "signalId": str(signal_id),
            "marketData": market_data,
            "requestId": str(request_id),
        }
        what = f"analyze-signal signal_id={signal_id} request_id={request_id}"
        answer, decision, attempt = await self._call(body, what)
        try:
            analysis_id = uuid.UUID(str(answer["analysisId"]))
        except (ValueError, KeyError) as error:
            raise AnalysisFailed(FailureKind.INVALID, f"{what}: malformed answer ({error!r})") from error
        return Analysis(decision, analysis_id, request_id, bool(answer.get("replayed", False)), attempt)

    async def judge_backtest(
        self, context: dict[str, Any], market_data: dict[str, Any]
    ) -> tuple[Decision, int]:
        """The decision analyze-signal's backtest form gives a signal a backtest holds (`context`: the trader,
        signal, position and history a live call reads from its rows), and the attempts it took.

        Raises:
            AnalysisFailed: as `analyze`.
        """
        body = {"backtest": context, "marketData": market_data}
        what = f"analyze-signal backtest symbol={market_data['symbol']}"
        _, decision, attempt = await self._call(body, what)
        return decision, attempt

    async def _call(self, body: dict[str, Any], what: str) -> tuple[dict[str, Any], Decision, int]:
        """The answer, its checked decision and the attempt it came at."""
        settings = self._settings
        started = self._clock.monotonic()
        last_problem = "no attempt was made"
        for attempt in range(1, settings.max_attempts + 1):
            remaining = settings.deadline_secs - (self._clock.monotonic() - started)
            if remaining <= 0:
                break
            timeout = httpx.Timeout(
                min(settings.attempt_timeout_secs, remaining), connect=settings.connect_timeout_secs
            )
            retry_after: float | None = None
            try:
                response = await self._http.post("/analyze-signal", json=body, timeout=timeout)
            except httpx.TimeoutException as error:
                last_problem = f"timed out ({type(error).__name__})"
            except httpx.TransportError as error:
                last_problem = f"transport error ({type(error).__name__})"
            else:
                if response.status_code == 200:
                    answer, decision = self._parse(response, what)
                    return answer, decision, attempt
                code, problem = _problem(response)
                if response.status_code == 429 or response.status_code >= 500:
                    last_problem = f"HTTP {response.status_code} {problem}"
                    retry_after = retry_after_secs(response.headers.get("retry-after"))
                    # The function's only 429 is the user's daily budget: it resets at midnight UTC.
                    if code == BUDGET_CODE or (
                        retry_after is not None and retry_after > settings.deadline_secs
                    ):
                        wait = f" (retry after {retry_after:.0f}s)" if retry_after is not None else ""
                        raise AnalysisFailed(
                            FailureKind.BUDGET,
                            f"{what}: HTTP {response.status_code} {problem}{wait}",
                            status=response.status_code,
                        )
                else:
                    raise AnalysisFailed(
                        FailureKind.REFUSED,
                        f"{what}: HTTP {response.status_code} {problem}",
                        status=response.status_code,
                    )
            if attempt == settings.max_attempts:
                break
            delay = settings.backoff.delay_secs(attempt - 1, self._rng)
            if retry_after is not None:
                delay = max(delay, retry_after)
            remaining = settings.deadline_secs - (self._clock.monotonic() - started)
            if delay >= remaining:
                break
            logger.warning(
                "retrying %s attempt=%d delay_secs=%.2f problem=%s", what, attempt, delay, last_problem
            )
            await self._clock.sleep(delay)
        raise AnalysisFailed(FailureKind.UNAVAILABLE, f"{what}: gave up: {last_problem}")

    @staticmethod
    def _parse(response: httpx.Response, what: str) -> tuple[dict[str, Any], Decision]:
        try:
            body = response.json()
            return body, parse_decision(body["analysis"])
        except InvalidDecision as error:
            raise AnalysisFailed(FailureKind.INVALID, f"{what}: {error}") from error
        except (ValueError, KeyError, TypeError) as error:
            raise AnalysisFailed(FailureKind.INVALID, f"{what}: malformed answer ({error!r})") from error


def _problem(response: httpx.Response) -> tuple[str | None, str]:
    """The error code and `code: message` from the function's {error: {code, message}} body."""
    try:
        error = response.json().get("error", {})
        code = error.get("code")
        return (str(code) if code is not None else None), f"{code}: {str(error.get('message', ''))[:300]}"
    except (ValueError, AttributeError):
        return None, response.text[:200]
