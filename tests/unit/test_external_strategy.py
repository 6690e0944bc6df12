"""The External strategy against a real HTTPS endpoint on 127.0.0.1, with certificates made for the test.

Nothing in the client is mocked: TLS verification, timeouts, status codes and bodies are the real thing.
"""

from __future__ import annotations

import base64
import json
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from cryptography import x509

from managed_secrets.domain import SecretValue
from managed_secrets.rotation.strategies.external import MAX_RESPONSE_BYTES, ExternalStrategy
from managed_secrets.rotation.strategy import RotationContext, RotationStepFailed, get_strategy
from support.https_endpoint import (
    LOCALHOST,
    NEW_VALUE,
    PKI,
    Call,
    Endpoint,
    Reply,
    make_authority,
    make_server_cert,
    serve,
    value_reply,
)

CANARY_VALUE = b"CANARY-VALUE-7f3a9"
CANARY_TOKEN = "CANARY-TOKEN-5c1e2"
CREDENTIALS = "rotator-credentials"

# -- certificates and the endpoint live in support/https_endpoint.py


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    directory = tmp_path_factory.mktemp("pki")
    trusted = make_authority("test rotation CA")
    foreign = make_authority("some other CA")
    return PKI(
        trusted=trusted,
        good_cert=make_server_cert(trusted, directory, names=LOCALHOST),
        foreign_cert=make_server_cert(foreign, directory, names=LOCALHOST),
        wrong_name_cert=make_server_cert(trusted, directory, names=[x509.DNSName("rotator.example.org")]),
    )


@pytest.fixture
def endpoint(pki: PKI) -> Iterator[Endpoint]:
    yield from serve(pki.good_cert)


@pytest.fixture
def foreign_endpoint(pki: PKI) -> Iterator[Endpoint]:
    yield from serve(pki.foreign_cert)


@pytest.fixture
def wrong_name_endpoint(pki: PKI) -> Iterator[Endpoint]:
    yield from serve(pki.wrong_name_cert)


# -- builders ---------------------------------------------------------------------------------------

CURRENT = SecretValue.from_map({"username": b"app", "password": CANARY_VALUE})


def config(server: Endpoint, pki: PKI, **overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "url": server.url,
        "timeoutSeconds": 5,
        "caBundle": pki.trusted.pem,
        "credentialsSecretRef": {"name": CREDENTIALS},
    }
    spec.update(overrides)
    return {key: value for key, value in spec.items() if value is not None}


def context(
    spec: dict[str, Any],
    *,
    version_id: str = "v3",
    current: SecretValue | None = CURRENT,
    secrets: dict[str, dict[str, bytes]] | None = None,
) -> RotationContext:
    store = {CREDENTIALS: {"token": CANARY_TOKEN.encode()}} if secrets is None else secrets
    return RotationContext(
        secret_id="payments/api-key",
        version_id=version_id,
        config=spec,
        current=current,
        read_secret=lambda name: store.get(name, {}),
    )


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def encoded(value: SecretValue) -> dict[str, str]:
    return {key: b64(raw) for key, raw in value.as_dict().items()}


def failure(call: Callable[[], object]) -> RotationStepFailed:
    with pytest.raises(RotationStepFailed) as caught:
        call()
    return caught.value


def failure_texts(exc: BaseException) -> str:
    """str and repr of an exception and of everything chained to it, as a traceback would show them."""
    texts = []
    current: BaseException | None = exc
    while current is not None:
        texts += [str(current), repr(current)]
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
    return "\n".join(texts)


def assert_no_secrets(exc: BaseException) -> None:
    text = failure_texts(exc)
    for secret in (CANARY_VALUE.decode(), b64(CANARY_VALUE), CANARY_TOKEN, "n3w-pa55", b64(b"n3w-pa55")):
        assert secret not in text


# -- the protocol -----------------------------------------------------------------------------------


def test_registered_as_external() -> None:
    assert isinstance(get_strategy("external"), ExternalStrategy)


