"""The SSHKey strategy: key types and sizes, OpenSSH formats, comments, the pair check, what is published."""

from __future__ import annotations

import base64
import random
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from managed_secrets.domain import SecretValue
from managed_secrets.rotation.strategies.sshkey import PRIVATE_KEY, PUBLIC_KEY, SSHKeyStrategy
from managed_secrets.rotation.strategy import RotationContext, RotationStepFailed, get_strategy

PEM_HEADER = b"-----BEGIN OPENSSH PRIVATE KEY-----\n"
PEM_FOOTER = b"-----END OPENSSH PRIVATE KEY-----\n"


def context(**config: Any) -> RotationContext:
    return RotationContext(secret_id="apps/deploy-key", version_id="v2", config=config)


def new_pair(**config: Any) -> SecretValue:
    return SSHKeyStrategy().create(context(**config))


def private_key(value: SecretValue) -> Any:
    return serialization.load_ssh_private_key(value.as_dict()[PRIVATE_KEY], password=None)


def public_key(value: SecretValue) -> Any:
    return serialization.load_ssh_public_key(value.as_dict()[PUBLIC_KEY])


def public_line(value: SecretValue) -> str:
    return value.as_dict()[PUBLIC_KEY].decode()


def key_body(value: SecretValue) -> bytes:
    """The base64 between the PEM armour lines: the private key material itself."""
    pem = value.as_dict()[PRIVATE_KEY]
    return b"".join(pem.removeprefix(PEM_HEADER).removesuffix(PEM_FOOTER).split())


def swapped(one: SecretValue, other: SecretValue) -> SecretValue:
    """``one``'s private key with ``other``'s public key."""
    return SecretValue.from_map({PRIVATE_KEY: one.as_dict()[PRIVATE_KEY], PUBLIC_KEY: other.as_dict()[PUBLIC_KEY]})


def failure_texts(exc: BaseException) -> str:
    """str and repr of an exception and of everything chained to it."""
    texts = []
    current: BaseException | None = exc
    while current is not None:
        texts += [str(current), repr(current)]
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
    return "\n".join(texts)


@pytest.fixture(scope="module")
def ed25519_pair() -> SecretValue:
    return new_pair()


@pytest.fixture(scope="module")
def rsa_pair() -> SecretValue:
    return new_pair(algorithm="rsa", rsaBits=2048)


# -- registration -----------------------------------------------------------------------------------


def test_registered_as_sshKey() -> None:
    assert isinstance(get_strategy("sshKey"), SSHKeyStrategy)


# -- key types, sizes and formats -------------------------------------------------------------------


def test_default_is_an_ed25519_pair_in_openssh_formats(ed25519_pair: SecretValue) -> None:
    data = ed25519_pair.as_dict()
    assert set(data) == {PRIVATE_KEY, PUBLIC_KEY}
    assert data[PRIVATE_KEY].startswith(PEM_HEADER)
    assert data[PRIVATE_KEY].endswith(PEM_FOOTER)
    assert isinstance(private_key(ed25519_pair), ed25519.Ed25519PrivateKey)
    assert isinstance(public_key(ed25519_pair), ed25519.Ed25519PublicKey)
    line = public_line(ed25519_pair)
    assert line.endswith("\n")
    assert line.count("\n") == 1
    key_type, body = line.split()
    assert key_type == "ssh-ed25519"
    assert body.startswith("AAAA")


def test_explicit_ed25519_is_the_default_algorithm() -> None:
    assert isinstance(private_key(new_pair(algorithm="ed25519")), ed25519.Ed25519PrivateKey)


@pytest.mark.parametrize(("rsa_bits", "expected"), [(None, 3072), (2048, 2048), (3072, 3072), (4096, 4096)])
def test_rsa_key_sizes(rsa_bits: int | None, expected: int) -> None:
    config: dict[str, Any] = {"algorithm": "rsa"}
    if rsa_bits is not None:
        config["rsaBits"] = rsa_bits
    value = new_pair(**config)
    key = private_key(value)
    assert isinstance(key, rsa.RSAPrivateKey)
    assert key.key_size == expected
    assert key.private_numbers().public_numbers.e == 65537
    assert value.as_dict()[PRIVATE_KEY].startswith(PEM_HEADER)
    public = public_key(value)
    assert isinstance(public, rsa.RSAPublicKey)
    assert public.key_size == expected
    assert public_line(value).startswith("ssh-rsa AAAA")


