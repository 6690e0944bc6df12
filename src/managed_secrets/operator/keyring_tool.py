"""``managed-secrets-operator keyring status|seal|unseal``: look at the keyring Secret, and move it between
the plain and the sealed form by hand.

It reads the same configuration as the operator (``MSO_NAMESPACE``, ``MSO_KEYRING_SECRET``, ``MSO_KMS_*``,
``MSO_PKCS11_*``) and the caller's kubeconfig (or the pod's ServiceAccount, run with ``kubectl exec``).

- ``status`` says whether the keyring is plain or sealed, by which provider and external key, and which
  KEK ids it holds (never key material); with a key service configured it also opens it to prove it can.
- ``seal`` seals a plain keyring under the configured external key (what the leader also does by itself
  when it starts with a key service configured).
- ``unseal --confirm`` is the disaster-recovery direction: it opens the sealed keyring with the configured
  key service and writes it back *plain*. Do it while the key service still answers, with the operator
  scaled to zero (a running operator with a key service configured seals it again), then configure the
  operator without a key service. From then on anyone who can read Secrets in the operator's namespace, or
  an etcd backup, can decrypt every version: seal it again as soon as a key service is back.
"""

from __future__ import annotations

import argparse
import json
import sys

from kubernetes import client, config

from managed_secrets.cluster.keyring import SEALED_DATA_KEY, KeyringCodec, KeyringSecret
from managed_secrets.cluster.kubernetes import KubernetesCluster
from managed_secrets.crypto.sealing import read_seal_info
from managed_secrets.errors import ManagedSecretsError, WriteConflict, safe_message
from managed_secrets.metrics import OperatorMetrics
from managed_secrets.operator.config import OperatorConfig


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="managed-secrets-operator keyring", description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=("status", "seal", "unseal"))
    parser.add_argument("--confirm", action="store_true", help="unseal: yes, write the keyring plain")
    args = parser.parse_args(argv)
    cfg = OperatorConfig.from_env()
    # The operator's own wiring builds the external key the same way.
    from managed_secrets.operator.startup import external_key

    try:
        external = external_key(cfg, OperatorMetrics(runtime_collectors=False))
        try:
            config.load_incluster_config()  # type: ignore[no-untyped-call]
        except config.ConfigException:
            config.load_kube_config()  # type: ignore[no-untyped-call]
        cluster = KubernetesCluster(client.ApiClient())
        where = f"keyring Secret {cfg.namespace}/{cfg.keyring_secret}"
        live = cluster.read_secret(cfg.namespace, cfg.keyring_secret)
        if live is None:
            print(f"{where} does not exist", file=sys.stderr)
            return 1
        sealed = live.data.get(SEALED_DATA_KEY)
        if args.action == "status":
            report: dict[str, object] = {"secret": f"{cfg.namespace}/{cfg.keyring_secret}"}
            if sealed:
                info = read_seal_info(sealed)
                report.update(form="sealed", provider=info.provider, externalKeyId=info.key_id)
            else:
                report.update(form="plain")
            if external is not None or not sealed:
                keyring = KeyringCodec(external).decode(live.data, where)
                report.update(opens=True, primaryKeyId=keyring.primary_key_id(), keyIds=sorted(keyring.key_ids()))
            print(json.dumps(report, indent=2))
            return 0
        if external is None and args.action == "seal":
            print("seal: no key service is configured (MSO_KMS_PROVIDER)", file=sys.stderr)
            return 2
        if args.action == "unseal" and not sealed:
            print(f"{where} is already plain")
            return 0
        if args.action == "seal" and sealed:
            print(f"{where} is already sealed (under {read_seal_info(sealed).key_id!r})")
            return 0
        if args.action == "unseal" and not args.confirm:
            print(
                "unseal writes every key-encryption key into the Secret in plain form: anyone who can read it (or "
                "an etcd backup) can then decrypt every version. Scale the operator to zero first, then run again "
                "with --confirm.",
                file=sys.stderr,
            )
            return 2
        keyring = KeyringCodec(external).decode(live.data, where)
        target = KeyringSecret(
            cluster, cfg.namespace, cfg.keyring_secret, KeyringCodec(external if args.action == "seal" else None)
        )
        try:
            target.write(keyring, live.resource_version, {})
        except WriteConflict:
            print(f"{where} changed meanwhile; run the command again", file=sys.stderr)
            return 1
        if args.action == "seal":
            assert external is not None
            print(f"{where} sealed under {external.describe()}")
        else:
            print(f"{where} is plain now; configure the operator without a key service before it starts again")
        return 0
    except ManagedSecretsError as e:
        print(f"error: {safe_message(e)}", file=sys.stderr)
        return 1
