#!/usr/bin/env python3
"""SoftHSM2 tokens for the tests and the demo: a token directory, a PIN file and AES keys that never leave it.

    python hack/softhsm.py init        --dir D --token-label mso [--pin 1234] [--so-pin 5678] [--key-label kek-1]
    python hack/softhsm.py add-key     --dir D --token-label mso --key-label kek-2
    python hack/softhsm.py destroy-key --dir D --token-label mso --key-label kek-1
    python hack/softhsm.py list-keys   --dir D --token-label mso
    python hack/softhsm.py env         --dir D          # prints: export SOFTHSM2_CONF=D/softhsm2.conf

``init`` writes D/softhsm2.conf (tokens in D/tokens, file object store), initialises the token with
softhsm2-util, writes the user PIN to D/pin (mode 0600; one PIN per directory, the key commands read it)
and, with --key-label, generates the first key. Keys are AES-256, sensitive and not extractable, usable
for encrypt/decrypt only.

The key commands load the PKCS#11 library through python-pkcs11 (needed in the interpreter that runs this
script). python-pkcs11 loads one library per process and SoftHSM2 reads SOFTHSM2_CONF once, when it is
initialised, so the importable helpers (``init_token``, ``add_key``, ``destroy_key``, ``list_keys``) run
this script in a subprocess: a test process can make as many token directories as it likes. Importing this
module needs the standard library only.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

SCRIPT = Path(__file__).resolve()
LIBRARY_CANDIDATES = (
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
)
TOKEN_LABEL = "mso"  # the helpers' default token


class SoftHsmError(RuntimeError):
    """SoftHSM2 is missing, or a token command failed."""


def library() -> str:
    """The SoftHSM2 PKCS#11 module (``$SOFTHSM2_LIB`` if set), or a clear error naming the Debian package."""
    override = os.environ.get("SOFTHSM2_LIB")
    if override:
        if not Path(override).is_file():
            raise SoftHsmError(f"SOFTHSM2_LIB={override} does not exist")
        return override
    for candidate in LIBRARY_CANDIDATES:
        if Path(candidate).is_file():
            return candidate
    raise SoftHsmError(
        "SoftHSM2 is not installed: no libsofthsm2.so in "
        + ", ".join(LIBRARY_CANDIDATES)
        + " (install the Debian package softhsm2: apt-get install softhsm2)"
    )


def softhsm2_util() -> str:
    found = shutil.which("softhsm2-util")
    if not found:
        raise SoftHsmError("softhsm2-util is not on PATH (install the Debian package softhsm2)")
    return found


def conf_path(directory: Path) -> Path:
    return Path(directory).resolve() / "softhsm2.conf"


def pin_path(directory: Path) -> Path:
    return Path(directory).resolve() / "pin"


def environment(directory: Path) -> dict[str, str]:
    """What a process using the tokens in ``directory`` needs in its environment."""
    return {"SOFTHSM2_CONF": str(conf_path(directory))}


# --- in this process (the CLI) ------------------------------------------------------------------------------


def _write_conf(directory: Path) -> Path:
    directory = directory.resolve()
    tokens = directory / "tokens"
    tokens.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    conf = conf_path(directory)
    conf.write_text(f"directories.tokendir = {tokens}\nobjectstore.backend = file\nlog.level = ERROR\n")
    return conf


def _util(directory: Path, *args: str) -> str:
    env = {**os.environ, **environment(directory)}
    done = subprocess.run(
        [softhsm2_util(), *args], env=env, capture_output=True, text=True, check=False, timeout=60
    )
    if done.returncode != 0:
        # softhsm2-util echoes no PINs in its messages; the command line (with them) is not shown.
        said = done.stderr.strip() or done.stdout.strip()
        raise SoftHsmError(f"softhsm2-util {args[0]} failed ({done.returncode}): {said}")
    return done.stdout


def _token_labels(directory: Path) -> list[str]:
    out = _util(directory, "--show-slots")
    return [line.split(":", 1)[1].strip() for line in out.splitlines() if line.strip().startswith("Label:")]


def _session(directory: Path, token_label: str) -> Any:
    os.environ.update(environment(directory))  # before the library is loaded: SoftHSM2 reads it at C_Initialize
    try:
        import pkcs11
        from pkcs11 import exceptions
    except ImportError:
        raise SoftHsmError(f"python-pkcs11 is not installed for {sys.executable}") from None
    try:
        pin = pin_path(directory).read_text().strip()
    except FileNotFoundError:
        raise SoftHsmError(f"no PIN file {pin_path(directory)}: run 'init' first") from None
    try:
        token = pkcs11.lib(library()).get_token(token_label=token_label)
    except exceptions.NoSuchToken:
        raise SoftHsmError(f"no token labelled {token_label!r} in {directory}") from None
    return token.open(user_pin=pin, rw=True)


def _secret_keys(session: Any, key_label: str | None = None) -> list[Any]:
    from pkcs11 import Attribute, ObjectClass

    template: dict[Any, Any] = {Attribute.CLASS: ObjectClass.SECRET_KEY}
    if key_label is not None:
        template[Attribute.LABEL] = key_label
    return list(session.get_objects(template))