def test_public_key_line_belongs_to_the_private_key(ed25519_pair: SecretValue, rsa_pair: SecretValue) -> None:
    for value in (ed25519_pair, rsa_pair):
        derived = (
            private_key(value)
            .public_key()
            .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        )
        assert public_line(value) == derived.decode() + "\n"


def test_initial_and_create_both_make_pairs() -> None:
    strategy = SSHKeyStrategy()
    first = strategy.initial(context())
    second = strategy.create(context())
    assert first.keys() == second.keys() == (PRIVATE_KEY, PUBLIC_KEY)


@pytest.mark.parametrize("config", [{}, {"algorithm": "rsa", "rsaBits": 2048}])
def test_every_call_makes_a_new_pair(config: dict[str, Any]) -> None:
    values = [new_pair(**config) for _ in range(3)]
    assert len({value.as_dict()[PRIVATE_KEY] for value in values}) == 3
    assert len({public_line(value) for value in values}) == 3


def test_keys_do_not_come_from_the_injected_rng() -> None:
    """A seeded RNG in the context must not make the same key twice: keys come from the OS CSPRNG."""
    strategy = SSHKeyStrategy()
    first = strategy.create(RotationContext("apps/k", "v2", {}, rng=random.Random(7)))
    second = strategy.create(RotationContext("apps/k", "v2", {}, rng=random.Random(7)))
    assert first != second


# -- comments ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("comment", ["deploy@ci", "build bot (prod)", "josé@example.org"])
def test_comment_is_written_after_the_public_key(comment: str) -> None:
    value = new_pair(comment=comment)
    key_type, body, written = public_line(value).rstrip("\n").split(" ", 2)
    assert (key_type, written) == ("ssh-ed25519", comment)
    assert serialization.load_ssh_public_key(value.as_dict()[PUBLIC_KEY])  # still parses with the comment
    assert SSHKeyStrategy().public_data(value) == {"publicKey": f"{key_type} {body} {comment}"}


@pytest.mark.parametrize("config", [{}, {"comment": ""}])
def test_no_comment_means_two_fields(config: dict[str, Any]) -> None:
    assert len(public_line(new_pair(**config)).split()) == 2


def test_comment_on_rsa_keys() -> None:
    assert public_line(new_pair(algorithm="rsa", rsaBits=2048, comment="ops")).rstrip("\n").endswith(" ops")


# -- invalid configuration --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "config",
    [
        {"algorithm": "dsa"},
        {"algorithm": "ecdsa"},
        {"algorithm": "rsa", "rsaBits": 1024},
        {"algorithm": "rsa", "rsaBits": True},
        {"algorithm": "rsa", "rsaBits": "4096"},
        {"rsaBits": 4096},  # rsaBits with ed25519, which the CRD also forbids
        {"comment": "two\nlines"},
        {"comment": "x" * 257},
        {"comment": 42},
    ],
)
def test_invalid_spec_is_refused(config: dict[str, Any]) -> None:
    with pytest.raises(RotationStepFailed) as caught:
        new_pair(**config)
    assert caught.value.step == "create"
    assert caught.value.reason == "InvalidSpec"


def test_invalid_spec_in_initial_names_the_initial_step() -> None:
    with pytest.raises(RotationStepFailed) as caught:
        SSHKeyStrategy().initial(context(algorithm="dsa"))
    assert caught.value.step == "initial"


# -- the test step ----------------------------------------------------------------------------------


def test_test_step_accepts_a_matching_pair(ed25519_pair: SecretValue, rsa_pair: SecretValue) -> None:
    strategy = SSHKeyStrategy()
    for value in (ed25519_pair, rsa_pair, new_pair(comment="with comment")):
        strategy.test(context(), value)


def test_set_and_finish_do_nothing(ed25519_pair: SecretValue) -> None:
    strategy = SSHKeyStrategy()
    strategy.set(context(), ed25519_pair)
    strategy.finish(context(), ed25519_pair)


@pytest.mark.parametrize("kinds", [("ed25519", "ed25519"), ("rsa", "rsa"), ("ed25519", "rsa"), ("rsa", "ed25519")])
def test_test_step_refuses_a_mismatched_pair(
    kinds: tuple[str, str], ed25519_pair: SecretValue, rsa_pair: SecretValue
) -> None:
    pairs = {"ed25519": ed25519_pair, "rsa": rsa_pair}
    fresh = {"ed25519": new_pair(), "rsa": new_pair(algorithm="rsa", rsaBits=2048)}
    mixed = swapped(pairs[kinds[0]], fresh[kinds[1]])
    with pytest.raises(RotationStepFailed) as caught:
        SSHKeyStrategy().test(context(), mixed)
    assert (caught.value.step, caught.value.reason) == ("test", "KeyPairMismatch")
    assert key_body(mixed).decode() not in failure_texts(caught.value)


