"""Start-up wiring: clients, keyring, vault and service go into Kopf's memo; Kopf settings chosen on purpose."""

from __future__ import annotations

import datetime as dt
import logging
import threading
from typing import Any

import kopf
from kubernetes import client, config

from managed_secrets.cluster.keyring import KeyringSecret, load_keyring_file, load_or_create_keyring
from managed_secrets.cluster.kubernetes import KubernetesCluster, admission_policy_bound
from managed_secrets.domain.clock import SystemClock
from managed_secrets.errors import KeyringLost
from managed_secrets.metrics import OperatorMetrics, start_metrics_server
from managed_secrets.names import ADMISSION_POLICY, KOPF_PREFIX
from managed_secrets.operator.config import OperatorConfig
from managed_secrets.operator.handlers import start_purger
from managed_secrets.operator.watches import SecretWatches
from managed_secrets.rotation.engine import Backoff
from managed_secrets.service import ManagedSecretService
from managed_secrets.service.keys import KeyManager
from managed_secrets.store import SecretVault
from managed_secrets.store.kubernetes import KubernetesStore

log = logging.getLogger(__name__)


def api_client(connections: int) -> client.ApiClient:
    """A client whose connection pool holds ``connections`` connections (one per thread that uses it): a
    thread never waits for a socket, and no more sockets (each with its TLS buffers) are opened than used."""
    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    except config.ConfigException:
        config.load_kube_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    configuration.connection_pool_maxsize = connections
    return client.ApiClient(configuration)


def configure_kopf(settings: kopf.OperatorSettings, cfg: OperatorConfig) -> None:
    # Own names for anything Kopf would store on our objects.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=KOPF_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=KOPF_PREFIX, key="last-handled-configuration"
    )
    # Events are posted by the service with messages it wrote; Kopf's would repeat handler/exception text.
    settings.posting.enabled = False
    # Kopf only watches ManagedSecrets and hands each event to the service's pools; it writes nothing itself
    # (no on.create/update/delete handlers: no diff-base or progress annotations, no finalizer of its own).
    settings.persistence.finalizer = f"{KOPF_PREFIX}/unused"
    settings.execution.max_workers = 2
    # Per-object workers (asyncio tasks waiting for the pools) are bounded, and one leaves its slot 0.1 s
    # after its last event: a slot held after the work is done caps throughput at limit / idle_timeout objects
    # per second (Kopf's default of 5 s would make that 6/s); an echo that comes later gets a new worker.
    # The initial listing comes in pages.
    settings.queueing.worker_limit = 32
    settings.queueing.idle_timeout = 0.1
    settings.watching.chunk_size = 500
    # No diff-base is ever stored on native Secrets: they only have on.event handlers, which store nothing.
    # The server ends each watch after this long and Kopf reconnects (the idle test waits for one).
    settings.watching.server_timeout = cfg.watch_timeout_seconds
    settings.watching.client_timeout = cfg.watch_timeout_seconds + 30


@kopf.on.startup()
def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    cfg: OperatorConfig = memo.get("config") or OperatorConfig.from_env()
    configure_kopf(settings, cfg)
    # Worker threads of both pools, the scheduler's and the purger's, and a few for start-up and the CLI-like
    # calls of the key manager.
    api = api_client(cfg.max_workers + cfg.external_workers + 6)
    cluster = KubernetesCluster(api)
    store = KubernetesStore(api, cfg.namespace)
    if cfg.keyring_file is not None:
        keyring = load_keyring_file(cfg.keyring_file)
    else:
        try:
            keyring = load_or_create_keyring(
                cluster,
                cfg.namespace,
                cfg.keyring_secret,
                create=cfg.keyring_create,
                store_is_empty=store.is_empty,
            )
        except KeyringLost as e:
            # Not retried: only a person can bring the keyring back (the operator exits and says why).
            log.error("%s", e)
            raise kopf.PermanentError(str(e)) from None
    vault = SecretVault(store, keyring, keyring.hash_key, SystemClock())
    metrics = OperatorMetrics()
    service = ManagedSecretService(
        cluster,
        vault,
        # 20 % jitter: objects that failed together (an API or database outage) do not retry together.
        backoff=Backoff(base_seconds=cfg.rotation_backoff_seconds, jitter=0.2),
        metrics=metrics,
        operator_namespace=cfg.namespace,
        min_rotation_interval=dt.timedelta(seconds=cfg.min_rotation_interval_seconds),
        local_workers=cfg.max_workers,
        external_workers=cfg.external_workers,
    )
    service.admission_policy_installed = admission_policy_bound(api, ADMISSION_POLICY)
    metrics.set_admission_policy(service.admission_policy_installed)
    if service.admission_policy_installed is False:
        log.warning(
            "the admission policy %s is not installed: anyone who may write ManagedSecrets can have the operator "
            "read the Secrets they reference (install deploy/admission-policy.yaml or the chart's "
            "admissionPolicy.enabled)",
            ADMISSION_POLICY,
        )
    server = start_metrics_server(metrics, cfg.metrics_port)
    memo["metrics_server"] = server
    log.info("metrics served on port %d at /metrics", server.port)
    service.scheduler.start()
    memo["config"] = cfg
    memo["service"] = service
    keys = None
    if cfg.keyring_file is None:
        keys = KeyManager(vault, keyring, KeyringSecret(cluster, cfg.namespace, cfg.keyring_secret))
    memo["keys"] = keys
    # Its own client: each watch holds one connection for as long as it streams.
    watches = SecretWatches(api_client(8), cfg, service, keys)
    service.revisions = watches
    watches.start(wait_seconds=120)
    memo["watches"] = watches
    stop = threading.Event()
    memo["stop"] = stop
    start_purger(service, cfg.purge_interval_seconds, stop, keys)
    log.info("managed-secrets-operator started; store and keyring in namespace %s", cfg.namespace)


@kopf.on.cleanup()
def cleanup(memo: kopf.Memo, **_: Any) -> None:
    stop = memo.get("stop")
    if stop is not None:
        stop.set()
    watches = memo.get("watches")
    if watches is not None:
        watches.stop()
    service = memo.get("service")
    if service is not None:
        service.scheduler.stop()
        service.pools.shutdown()
    server = memo.get("metrics_server")
    if server is not None:
        server.close()
