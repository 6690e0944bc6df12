"""The External strategy: a rotation endpoint the user runs, called over HTTPS for each step.

It plays the part of a cloud secrets manager's rotation function. Every step is one ``POST`` of a JSON
document to ``spec.external.url``::

    {"step": "create" | "set" | "test" | "finish",
     "secretId": "<namespace>/<name>",
     "versionId": "<the pending version id>",
     "current": {"<key>": "<base64>", ...} | null,
     "pending": {"<key>": "<base64>", ...}}          (set, test and finish only)

``initial`` is sent as ``create`` with ``current: null``. ``versionId`` is the idempotency key: the operator
resumes an interrupted rotation under the same version id, so the endpoint sees the same step for the same
version more than once and must treat it as a repeat (for ``create``: answer with the same value). The
``Idempotency-Key`` header carries ``<secretId>/<versionId>/<step>`` for gateways that deduplicate on it.

The answer to ``create`` is ``{"value": {"<key>": "<base64>", ...}}``, the new value, which the engine stores
as ``ACSPending``. The other steps only need a 2xx status; their body is not read.

The transport is deliberately narrow: https only, certificate and host name always verified (against the
system CAs, or against ``caBundle`` alone when it is given), TLS 1.2 or newer, no redirects, no proxy, a
response of at most ``MAX_RESPONSE_BYTES``, and ``timeoutSeconds`` as a deadline for the TLS handshake, the
request and the whole response (the TCP connect has ``timeoutSeconds`` of its own; the DNS lookup has no
bound). Failures raise ``RotationStepFailed`` with a ``Webhook*`` reason (``InvalidSpec``, ``Credentials*`` or
``UnsupportedValue`` before any call); messages name the endpoint's origin and the status code, never a value,
the token, or anything the endpoint sent back (an endpoint may echo what it was given).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import http.client
import json
import socket
import ssl
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

from managed_secrets.domain import RotationStep, SecretValue, ValueKind
from managed_secrets.domain.values import validate_data_key
from managed_secrets.errors import InvalidRequest
from managed_secrets.rotation.strategy import RotationContext, RotationStepFailed, RotationStrategy, register

__all__ = ["DEFAULT_TIMEOUT_SECONDS", "MAX_RESPONSE_BYTES", "ExternalEndpoint", "ExternalStrategy"]

DEFAULT_TIMEOUT_SECONDS = 30
MAX_TIMEOUT_SECONDS = 300
MAX_RESPONSE_BYTES = 1024 * 1024
TOKEN_KEY = "token"
_USER_AGENT = "managed-secrets-operator"


@dataclass(frozen=True, slots=True)
class ExternalEndpoint:
    """``spec.external``, parsed. Checked again here: the schema may not have run (old objects, tests)."""

    host: str
    port: int
    target: str
    """Path and query of the request line."""
    timeout: int
    ca_bundle: str | None = None
    credentials_secret: str | None = None

    @property
    def origin(self) -> str:
        """``https://host:port``: what messages show of the URL (its path or query could carry anything)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"https://{host}:{self.port}"

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any], step: str) -> ExternalEndpoint:
        def invalid(message: str) -> RotationStepFailed:
            return RotationStepFailed(step, "InvalidSpec", message)

        url = spec.get("url")
        if not isinstance(url, str) or not url:
            raise invalid("external.url is required")
        if not url.isascii() or any(ch.isspace() or not ch.isprintable() for ch in url):
            raise invalid("external.url must be ASCII without spaces (percent-encode the path, punycode the host)")
        try:
            parts = urlsplit(url)
            port = parts.port or 443
        except ValueError:
            raise invalid("external.url is not a valid URL") from None
        if parts.scheme.lower() != "https":
            raise invalid(
                "external.url must be an https:// URL: plain http would expose secret values and the token"
            )
        if "@" in parts.netloc:
            raise invalid("external.url must not carry credentials: put a token in credentialsSecretRef")
        if not parts.hostname:
            raise invalid("external.url has no host")
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")

        timeout = spec.get("timeoutSeconds", DEFAULT_TIMEOUT_SECONDS)
        if isinstance(timeout, bool) or not isinstance(timeout, int) or not 1 <= timeout <= MAX_TIMEOUT_SECONDS:
            raise invalid(f"external.timeoutSeconds must be an integer from 1 to {MAX_TIMEOUT_SECONDS}")

        ca_bundle = spec.get("caBundle") or None
        if ca_bundle is not None and not isinstance(ca_bundle, str):
            raise invalid("external.caBundle must be a PEM string")

        credentials_secret = None
        ref = spec.get("credentialsSecretRef")
        if ref is not None:
            credentials_secret = ref.get("name") if isinstance(ref, Mapping) else None
            if not isinstance(credentials_secret, str) or not credentials_secret:
                raise invalid("external.credentialsSecretRef.name is required")
        return cls(parts.hostname, port, target, timeout, ca_bundle, credentials_secret)