def cmd_init(directory: Path, token_label: str, pin: str, so_pin: str, key_label: str | None) -> None:
    conf = _write_conf(directory)
    if token_label in _token_labels(directory):
        raise SoftHsmError(f"{directory} already holds a token labelled {token_label!r}")
    _util(directory, "--init-token", "--free", "--label", token_label, "--so-pin", so_pin, "--pin", pin)
    pin_file = pin_path(directory)
    pin_file.touch(mode=0o600)
    pin_file.chmod(0o600)
    pin_file.write_text(pin + "\n")
    if key_label:
        cmd_add_key(directory, token_label, key_label)
    print(conf)


def cmd_add_key(directory: Path, token_label: str, key_label: str) -> None:
    from pkcs11 import Attribute, KeyType, MechanismFlag

    with _session(directory, token_label) as session:
        if _secret_keys(session, key_label):
            raise SoftHsmError(f"token {token_label!r} already holds a key labelled {key_label!r}")
        session.generate_key(
            KeyType.AES,
            256,
            label=key_label,
            id=key_label.encode(),
            store=True,
            capabilities=MechanismFlag.ENCRYPT | MechanismFlag.DECRYPT,
            template={Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False, Attribute.PRIVATE: True},
        )


def cmd_destroy_key(directory: Path, token_label: str, key_label: str) -> None:
    with _session(directory, token_label) as session:
        keys = _secret_keys(session, key_label)
        if not keys:
            raise SoftHsmError(f"token {token_label!r} holds no key labelled {key_label!r}")
        for key in keys:
            key.destroy()


def cmd_list_keys(directory: Path, token_label: str) -> None:
    from pkcs11 import Attribute

    with _session(directory, token_label) as session:
        for key in _secret_keys(session):
            print(key[Attribute.LABEL])


# --- helpers for other processes (tests, hack/cluster.py): each runs this script ----------------------------


def _run(*args: str, python: str | None = None) -> str:
    done = subprocess.run(
        [python or sys.executable, str(SCRIPT), *args], capture_output=True, text=True, check=False, timeout=120
    )
    if done.returncode != 0:
        raise SoftHsmError(f"hack/softhsm.py {args[0]} failed: {done.stderr.strip()[-2000:]}")
    return done.stdout


def init_token(
    directory: Path,
    *,
    token_label: str = TOKEN_LABEL,
    pin: str = "1234",
    so_pin: str = "5678",
    key_label: str | None = None,
    python: str | None = None,
) -> Path:
    """Initialises a token in ``directory`` (and its first key); returns the path of softhsm2.conf."""
    library()  # fail here, with the package to install, rather than in the subprocess
    args = ["init", "--dir", str(directory), "--token-label", token_label, "--pin", pin, "--so-pin", so_pin]
    if key_label:
        args += ["--key-label", key_label]
    _run(*args, python=python)
    return conf_path(directory)


def add_key(directory: Path, *, token_label: str = TOKEN_LABEL, key_label: str, python: str | None = None) -> None:
    _run("add-key", "--dir", str(directory), "--token-label", token_label, "--key-label", key_label, python=python)


def destroy_key(
    directory: Path, *, token_label: str = TOKEN_LABEL, key_label: str, python: str | None = None
) -> None:
    args = ["destroy-key", "--dir", str(directory), "--token-label", token_label, "--key-label", key_label]
    _run(*args, python=python)


def list_keys(directory: Path, *, token_label: str = TOKEN_LABEL, python: str | None = None) -> list[str]:
    return _run("list-keys", "--dir", str(directory), "--token-label", token_label, python=python).split()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    def command(name: str, *, token: bool = True, key: bool | None = None) -> argparse.ArgumentParser:
        sub = commands.add_parser(name)
        sub.add_argument("--dir", type=Path, required=True, help="the token directory")
        if token:
            sub.add_argument("--token-label", required=True)
        if key is not None:
            sub.add_argument("--key-label", required=key)
        return sub

    init = command("init", key=False)
    init.add_argument("--pin", default="1234", help="user PIN (%(default)s)")
    init.add_argument("--so-pin", default="5678", help="security officer PIN (%(default)s)")
    command("add-key", key=True)
    command("destroy-key", key=True)
    command("list-keys")
    command("env", token=False)
    args = parser.parse_args(argv)
    try:
        if args.command == "init":
            cmd_init(args.dir, args.token_label, args.pin, args.so_pin, args.key_label)
        elif args.command == "add-key":
            cmd_add_key(args.dir, args.token_label, args.key_label)
        elif args.command == "destroy-key":
            cmd_destroy_key(args.dir, args.token_label, args.key_label)
        elif args.command == "list-keys":
            cmd_list_keys(args.dir, args.token_label)
        elif args.command == "env":
            print(f"export SOFTHSM2_CONF={conf_path(args.dir)}")
    except SoftHsmError as error:
        print(f"softhsm: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
