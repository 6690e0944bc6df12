"""The crypto package's public surface, and its independence from Kopf and Kubernetes."""

from __future__ import annotations

import ast
from pathlib import Path

import managed_secrets.crypto
import managed_secrets.rotation.generators

PACKAGES = [managed_secrets.crypto, managed_secrets.rotation.generators]


def isort_style(name: str) -> tuple[int, str]:
    """The order ruff's RUF022 keeps: CONSTANTS, then Classes, then functions."""
    if name.isupper():
        return (0, name)
    if name[0].isupper():
        return (1, name)
    return (2, name)


def test_crypto_public_api() -> None:
    assert managed_secrets.crypto.__all__ == [
        "FINGERPRINT_PREFIX",
        "FORMAT_VERSION",
        "KEYRING_FORMAT",
        "KEYRING_FORMAT_VERSION",
        "MAGIC",
        "KeyProvider",
        "LocalKeyring",
        "WrappedKey",
        "fingerprint",
        "key_id_of",
        "keys_in_use",
        "open_sealed",
        "rewrap",
        "seal",
    ]


def test_all_is_sorted_and_every_name_exists() -> None:
    for package in PACKAGES:
        assert package.__all__ == sorted(package.__all__, key=isort_style), package.__name__
        for name in package.__all__:
            assert hasattr(package, name), f"{package.__name__}.{name}"


def test_no_kopf_or_kubernetes_imports() -> None:
    for package in PACKAGES:
        assert package.__file__ is not None
        for path in Path(package.__file__).parent.rglob("*.py"):
            tree = ast.parse(path.read_text(), filename=str(path))
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom):
                    names = [node.module or ""]
                else:
                    continue
                for name in names:
                    assert name.split(".")[0] not in {"kopf", "kubernetes"}, f"{path}: imports {name}"