def test_the_four_steps_in_order_with_the_right_documents(endpoint: Endpoint, pki: PKI) -> None:
    strategy = ExternalStrategy()
    ctx = context(config(endpoint, pki, url=endpoint.url + "?tenant=blue"))

    pending = strategy.create(ctx)
    assert pending == SecretValue.from_map(NEW_VALUE)
    strategy.set(ctx, pending)
    strategy.test(ctx, pending)
    strategy.finish(ctx, pending)

    assert [call.document["step"] for call in endpoint.calls] == ["create", "set", "test", "finish"]
    for call in endpoint.calls:
        step = call.document["step"]
        assert call.path == "/rotate?tenant=blue"
        assert call.headers["Authorization"] == f"Bearer {CANARY_TOKEN}"
        assert call.headers["Content-Type"] == "application/json"
        assert call.headers["Idempotency-Key"] == f"payments/api-key/v3/{step}"
        expected = {"step": step, "secretId": "payments/api-key", "versionId": "v3", "current": encoded(CURRENT)}
        if step != "create":
            expected["pending"] = encoded(pending)
        assert call.document == expected


def test_initial_is_a_create_without_current_value(endpoint: Endpoint, pki: PKI) -> None:
    value = ExternalStrategy().initial(context(config(endpoint, pki), version_id="v1", current=None))
    assert value == SecretValue.from_map(NEW_VALUE)
    [call] = endpoint.calls
    assert call.document == {"step": "create", "secretId": "payments/api-key", "versionId": "v1", "current": None}


def test_repeated_steps_carry_the_same_version_id(endpoint: Endpoint, pki: PKI) -> None:
    strategy = ExternalStrategy()
    ctx = context(config(endpoint, pki))
    first = strategy.create(ctx)
    second = strategy.create(ctx)  # e.g. the operator restarted after create
    strategy.set(ctx, first)
    strategy.set(ctx, first)
    strategy.create(context(config(endpoint, pki), version_id="v4"))

    ids = [(c.document["step"], c.document["versionId"], c.headers["Idempotency-Key"]) for c in endpoint.calls]
    assert ids[0] == ids[1] == ("create", "v3", "payments/api-key/v3/create")
    assert ids[2] == ids[3] == ("set", "v3", "payments/api-key/v3/set")
    assert ids[4] == ("create", "v4", "payments/api-key/v4/create")
    assert endpoint.calls[0].document == endpoint.calls[1].document
    assert first == second


def test_binary_keys_are_base64_both_ways(endpoint: Endpoint, pki: PKI) -> None:
    raw = bytes(range(256))
    endpoint.responder = lambda call: value_reply({"blob": raw, "empty": b""})
    value = ExternalStrategy().create(context(config(endpoint, pki), current=SecretValue.from_map({"k": raw})))
    assert value.as_dict() == {"blob": raw, "empty": b""}
    assert endpoint.calls[0].document["current"] == {"k": b64(raw)}


def test_without_credentials_no_authorization_header(endpoint: Endpoint, pki: PKI) -> None:
    ExternalStrategy().create(context(config(endpoint, pki, credentialsSecretRef=None)))
    assert "Authorization" not in endpoint.calls[0].headers


def test_a_trailing_newline_on_the_token_is_dropped(endpoint: Endpoint, pki: PKI) -> None:
    secrets = {CREDENTIALS: {"token": b"abc.DEF-123_~+/=\n"}}
    ExternalStrategy().create(context(config(endpoint, pki), secrets=secrets))
    assert endpoint.calls[0].headers["Authorization"] == "Bearer abc.DEF-123_~+/="


def test_other_steps_ignore_the_body_of_a_2xx(endpoint: Endpoint, pki: PKI) -> None:
    endpoint.responder = lambda call: Reply(status=204 if call.document["step"] == "test" else 200, body=b"<html>")
    strategy = ExternalStrategy()
    ctx = context(config(endpoint, pki))
    pending = SecretValue.from_map(NEW_VALUE)
    strategy.set(ctx, pending)
    strategy.test(ctx, pending)
    strategy.finish(ctx, pending)
    assert len(endpoint.calls) == 3


