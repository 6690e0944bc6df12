"""The plugin ships on its own, without the operator's heavy dependencies: importing it must not load them."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("kopf", "psycopg", "pymysql", "cryptography", "jinja2", "grpc", "pkcs11")


def test_the_plugin_imports_none_of_the_operators_dependencies() -> None:
    program = (
        "import json, sys\n"
        "import managed_secrets.cli.main, managed_secrets.cli.completion\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, check=True, timeout=60)
    loaded = json.loads(done.stdout)
    heavy = [m for m in loaded if m.split(".")[0] in HEAVY]
    assert heavy == []
    ours = sorted({m for m in loaded if m.startswith("managed_secrets.")})
    assert all(m == "managed_secrets.names" or m.startswith("managed_secrets.cli") for m in ours), ours
