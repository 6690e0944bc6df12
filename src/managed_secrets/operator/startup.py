"""Start-up wiring: clients, keyring, vault and service go into Kopf's memo; Kopf settings chosen on purpose."""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import kopf
from kubernetes import client, config

from managed_secrets.cluster.keyring import KeyringCodec, KeyringSecret, load_keyring_file, load_or_create_keyring
from managed_secrets.cluster.kubernetes import KubernetesCluster, admission_policy_bound
from managed_secrets.cluster.leases import MemberLeases, lease_name
from managed_secrets.crypto import KeyProvider, LocalKeyring
from managed_secrets.crypto.provider import OpeningKeyProvider
from managed_secrets.crypto.sealing import ExternalKey
from managed_secrets.domain.clock import SystemClock
from managed_secrets.errors import (
    KeyringError,
    KeyringLost,
    KeyServiceRefused,
    KeyServiceUnavailable,
    UnsealFailed,
    safe_message,
)
from managed_secrets.kms.kmsv2 import KmsV2Key
from managed_secrets.kms.pkcs11 import Pkcs11Key, Pkcs11Token
from managed_secrets.metrics import OperatorMetrics
from managed_secrets.metrics_server import start_metrics_server
from managed_secrets.names import ADMISSION_POLICY, KOPF_PREFIX, MEMBER_LEASE_PREFIX
from managed_secrets.operator.config import OperatorConfig
from managed_secrets.operator.handlers import start_purger
from managed_secrets.operator.watches import ManagedSecretWatches, SecretWatches
from managed_secrets.rotation.engine import Backoff
from managed_secrets.service import ManagedSecretService
from managed_secrets.service.coordinator import Coordinator
from managed_secrets.service.dispatch import Dispatcher
from managed_secrets.service.keys import KeyManager, KeyringOpener, KeyServiceMonitor
from managed_secrets.service.sharding import LEADER, Shard, Share
from managed_secrets.store import SecretVault
from managed_secrets.store.kubernetes import KubernetesStore

log = logging.getLogger(__name__)


def api_client(connections: int, identity: str = "") -> client.ApiClient:
    """A client whose connection pool holds ``connections`` connections (one per thread that uses it): a
    thread never waits for a socket, and no more sockets (each with its TLS buffers) are opened than used.
    Its User-Agent names the replica, so the API server's audit log tells the replicas apart."""
    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    except config.ConfigException:
        config.load_kube_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    configuration.connection_pool_maxsize = connections
    api = client.ApiClient(configuration)
    api.user_agent = f"managed-secrets-operator/{identity or 'operator'}"
    return api


def external_key(cfg: OperatorConfig, metrics: OperatorMetrics) -> ExternalKey | None:
    """The external key that seals the keyring, from the configuration (``None``: the keyring stays plain)."""
    problems = cfg.kms_problems()
    if problems:
        raise KeyringError("the key service settings are incomplete: " + "; ".join(problems))
    key: ExternalKey
    if cfg.kms_provider == "pkcs11":
        assert cfg.pkcs11_pin_file is not None
        token = Pkcs11Token(cfg.pkcs11_library, cfg.pkcs11_token_label, cfg.pkcs11_pin_file)
        key = Pkcs11Key(token, cfg.pkcs11_key_label)
    elif cfg.kms_provider == "kmsv2":
        key = KmsV2Key(cfg.kms_endpoint, timeout_seconds=cfg.kms_timeout_seconds)
    else:
        return None
    provider = key.provider
    key.observe = lambda operation, ok: metrics.count_kms_request(provider, operation, ok)
    metrics.set_key_service_up(provider, -1)
    return key