@register
class ExternalStrategy(RotationStrategy):
    """Each step is a call to the user's rotation endpoint."""

    name = "external"

    def initial(self, ctx: RotationContext) -> SecretValue:
        return self._create(ctx, "initial")

    def create(self, ctx: RotationContext) -> SecretValue:
        return self._create(ctx, "create")

    def set(self, ctx: RotationContext, pending: SecretValue) -> None:
        self._call(ctx, RotationStep.SET, "set", pending)

    def test(self, ctx: RotationContext, pending: SecretValue) -> None:
        self._call(ctx, RotationStep.TEST, "test", pending)

    def finish(self, ctx: RotationContext, pending: SecretValue) -> None:
        self._call(ctx, RotationStep.FINISH, "finish", pending)

    def _create(self, ctx: RotationContext, step: str) -> SecretValue:
        return _parse_value(self._call(ctx, RotationStep.CREATE, step, None), step)

    def _call(
        self, ctx: RotationContext, wire_step: RotationStep, step: str, pending: SecretValue | None
    ) -> bytes:
        """POST one step; return the response body for ``create``, ``b""`` for the other steps."""
        endpoint = ExternalEndpoint.from_spec(ctx.config, step)
        document: dict[str, Any] = {
            "step": wire_step.value,
            "secretId": ctx.secret_id,
            "versionId": ctx.version_id,
            "current": _encode_value(ctx.current, step, "current"),
        }
        if pending is not None:
            document["pending"] = _encode_value(pending, step, "pending")
        headers = {
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": _USER_AGENT,
            "Idempotency-Key": f"{ctx.secret_id}/{ctx.version_id}/{wire_step.value}",
            "Connection": "close",
        }
        token = _bearer_token(ctx, endpoint, step)
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        body = json.dumps(document, separators=(",", ":")).encode("ascii")
        return _post(endpoint, body, headers, step, read_body=wire_step is RotationStep.CREATE)


def _encode_value(value: SecretValue | None, step: str, which: str) -> dict[str, str] | None:
    if value is None:
        return None
    if value.kind is not ValueKind.MAP:
        raise RotationStepFailed(
            step, "UnsupportedValue", f"the {which} value is a binary blob; an External secret holds named keys"
        )
    return {key: base64.b64encode(raw).decode("ascii") for key, raw in value.entries}


def _bearer_token(ctx: RotationContext, endpoint: ExternalEndpoint, step: str) -> str | None:
    name = endpoint.credentials_secret
    if name is None:
        return None
    raw = ctx.read_secret(name).get(TOKEN_KEY)
    if raw is None:
        raise RotationStepFailed(step, "CredentialsMissing", f"Secret {name} has no key {TOKEN_KEY}")
    # Surrounding whitespace is a trailing newline from `echo ... | kubectl create secret` far more often than
    # part of the token. Anything else must be visible ASCII: http.client would otherwise raise an error
    # that quotes the header, i.e. the token.
    token = raw.strip()
    if not token or any(not 0x21 <= byte <= 0x7E for byte in token):
        raise RotationStepFailed(
            step, "CredentialsInvalid", f"key {TOKEN_KEY} of Secret {name} must be one line of visible ASCII"
        )
    return token.decode("ascii")


def _tls_context(endpoint: ExternalEndpoint, step: str) -> ssl.SSLContext:
    # Built by hand rather than with ssl.create_default_context(), which would honour SSLKEYLOGFILE and
    # write the session keys (and so the secrets on the wire) to a file.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verify_mode CERT_REQUIRED, check_hostname on
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if endpoint.ca_bundle is None:
        context.load_default_certs(ssl.Purpose.SERVER_AUTH)
    else:
        try:
            context.load_verify_locations(cadata=endpoint.ca_bundle)
        except (ssl.SSLError, ValueError):
            raise RotationStepFailed(
                step, "InvalidSpec", "external.caBundle does not hold valid PEM certificates"
            ) from None
    return context


class _Deadline:
    """Shuts the connection down when ``timeoutSeconds`` have passed since the call began.

    A socket timeout bounds each read, not the call: an endpoint that trickles a byte at a time could hold a
    step for ever. The shutdown makes whatever read is blocked fail at once; ``expired`` then tells the
    caller that the failure was the deadline.
    """

    def __init__(self, seconds: float) -> None:
        self.expired = False
        self._lock = threading.Lock()
        self._socket: ssl.SSLSocket | None = None
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def watch(self, sock: ssl.SSLSocket) -> None:
        with self._lock:
            if self.expired:
                raise TimeoutError
            self._socket = sock

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            sock = self._socket
        if sock is not None:
            with contextlib.suppress(OSError):
                # socket.socket's shutdown, not SSLSocket's: that one tears down the TLS object under the
                # reading thread's feet; this one only ends the TCP stream.
                socket.socket.shutdown(sock, socket.SHUT_RDWR)

    def __enter__(self) -> _Deadline:
        self._timer.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._timer.cancel()