# -- credentials ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("secrets", "reason"),
    [
        ({}, "CredentialsMissing"),
        ({CREDENTIALS: {"other": b"x"}}, "CredentialsMissing"),
        ({CREDENTIALS: {"token": b""}}, "CredentialsInvalid"),
        ({CREDENTIALS: {"token": CANARY_TOKEN.encode() + b"\r\nX-Injected: 1"}}, "CredentialsInvalid"),
        ({CREDENTIALS: {"token": CANARY_TOKEN.encode() + b" two"}}, "CredentialsInvalid"),
        ({CREDENTIALS: {"token": "tökén".encode()}}, "CredentialsInvalid"),
    ],
)
def test_unusable_credentials_stop_before_any_call(
    secrets: dict[str, dict[str, bytes]], reason: str, endpoint: Endpoint, pki: PKI
) -> None:
    exc = failure(lambda: ExternalStrategy().create(context(config(endpoint, pki), secrets=secrets)))
    assert exc.reason == reason
    assert CREDENTIALS in str(exc)
    assert_no_secrets(exc)
    assert endpoint.calls == []


# -- TLS ----------------------------------------------------------------------------------------------


def test_a_certificate_from_another_ca_is_refused(foreign_endpoint: Endpoint, pki: PKI) -> None:
    exc = failure(lambda: ExternalStrategy().create(context(config(foreign_endpoint, pki))))
    assert (exc.step, exc.reason) == ("create", "WebhookTLSError")
    assert "certificate" in str(exc)
    assert foreign_endpoint.calls == []
    assert_no_secrets(exc)


def test_a_certificate_for_another_host_is_refused(wrong_name_endpoint: Endpoint, pki: PKI) -> None:
    exc = failure(lambda: ExternalStrategy().set(context(config(wrong_name_endpoint, pki)), CURRENT))
    assert (exc.step, exc.reason) == ("set", "WebhookTLSError")
    assert wrong_name_endpoint.calls == []


def test_without_ca_bundle_the_system_store_does_not_trust_a_private_ca(endpoint: Endpoint, pki: PKI) -> None:
    exc = failure(lambda: ExternalStrategy().create(context(config(endpoint, pki, caBundle=None))))
    assert exc.reason == "WebhookTLSError"
    assert endpoint.calls == []


def test_a_ca_bundle_without_certificates_is_refused(endpoint: Endpoint, pki: PKI) -> None:
    bundle = "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n"
    exc = failure(lambda: ExternalStrategy().create(context(config(endpoint, pki, caBundle=bundle))))
    assert exc.reason == "InvalidSpec"
    assert "caBundle" in str(exc)