def _load_keyring(
    cluster: KubernetesCluster, cfg: OperatorConfig, store: KubernetesStore, share: Share, codec: KeyringCodec
) -> Any:
    """The keyring; only the leader creates it on a first start, the other replicas wait for it (backoff).
    The leader also seals a plain keyring, or one sealed under an old external key, under the current one."""
    delay = 0.5
    while True:
        leader = share.leader
        try:
            return load_or_create_keyring(
                cluster,
                cfg.namespace,
                cfg.keyring_secret,
                create=cfg.keyring_create and leader,
                store_is_empty=store.is_empty,
                codec=codec,
                reseal=leader,
            )
        except (KeyringLost, KeyServiceUnavailable, KeyServiceRefused, UnsealFailed):
            raise
        except KeyringError as e:
            if not cfg.keyring_create or leader:
                raise
            log.info(
                "no keyring yet: waiting for the leader replica to create it (again in %.1fs): %s",
                delay,
                safe_message(e),
            )
        time.sleep(delay)
        delay = min(10.0, delay * 2)


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
    api = api_client(cfg.max_workers + cfg.external_workers + 6, cfg.identity)
    cluster = KubernetesCluster(api)
    store = KubernetesStore(api, cfg.namespace)
    metrics = OperatorMetrics()
    # Membership first: which shards (and whether the cluster-wide jobs) are this replica's.
    share = Share(cfg.shards)
    coordinator = Coordinator(
        MemberLeases(api_client(2, cfg.identity), cfg.namespace, cfg.pod),
        identity=cfg.identity,
        lease_name=lease_name(MEMBER_LEASE_PREFIX, cfg.identity),
        share=share,
        lease_seconds=cfg.lease_seconds,
        renew_seconds=cfg.lease_renew_seconds,
        on_count=metrics.count_handover,
    )
    metrics.track_membership(
        leader=lambda: share.leader,
        shards=lambda: sum(1 for s in share.active if isinstance(s, int)),
        replicas=lambda: coordinator.live_members,
    )
    coordinator.start()
    memo["coordinator"] = coordinator
    log.info("replica %s: member Lease %s", cfg.identity, coordinator.lease_name)
    # One round tells whether this replica leads (and may create the keyring); it takes no shard of
    # ManagedSecrets before it can serve them (``attach`` below).
    coordinator.first_round.wait(3 * cfg.lease_seconds)
    try:
        external = external_key(cfg, metrics)
    except KeyringError as e:
        log.error("%s", e)
        raise kopf.PermanentError(str(e)) from None
    codec = KeyringCodec(external)
    keyring: LocalKeyring | None = None
    opening: OpeningKeyProvider | None = None
    if cfg.keyring_file is not None:
        keyring = load_keyring_file(cfg.keyring_file)
    else:
        try:
            keyring = _load_keyring(cluster, cfg, store, share, codec)
        except KeyringLost as e:
            # Not retried: only a person can bring the keyring back (the operator exits and says why).
            log.error("%s", e)
            raise kopf.PermanentError(str(e)) from None
        except (KeyServiceUnavailable, KeyServiceRefused, UnsealFailed) as e:
            if external is None:
                # A sealed keyring and no key service configured: a configuration error, said as such.
                log.error("%s", e)
                raise kopf.PermanentError(str(e)) from None
            # The keyring is never replaced: the operator serves what needs no key, fails the rest with
            # reason KeyServiceUnavailable, and keeps trying to open it (see _open_later).
            log.error("the keyring cannot be opened: %s (retried with backoff)", safe_message(e))
            metrics.set_key_service_up(external.provider, 0)
            opening = OpeningKeyProvider(safe_message(e))
    provider: KeyProvider
    hash_key: bytes | Callable[[], bytes]
    if keyring is not None:
        provider, hash_key = keyring, keyring.hash_key
        metrics.set_keyring_open(True)
    else:
        assert opening is not None
        provider, hash_key = opening, lambda: opening.hash_key
    vault = SecretVault(store, provider, hash_key, SystemClock())
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
        share=share,
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
        keys = KeyManager(vault, keyring, KeyringSecret(cluster, cfg.namespace, cfg.keyring_secret, codec))
    memo["keys"] = keys
    # Its own client: each watch holds one connection for as long as it streams.
    watches = SecretWatches(api_client(8, cfg.identity), cfg, service, keys, leader=lambda: share.leader)
    service.revisions = watches
    watches.start(wait_seconds=120)
    memo["watches"] = watches
    # The ManagedSecrets of this replica's share, throttled to what the workers take (see service.dispatch).
    dispatcher = Dispatcher(service.pools, service.observe, limit=2 * (cfg.max_workers + cfg.external_workers))
    objects = ManagedSecretWatches(
        api_client(2 * max(1, len(cfg.watch_namespaces)) + 2, cfg.identity), cfg, dispatcher, share.active
    )
    memo["objects"] = objects
    leading = [LEADER in share.active]

    def active_changed(active: frozenset[Shard]) -> None:
        objects.follow(active)
        if LEADER in active and not leading[0] and keys is not None:
            # A KEK rotation requested while the leadership moved: the new leader looks once.
            threading.Thread(target=_pending_kek_request, args=(keys,), daemon=True).start()
        leading[0] = LEADER in active

    coordinator.attach(active_changed, service.release)
    objects.start()
    if not coordinator.wait_until(lambda: any(isinstance(s, int) for s in share.active), 2 * cfg.lease_seconds):
        log.info("replica %s serves no shard yet (the others still hold them)", cfg.identity)
    stop = threading.Event()
    memo["stop"] = stop
    start_purger(service, cfg.purge_interval_seconds, stop, keys, leader=lambda: share.leader)
    if opening is not None and keys is not None:
        opener = KeyringOpener(
            lambda: _load_keyring(cluster, cfg, store, share, codec), opening, keys, service, metrics, stop=stop
        )
        threading.Thread(target=opener.run, name="keyring-opener", daemon=True).start()
    if external is not None and keys is not None:
        monitor = KeyServiceMonitor(external, keys, metrics, cfg.kms_check_seconds, leader=lambda: share.leader)
        threading.Thread(target=monitor.run, args=(stop,), name="key-service-monitor", daemon=True).start()
    log.info("managed-secrets-operator started; store and keyring in namespace %s", cfg.namespace)


def _pending_kek_request(keys: KeyManager) -> None:
    try:
        keys.handle_request(keys.secret.annotations())
    except Exception as e:
        log.warning("key-encryption key rotation failed: %s", safe_message(e))


@kopf.on.cleanup()
def cleanup(memo: kopf.Memo, **_: Any) -> None:
    stop = memo.get("stop")
    if stop is not None:
        stop.set()
    objects = memo.get("objects")
    if objects is not None:
        objects.stop()
    coordinator = memo.get("coordinator")
    if coordinator is not None:
        # Stops acting, drains the passes in flight, deletes the member Lease: the others take over at once.
        coordinator.stop(drain_seconds=10)
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