def _post(
    endpoint: ExternalEndpoint, body: bytes, headers: Mapping[str, str], step: str, *, read_body: bool
) -> bytes:
    """One request on a fresh connection; the body of a 2xx response if ``read_body``, else ``b""``."""
    context = _tls_context(endpoint, step)
    connection = http.client.HTTPSConnection(
        endpoint.host, endpoint.port, timeout=endpoint.timeout, context=context
    )
    response: http.client.HTTPResponse | None = None
    with _Deadline(endpoint.timeout) as deadline:
        try:
            # The connection is opened here rather than by http.client so that the deadline can cut the TLS
            # handshake too (the TCP connect is bounded by the socket timeout).
            tls = connection.sock = _open_tls(endpoint, context)
            deadline.watch(tls)
            tls.do_handshake()
            connection.request("POST", endpoint.target, body=body, headers=dict(headers))
            # http.client never follows redirects: a 3xx is one more status that is not 2xx.
            response = connection.getresponse()
            if not 200 <= response.status < 300:
                raise RotationStepFailed(
                    step,
                    "WebhookRejected",
                    f"{endpoint.origin} answered with HTTP status {response.status}"
                    + (" (redirects are not followed)" if 300 <= response.status < 400 else ""),
                )
            payload = _read_capped(response, endpoint, step) if read_body else b""
            if deadline.expired:
                raise TimeoutError
            return payload
        except (OSError, http.client.HTTPException) as exc:
            # from None: an HTTPException's text may quote what the endpoint sent.
            raise _transport_failure(exc, endpoint, step, timed_out=deadline.expired) from None
        finally:
            if response is not None:
                response.close()
            connection.close()


def _open_tls(endpoint: ExternalEndpoint, context: ssl.SSLContext) -> ssl.SSLSocket:
    """A TCP connection wrapped for TLS, before the handshake."""
    raw = socket.create_connection((endpoint.host, endpoint.port), timeout=endpoint.timeout)
    try:
        return context.wrap_socket(raw, server_hostname=endpoint.host, do_handshake_on_connect=False)
    except BaseException:
        raw.close()
        raise


def _read_capped(response: http.client.HTTPResponse, endpoint: ExternalEndpoint, step: str) -> bytes:
    too_large = RotationStepFailed(
        step, "WebhookBadResponse", f"the response of {endpoint.origin} is larger than {MAX_RESPONSE_BYTES} bytes"
    )
    if response.length is not None and response.length > MAX_RESPONSE_BYTES:
        raise too_large
    received = bytearray()
    # read1: one socket read at a time, so the size cap and the deadline are checked between reads.
    while chunk := response.read1(64 * 1024):
        received += chunk
        if len(received) > MAX_RESPONSE_BYTES:
            raise too_large
    return bytes(received)


def _transport_failure(
    exc: OSError | http.client.HTTPException, endpoint: ExternalEndpoint, step: str, *, timed_out: bool
) -> RotationStepFailed:
    """Map a failure of the call to a reason. Only library-made text is used, never the endpoint's."""
    origin = endpoint.origin
    if timed_out or isinstance(exc, TimeoutError):
        return RotationStepFailed(
            step, "WebhookTimeout", f"{origin} did not answer within timeoutSeconds ({endpoint.timeout}s)"
        )
    if isinstance(exc, ssl.SSLCertVerificationError):
        detail = exc.verify_message or "certificate verification failed"
        return RotationStepFailed(
            step, "WebhookTLSError", f"the TLS certificate of {origin} is not trusted: {detail}"
        )
    if isinstance(exc, ssl.SSLError):
        return RotationStepFailed(
            step, "WebhookTLSError", f"TLS with {origin} failed: {exc.reason or type(exc).__name__}"
        )
    if isinstance(exc, http.client.RemoteDisconnected):
        return RotationStepFailed(step, "WebhookUnreachable", f"{origin} closed the connection without answering")
    if isinstance(exc, http.client.HTTPException):
        # Their text may quote the status line or a header the endpoint sent; the class name is enough.
        return RotationStepFailed(
            step, "WebhookBadResponse", f"{origin} sent a malformed HTTP response ({type(exc).__name__})"
        )
    return RotationStepFailed(
        step, "WebhookUnreachable", f"cannot reach {origin}: {exc.strerror or type(exc).__name__}"
    )


def _parse_value(body: bytes, step: str) -> SecretValue:
    """The ``create`` answer, ``{"value": {key: base64}}``. Errors never quote the body (it is the secret)."""

    def bad(message: str) -> RotationStepFailed:
        return RotationStepFailed(step, "WebhookBadResponse", message)

    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        # from None: the decode error keeps the whole document on itself.
        raise bad("the response is not valid JSON") from None
    value = document.get("value") if isinstance(document, dict) else None
    if not isinstance(value, dict) or not value:
        raise bad('the response must be a JSON object whose "value" is a non-empty object of base64 strings')
    data: dict[str, bytes] = {}
    # Keys are never named in these messages, only counted: an endpoint that mixed up keys and values (or one
    # that wants a value echoed into status) would put the secret there.
    for number, (key, text) in enumerate(value.items(), start=1):
        try:
            validate_data_key(key)
        except InvalidRequest:
            raise bad(f'key #{number} of "value" is not a valid Secret data key') from None
        if not isinstance(text, str):
            raise bad(f'entry #{number} of "value" must be a base64 string')
        try:
            data[key] = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise bad(f'entry #{number} of "value" is not valid base64') from None
    return SecretValue.from_map(data)