@pytest.mark.parametrize(
    "data",
    [
        {PUBLIC_KEY: b"ssh-ed25519 AAAA"},
        {PRIVATE_KEY: b"whatever"},
        {
            PRIVATE_KEY: b"-----BEGIN OPENSSH PRIVATE KEY-----\nQ0FOQVJZLXNlY3JldA==\n" + PEM_FOOTER,
            PUBLIC_KEY: b"x",
        },
    ],
)
def test_test_step_refuses_missing_or_unparsable_keys(data: dict[str, bytes]) -> None:
    with pytest.raises(RotationStepFailed) as caught:
        SSHKeyStrategy().test(context(), SecretValue.from_map(data))
    assert caught.value.reason == "InvalidKeyPair"


def test_test_step_refuses_a_binary_value() -> None:
    with pytest.raises(RotationStepFailed) as caught:
        SSHKeyStrategy().test(context(), SecretValue.from_blob(b"not a key pair"))
    assert caught.value.reason == "InvalidKeyPair"


def test_unparsable_keys_are_never_quoted(ed25519_pair: SecretValue) -> None:
    canary = b"CANARY-PRIVATE-MATERIAL"
    broken_private = PEM_HEADER + base64.b64encode(canary) + b"\n" + PEM_FOOTER
    broken_public = b"ssh-ed25519 " + base64.b64encode(canary) + b" CANARY-COMMENT"
    cases = [
        {PRIVATE_KEY: broken_private, PUBLIC_KEY: ed25519_pair.as_dict()[PUBLIC_KEY]},
        {PRIVATE_KEY: ed25519_pair.as_dict()[PRIVATE_KEY], PUBLIC_KEY: broken_public},
        {PRIVATE_KEY: ed25519_pair.as_dict()[PRIVATE_KEY], PUBLIC_KEY: canary + b" AAAA"},
    ]
    for data in cases:
        with pytest.raises(RotationStepFailed) as caught:
            SSHKeyStrategy().test(context(), SecretValue.from_map(data))
        text = failure_texts(caught.value)
        assert "CANARY" not in text
        assert base64.b64encode(canary).decode() not in text
        assert key_body(ed25519_pair).decode()[:40] not in text


# -- what is published ------------------------------------------------------------------------------


def test_public_data_is_the_public_key_line_only(ed25519_pair: SecretValue, rsa_pair: SecretValue) -> None:
    strategy = SSHKeyStrategy()
    for value in (ed25519_pair, rsa_pair):
        published = strategy.public_data(value)
        assert published == {"publicKey": public_line(value).rstrip("\n")}
        text = repr(published)
        assert "PRIVATE" not in text
        assert key_body(value).decode()[:40] not in text


@pytest.mark.parametrize(
    "value",
    [
        SecretValue.from_blob(b"ssh-ed25519 AAAA"),
        SecretValue.from_map({PRIVATE_KEY: b"only a private key"}),
        SecretValue.from_map({PUBLIC_KEY: b"not a key"}),
    ],
)
def test_public_data_publishes_nothing_without_a_public_key(value: SecretValue) -> None:
    assert SSHKeyStrategy().public_data(value) == {}


def test_public_data_never_publishes_a_private_key_put_in_the_public_slot(ed25519_pair: SecretValue) -> None:
    private = ed25519_pair.as_dict()[PRIVATE_KEY]
    strategy = SSHKeyStrategy()
    assert strategy.public_data(SecretValue.from_map({PUBLIC_KEY: private})) == {}
    # A valid first line followed by the private key: the parser would stop at the first line; we refuse.
    line = ed25519_pair.as_dict()[PUBLIC_KEY]
    assert strategy.public_data(SecretValue.from_map({PUBLIC_KEY: line + private})) == {}


def test_reprs_show_no_key_material(ed25519_pair: SecretValue) -> None:
    strategy = SSHKeyStrategy()
    for text in (repr(ed25519_pair), str(ed25519_pair), repr(strategy), repr(context(comment="c"))):
        assert "PRIVATE" not in text
        assert key_body(ed25519_pair).decode()[:40] not in text
        assert public_line(ed25519_pair).split()[1] not in text
