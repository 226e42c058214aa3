"""The TLS context every outgoing HTTPS client of the worker shares: the CA bundle is loaded once, for the
first HTTPS client, not once per client (each load is ~20 ms of CPU on the way to /health), and never for
a client of a plain-HTTP endpoint (the local stack's)."""

from __future__ import annotations

import functools
import ssl
from urllib.parse import urlsplit

import httpx


def client_tls(url: str) -> ssl.SSLContext:
    """The context for a client of `url`: certifi's CA bundle for https; for http, one that trusts no CA, so a
    request that reaches a TLS server anyway (a redirect, an absolute https URL) fails verification rather
    than going unchecked."""
    return _verified() if urlsplit(url).scheme != "http" else _trusting_nothing()


@functools.cache
def _verified() -> ssl.SSLContext:
    return httpx.create_ssl_context()  # httpx's own default: certifi's bundle, hostname checked


@functools.cache
def _trusting_nothing() -> ssl.SSLContext:
    return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED and check_hostname, with no CA loaded
