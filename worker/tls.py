"""The TLS context every outgoing HTTPS client of the worker shares: the CA bundle is loaded once at start-up,
not once per client (each load is tens of milliseconds on the way to /health)."""

from __future__ import annotations

import functools
import ssl

import httpx


@functools.cache
def client_tls() -> ssl.SSLContext:
    """httpx's own default context (certifi's CA bundle), built on first use."""
    return httpx.create_ssl_context()
