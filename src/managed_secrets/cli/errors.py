"""Errors the way kubectl words them, so that a failed command prints one line and never a traceback.

- ``Error from server (NotFound): managedsecrets.managedsecrets.io "x" not found`` (the API server's Status);
- ``error: context "nope" does not exist`` (a problem found on this side: flags, kubeconfig, arguments);
- ``Unable to connect to the server: ...`` (no answer: refused, unresolvable, TLS, timeout).
"""

from __future__ import annotations

import json
import re
import socket
import ssl

from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError, MaxRetryError

__all__ = ["EXIT_FAILED", "EXIT_TIMEOUT", "CliError", "describe"]

EXIT_FAILED = 1
EXIT_TIMEOUT = 124  # as timeout(1)


class CliError(Exception):
    """A failure to report as ``error: <message>`` with ``code`` as the exit status."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


def _status_body(error: ApiException) -> dict[str, object]:
    body = error.body
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    if not body:
        return {}
    try:
        parsed = json.loads(body)
    except ValueError:
        return {"message": str(body).strip()}
    return parsed if isinstance(parsed, dict) else {}


def _connection_reason(error: BaseException) -> str:
    """The innermost useful words of a urllib3/ssl/socket failure: what kubectl says after the colon."""
    cause: BaseException = error
    if isinstance(error, MaxRetryError) and error.reason is not None:
        cause = error.reason
    text = str(cause)
    # "<urllib3.connection.HTTPSConnection object at 0x..>: Failed to establish a new connection: [Errno 111] ..."
    text = re.sub(r"^<[^>]*>:\s*", "", text)
    text = re.sub(r"^HTTPS?Connection\([^)]*\):\s*", "", text)
    text = re.sub(r"\(Caused by [^)]*\)\)?$", "", text).strip()
    url = getattr(error, "url", None)
    pool = getattr(error, "pool", None)
    host = getattr(pool, "host", None)
    port = getattr(pool, "port", None)
    where = f"{host}:{port}" if host else ""
    if where and where not in text:
        text = f"{where}: {text}" if text else where
    return text or type(cause).__name__ + (f" ({url})" if url else "")


def describe(error: BaseException) -> str:
    """One line for ``error`` as kubectl would print it (without the trailing newline)."""
    if isinstance(error, CliError):
        return f"error: {error}"
    if isinstance(error, ApiException):
        if not error.status:  # raised by the client itself (e.g. a TLS failure): no answer from a server
            reason = str(error.reason or "").replace("\n", ": ").strip()
            return f"Unable to connect to the server: {reason}"
        body = _status_body(error)
        reason = str(body.get("reason") or error.reason or error.status)
        message = str(body.get("message") or error.reason or "").strip()
        if error.status == 401:
            return "error: You must be logged in to the server (Unauthorized)"
        return f"Error from server ({reason}): {message}" if message else f"Error from server ({reason})"
    if isinstance(error, HTTPError | ConnectionError | TimeoutError | ssl.SSLError | socket.gaierror):
        return f"Unable to connect to the server: {_connection_reason(error)}"
    return f"error: {error}"
