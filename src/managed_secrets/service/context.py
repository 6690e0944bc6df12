"""What one reconcile pass carries from room to room: the parsed resource, the record as last stored, the
outcome being built, and the collaborators (vault, cluster, events, metrics, rotation engine).

Every room reads the record from here and puts back what its write returned, so a pass reads the store once
and each write starts from the revision the previous one produced.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from managed_secrets.cluster import Cluster, LiveSecret
from managed_secrets.domain import SecretMetadata, SecretRecord, SecretValue, Version
from managed_secrets.domain.schedule import MIN_INTERVAL
from managed_secrets.errors import ReferenceRefused
from managed_secrets.metrics import OperatorMetrics
from managed_secrets.names import PROTECTED_SECRET_TYPES, SHARD_LABEL
from managed_secrets.rotation.engine import RotationEngine
from managed_secrets.rotation.strategy import TargetReport
from managed_secrets.service.conditions import Outcome
from managed_secrets.service.events import EventRecorder
from managed_secrets.service.resource import ManagedSecretResource
from managed_secrets.service.spec import ManagedSecretSpec
from managed_secrets.service.watching import Revisions
from managed_secrets.store import Loaded, RecordKey, SecretVault

__all__ = ["Deps", "Pass"]


@dataclass(frozen=True)
class Deps:
    """The service's collaborators, built once at start-up."""

    vault: SecretVault
    cluster: Cluster
    events: EventRecorder
    metrics: OperatorMetrics
    engine: RotationEngine
    min_rotation_interval: dt.timedelta = MIN_INTERVAL
    revisions: Callable[[], Revisions | None] = lambda: None
    """What the operator's filtered watches list now (``None`` before they run, and in tests without them)."""
    fence: Callable[[RecordKey], None] = lambda _key: None
    """Raises ``Fenced`` when this replica may no longer act on the object (see ``service.sharding``)."""

    def now(self) -> dt.datetime:
        return self.vault.clock.now()

    def listed(self) -> Revisions | None:
        """The watches' revisions once they have listed everything; ``None`` otherwise."""
        revisions = self.revisions()
        return revisions if revisions is not None and revisions.synced() else None


@dataclass
class Pass:
    """One reconcile of one ManagedSecret."""

    deps: Deps
    resource: ManagedSecretResource
    spec: ManagedSecretSpec
    outcome: Outcome = field(default_factory=Outcome)
    loaded: Loaded | None = None
    absent: bool = False
    """The record is known not to exist (a new object the store watch does not list): not read, created."""
    _opened: dict[tuple[str, bytes], SecretValue] = field(default_factory=dict, repr=False)

    @property
    def key(self) -> RecordKey:
        return self.resource.key

    @property
    def record(self) -> SecretRecord | None:
        return self.loaded.record if self.loaded is not None else None

    @property
    def attributes(self) -> Mapping[str, str]:
        return self.loaded.attributes if self.loaded is not None else {}

    def keep(self, loaded: Loaded | None) -> SecretRecord | None:
        """Remember the record as the store now holds it; returns it."""
        self.loaded = loaded
        return self.record

    def fence(self) -> None:
        """Called before each side effect: raises ``Fenced`` once the object is no longer this replica's."""
        self.deps.fence(self.key)

    def open(self, version: Version) -> SecretValue:
        """The plaintext of ``version``, decrypted at most once per pass (and never kept beyond it)."""
        record = self.record
        assert record is not None
        cached = (version.id, version.sealed)
        if cached not in self._opened:
            self._opened[cached] = self.deps.vault.open(record, version)
        return self._opened[cached]

    def open_current(self) -> SecretValue | None:
        record = self.record
        return self.open(record.current) if record is not None and record.current is not None else None

    def new_metadata(self, now: dt.datetime | None = None) -> SecretMetadata:
        """The metadata a new record of this ManagedSecret gets."""
        r = self.resource
        return SecretMetadata(
            namespace=r.namespace,
            name=r.name,
            uid=r.uid,
            secret_type=self.spec.secret_type,
            created=now or self.deps.now(),
            description=self.spec.description,
            encryption_key=self.spec.encryption_key,
            tags=tuple(sorted((k, v) for k, v in r.labels.items() if k != SHARD_LABEL)),
        )

    def read_secret(self, name: str) -> Mapping[str, bytes]:
        """A Secret in the ManagedSecret's namespace, for strategies (``{}`` if it does not exist)."""
        live = self.read_referenced(name)
        return dict(live.data) if live is not None else {}

    def read_referenced(self, name: str) -> LiveSecret | None:
        """A Secret the spec references. Credentials of the cluster itself and the operator's own state are
        never read for a spec, whoever wrote it (defense in depth behind the admission policy)."""
        live = self.deps.cluster.read_secret(self.resource.namespace, name)
        if live is not None and live.type in PROTECTED_SECRET_TYPES:
            where = f"Secret {self.resource.namespace}/{name}"
            raise ReferenceRefused(f"{where} is of type {live.type}, which a ManagedSecret may not use")
        return live

    def report(self, report: TargetReport) -> None:
        """A strategy's word on one target system, for ``status.hosts`` (the last one per target counts)."""
        self.outcome.reports[report.target] = (report, self.deps.now())

    def normal(self, reason: str, message: str) -> None:
        self.deps.events.normal(self.resource.event_ref, reason, message)

    def warning(self, reason: str, message: str) -> None:
        self.deps.events.warning(self.resource.event_ref, reason, message)