# -- URLs -----------------------------------------------------------------------------------------------


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A plain TCP port that records whether anyone connected."""
    sock = socket.create_server(("127.0.0.1", 0))
    sock.setblocking(False)
    yield sock
    sock.close()


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:{port}/rotate",
        "HTTP://127.0.0.1:{port}/rotate",
        "ftp://127.0.0.1:{port}/rotate",
        "127.0.0.1:{port}/rotate",
        "https://user:" + CANARY_TOKEN + "@127.0.0.1:{port}/rotate",
        "https://127.0.0.1:{port}/rot ate",
        "https:///rotate",
        "https://127.0.0.1:99999/rotate",
        "",
    ],
)
def test_urls_other_than_https_are_refused_before_connecting(url: str, listener: socket.socket, pki: PKI) -> None:
    spec = {"url": url.format(port=listener.getsockname()[1]), "caBundle": pki.trusted.pem}
    for call in (
        lambda: ExternalStrategy().create(context(spec)),
        lambda: ExternalStrategy().set(context(spec), CURRENT),
    ):
        exc = failure(call)
        assert exc.reason == "InvalidSpec"
        assert "external.url" in str(exc)
        assert_no_secrets(exc)
    with pytest.raises(BlockingIOError):
        listener.accept()  # nobody connected


def test_plain_http_gets_a_clear_message(listener: socket.socket) -> None:
    spec = {"url": f"http://127.0.0.1:{listener.getsockname()[1]}/"}
    exc = failure(lambda: ExternalStrategy().create(context(spec)))
    assert "https://" in str(exc)
    assert "plain http" in str(exc)


@pytest.mark.parametrize("timeout", [0, 301, "30", True, 1.5])
def test_invalid_timeouts_are_refused(timeout: object, endpoint: Endpoint, pki: PKI) -> None:
    exc = failure(lambda: ExternalStrategy().create(context(config(endpoint, pki, timeoutSeconds=timeout))))
    assert exc.reason == "InvalidSpec"
    assert endpoint.calls == []


def test_an_unreachable_endpoint(pki: PKI) -> None:
    with socket.create_server(("127.0.0.1", 0)) as sock:
        port = sock.getsockname()[1]  # closed again on leaving: nothing listens there
    spec = {"url": f"https://127.0.0.1:{port}/", "caBundle": pki.trusted.pem}
    exc = failure(lambda: ExternalStrategy().create(context(spec)))
    assert exc.reason == "WebhookUnreachable"
    assert f"127.0.0.1:{port}" in str(exc)


# -- timeouts -------------------------------------------------------------------------------------------


def test_an_endpoint_slower_than_the_timeout(endpoint: Endpoint, pki: PKI) -> None:
    endpoint.responder = lambda call: Reply(delay=3)
    started = time.monotonic()
    exc = failure(lambda: ExternalStrategy().set(context(config(endpoint, pki, timeoutSeconds=1)), CURRENT))
    elapsed = time.monotonic() - started
    assert (exc.step, exc.reason) == ("set", "WebhookTimeout")
    assert "timeoutSeconds (1s)" in str(exc)
    assert 0.9 < elapsed < 2


def test_the_timeout_covers_the_whole_call_not_each_read(endpoint: Endpoint, pki: PKI) -> None:
    """Each byte arrives well within the timeout, the whole answer does not."""
    endpoint.responder = lambda call: Reply(body=value_reply(NEW_VALUE).body, drip=0.1)
    started = time.monotonic()
    exc = failure(lambda: ExternalStrategy().create(context(config(endpoint, pki, timeoutSeconds=1))))
    elapsed = time.monotonic() - started
    assert exc.reason == "WebhookTimeout"
    assert 0.9 < elapsed < 2


# -- rejections and bad answers -----------------------------------------------------------------------------


def echo(status: int, **extra: Any) -> Callable[[Call], Reply]:
    """An endpoint that answers with everything it was sent: the worst case for leaking into messages."""
    return lambda call: Reply(
        status=status, body=json.dumps({"echo": call.document, **call.headers}).encode(), **extra
    )


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 500, 503])
def test_a_non_2xx_status_is_a_rejection_with_the_code(status: int, endpoint: Endpoint, pki: PKI) -> None:
    endpoint.responder = echo(status)
    exc = failure(lambda: ExternalStrategy().test(context(config(endpoint, pki)), CURRENT))
    assert (exc.step, exc.reason) == ("test", "WebhookRejected")
    assert str(status) in str(exc)
    assert "127.0.0.1" in str(exc)
    assert_no_secrets(exc)


def test_redirects_are_not_followed(endpoint: Endpoint, pki: PKI) -> None:
    endpoint.responder = echo(307, headers={"Location": endpoint.url + "/elsewhere"})
    exc = failure(lambda: ExternalStrategy().create(context(config(endpoint, pki))))
    assert exc.reason == "WebhookRejected"
    assert "307" in str(exc)
    assert "redirect" in str(exc)
    assert [call.path for call in endpoint.calls] == ["/rotate"]


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json " + CANARY_VALUE,
        b"\xff\xfe" + CANARY_VALUE,
        b"[]",
        b'"value"',
        b'{"nothing": 1}',
        b'{"value": null}',
        b'{"value": {}}',
        b'{"value": ["a"]}',
        b'{"value": {"password": 5}}',
        b'{"value": {"password": "' + CANARY_VALUE + b'!"}}',
        b'{"value": {"password": "YWJj"',
        b'{"value": {"' + CANARY_VALUE + b' as key": "YWJj"}}',
        b'{"value": {"../x": "YWJj"}}',
    ],
)
def test_a_bad_create_answer(body: bytes, endpoint: Endpoint, pki: PKI) -> None:
    endpoint.responder = lambda call: Reply(body=body)
    exc = failure(lambda: ExternalStrategy().create(context(config(endpoint, pki))))
    assert (exc.step, exc.reason) == ("create", "WebhookBadResponse")
    assert_no_secrets(exc)


@pytest.mark.parametrize("content_length", [True, False])
def test_a_create_answer_over_the_size_cap(content_length: bool, endpoint: Endpoint, pki: PKI) -> None:
    huge = value_reply({"blob": b"x" * MAX_RESPONSE_BYTES}).body
    endpoint.responder = lambda call: Reply(body=huge, content_length=content_length)
    exc = failure(lambda: ExternalStrategy().create(context(config(endpoint, pki))))
    assert exc.reason == "WebhookBadResponse"
    assert str(MAX_RESPONSE_BYTES) in str(exc)


def test_an_answer_just_under_the_cap_is_fine(endpoint: Endpoint, pki: PKI) -> None:
    raw = b"y" * (MAX_RESPONSE_BYTES // 2)
    endpoint.responder = lambda call: Reply(body=value_reply({"blob": raw}).body, content_length=False)
    assert ExternalStrategy().create(context(config(endpoint, pki))).as_dict() == {"blob": raw}


def test_a_binary_current_value_cannot_be_sent(endpoint: Endpoint, pki: PKI) -> None:
    ctx = context(config(endpoint, pki), current=SecretValue.from_blob(CANARY_VALUE))
    exc = failure(lambda: ExternalStrategy().create(ctx))
    assert exc.reason == "UnsupportedValue"
    assert_no_secrets(exc)
    assert endpoint.calls == []


# -- nothing secret in any failure ----------------------------------------------------------------------------


def test_no_failure_quotes_a_value_or_the_token(endpoint: Endpoint, pki: PKI) -> None:
    """The failure paths against an endpoint that echoes the secrets it was sent."""
    strategy = ExternalStrategy()
    pending = SecretValue.from_map({"password": CANARY_VALUE + b"-pending"})
    rejecting: list[Callable[[Call], Reply]] = [
        echo(500),
        echo(302, headers={"Location": f"https://127.0.0.1/{CANARY_TOKEN}"}),
    ]
    bad_values: list[Callable[[Call], Reply]] = [
        echo(200),  # valid JSON, no "value"
        lambda call: Reply(body=json.dumps(call.document).encode()[:-3]),
        lambda call: Reply(body=json.dumps({"value": {call.headers["Authorization"]: "YQ=="}}).encode()),
        lambda call: Reply(body=json.dumps({"value": {"k": call.headers["Authorization"]}}).encode()),
    ]
    failures = []
    for responder in rejecting + bad_values:
        endpoint.responder = responder
        failures.append(failure(lambda: strategy.create(context(config(endpoint, pki)))))
    for responder in rejecting:
        endpoint.responder = responder
        for step in (strategy.set, strategy.test, strategy.finish):
            failures.append(failure(lambda: step(context(config(endpoint, pki)), pending)))  # noqa: B023
    assert len(failures) == 12
    for exc in failures:
        assert_no_secrets(exc)
        assert b64(pending.as_dict()["password"]) not in failure_texts(exc)
