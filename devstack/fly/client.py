"""A small synchronous client for the stand-in (Machines API, the app's edge, test controls)."""

from __future__ import annotations

from types import TracebackType
from typing import Any

import httpx

from devstack.config import FLY_APP_NAME, FLY_DEV_TOKEN, FLY_EDGE_PORT, FLY_PORT


class FlyStandInClient:
    """Raw responses for API calls tests check the status of; JSON where only the body matters."""

    def __init__(
        self,
        base_url: str = f"http://127.0.0.1:{FLY_PORT}",
        *,
        edge_url: str = f"http://127.0.0.1:{FLY_EDGE_PORT}",
        token: str = FLY_DEV_TOKEN,
        app: str = FLY_APP_NAME,
        timeout_secs: float = 90.0,
    ) -> None:
        self.base_url = base_url
        self.app = app
        self._http = httpx.Client(
            base_url=base_url, headers={"Authorization": f"Bearer {token}"}, timeout=timeout_secs
        )
        # The edge and the controls never see the Fly token (a machine's API has its own secret).
        self._plain = httpx.Client(base_url=base_url, timeout=timeout_secs)
        self._edge = httpx.Client(base_url=edge_url, timeout=timeout_secs)

    def __enter__(self) -> FlyStandInClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()
        self._plain.close()
        self._edge.close()

    # Machines API ---------------------------------------------------------------------------------------
    def machines_path(self, suffix: str = "") -> str:
        return f"/v1/apps/{self.app}/machines{suffix}"

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return self._http.request(method, path, **kwargs)

    def create(self, body: dict[str, Any]) -> httpx.Response:
        return self._http.post(self.machines_path(), json=body)

    def get(self, machine_id: str) -> dict[str, Any]:
        response = self._http.get(self.machines_path(f"/{machine_id}"))
        response.raise_for_status()
        machine: dict[str, Any] = response.json()
        return machine

    def list_machines(self, **params: str) -> list[dict[str, Any]]:
        response = self._http.get(self.machines_path(), params=params)
        response.raise_for_status()
        machines: list[dict[str, Any]] = response.json()
        return machines

    def update(self, machine_id: str, body: dict[str, Any], nonce: str | None = None) -> httpx.Response:
        headers = {"fly-machine-lease-nonce": nonce} if nonce else {}
        return self._http.post(self.machines_path(f"/{machine_id}"), json=body, headers=headers)

    def start(self, machine_id: str) -> httpx.Response:
        return self._http.post(self.machines_path(f"/{machine_id}/start"))

    def stop(self, machine_id: str, body: dict[str, Any] | None = None) -> httpx.Response:
        return self._http.post(self.machines_path(f"/{machine_id}/stop"), json=body or {})

    def delete(self, machine_id: str, *, force: bool = False) -> httpx.Response:
        params = {"force": "true"} if force else {}
        return self._http.delete(self.machines_path(f"/{machine_id}"), params=params)

    def wait(
        self, machine_id: str, state: str = "started", timeout_secs: int = 60, version: str | None = None
    ) -> httpx.Response:
        params = {"state": state, "timeout": str(timeout_secs)} | ({"version": version} if version else {})
        return self._http.get(self.machines_path(f"/{machine_id}/wait"), params=params)

    def events(self, machine_id: str, limit: int = 50) -> list[dict[str, Any]]:
        response = self._http.get(self.machines_path(f"/{machine_id}/events"), params={"limit": str(limit)})
        response.raise_for_status()
        events: list[dict[str, Any]] = response.json()
        return events

    def lease(self, machine_id: str, ttl_secs: int = 30, nonce: str | None = None) -> httpx.Response:
        headers = {"fly-machine-lease-nonce": nonce} if nonce else {}
        return self._http.post(
            self.machines_path(f"/{machine_id}/lease"), json={"ttl": ttl_secs}, headers=headers
        )

    def release(self, machine_id: str, nonce: str | None) -> httpx.Response:
        headers = {"fly-machine-lease-nonce": nonce} if nonce else {}
        return self._http.delete(self.machines_path(f"/{machine_id}/lease"), headers=headers)

    # The app's edge and the controls ----------------------------------------------------------------------
    def machine_http(self, machine_id: str, path: str, method: str = "GET", **kwargs: Any) -> httpx.Response:
        """A request to one machine's HTTP service, pinned with `fly-force-instance-id` as Fly routes it."""
        headers = {"fly-force-instance-id": machine_id, **kwargs.pop("headers", {})}
        return self._edge.request(method, f"/{path.lstrip('/')}", headers=headers, **kwargs)

    def edge_http(self, path: str, method: str = "GET", **kwargs: Any) -> httpx.Response:
        """A request to the app's edge as given (no routing header unless the caller adds one)."""
        return self._edge.request(method, f"/{path.lstrip('/')}", **kwargs)

    def edge_totals(self) -> dict[str, int]:
        """How many requests the edge delivered pinned (`forced`) and load-balanced (`balanced`)."""
        response = self._plain.get("/_control/edge")
        response.raise_for_status()
        totals: dict[str, int] = response.json()
        return totals

    def add_faults(self, *faults: dict[str, Any]) -> None:
        self._plain.post("/_control/faults", json={"faults": list(faults)}).raise_for_status()

    def faults(self) -> list[dict[str, Any]]:
        """The faults still installed (a fault with a count is gone once it was used that often)."""
        response = self._plain.get("/_control/faults")
        response.raise_for_status()
        faults: list[dict[str, Any]] = response.json()["faults"]
        return faults

    def clear_faults(self) -> None:
        self._plain.delete("/_control/faults").raise_for_status()

    def process(self, machine_id: str) -> dict[str, Any]:
        response = self._plain.get(f"/_control/machines/{machine_id}")
        response.raise_for_status()
        info: dict[str, Any] = response.json()
        return info
