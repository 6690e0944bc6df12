"""The domain package's public surface, and its purity."""

from __future__ import annotations

import ast
from pathlib import Path

from managed_secrets import domain

DOMAIN_DIR = Path(domain.__file__).parent
FORBIDDEN = {
    # The pure core knows nothing of Kubernetes, does no crypto, and does no I/O (time comes in as an argument).
    "kopf",
    "kubernetes",
    "cryptography",
    "asyncio",
    "http",
    "io",
    "os",
    "pathlib",
    "requests",
    "shutil",
    "socket",
    "subprocess",
    "time",
    "urllib",
}


def _ruff_order(name: str) -> tuple[int, str]:
    # The order ruff's RUF022 keeps: CONSTANTS, then Classes, then functions.
    return (0 if name.isupper() else 1 if name[0].isupper() else 2, name)


def test_all_is_sorted_and_complete() -> None:
    assert domain.__all__ == sorted(domain.__all__, key=_ruff_order)
    assert len(set(domain.__all__)) == len(domain.__all__)
    for name in domain.__all__:
        assert hasattr(domain, name), name


def test_every_module_all_names_exist() -> None:
    from managed_secrets.domain import clock, codec, labels, model, operations, values

    for module in (clock, codec, labels, model, operations, values):
        for name in module.__all__:
            assert hasattr(module, name), f"{module.__name__}.{name}"


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def test_the_domain_is_pure() -> None:
    for path in sorted(DOMAIN_DIR.glob("*.py")):
        imports = _imports(path)
        assert not {name.split(".")[0] for name in imports} & FORBIDDEN, path.name
        internal = {name for name in imports if name.startswith("managed_secrets")}
        assert all(
            name.startswith("managed_secrets.domain") or name == "managed_secrets.errors" for name in internal
        )
