"""The rotation strategy interface and its registry.

A rotation runs four steps, as in the cloud secrets managers, each idempotent and resumable:

- ``create``: make the new value. No side effect outside the operator: the engine stores the value as
  ``ACSPending`` under a new version id *before* anything else happens, so a crash after this step resumes
  with the very same value.
- ``set``: apply the pending value to the target system (change a database password, call a webhook).
  Must be safe to repeat with the same value.
- ``test``: prove the pending value works (log in with it). Raise ``RotationStepFailed`` if not.
- ``finish``: anything the target system needs after the labels moved (most strategies: nothing). The
  engine itself moves ``ACSCurrent``/``ACSPrevious``, re-projects and restarts targets.

``initial`` makes the very first value when a ManagedSecret is created. There is nothing to keep valid at
that point, so the engine runs ``initial`` then ``set`` and ``test`` and stores the result as ``ACSCurrent``;
a crash in between simply starts over.

Strategies receive everything through ``RotationContext`` (no Kubernetes client, no global config), so they
can be tested against real target systems without a cluster. Errors must never quote a secret value.

A strategy that acts on several target systems (the SSH hosts of ``sshKey.hosts``) names them in
``targets`` and reports each one's state through ``RotationContext.report``; the service shows the reports in
``status.hosts`` (no values: a target, a version id, a step and a state).
"""

from __future__ import annotations

import abc
import random
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from managed_secrets.domain import SecretValue
from managed_secrets.errors import ManagedSecretsError

__all__ = [
    "RotationContext",
    "RotationStepFailed",
    "RotationStrategy",
    "TargetReport",
    "get_strategy",
    "register",
    "registered",
]


class RotationStepFailed(ManagedSecretsError):
    """A rotation step failed; the message (never a value) goes into the RotationFailed condition."""

    def __init__(self, step: str, reason: str, message: str) -> None:
        self.step = step
        self.reason = reason
        super().__init__(f"{step} step failed: {message}")


SecretReader = Callable[[str], Mapping[str, bytes]]


@dataclass(frozen=True)
class TargetReport:
    """Where one target system stands with one version (never a value)."""

    target: str
    """The target's name as the spec gives it, e.g. ``bastion.example.com:22``."""
    version_id: str
    step: str
    """The step that reported: ``set``, ``test`` or ``finish``."""
    state: str
    """``Installed`` (set), ``Verified`` (test), ``Current`` (finish) or ``Failed``."""
    message: str = ""


Reporter = Callable[[TargetReport], None]


@dataclass(frozen=True)
class RotationContext:
    """What a strategy may know about the rotation it is running."""

    secret_id: str
    """``namespace/name`` of the ManagedSecret."""
    version_id: str
    """The version being created (the pending one)."""
    config: Mapping[str, Any]
    """The strategy's own section of the spec (e.g. ``spec.database``), with CRD defaults applied."""
    current: SecretValue | None = None
    """The ACSCurrent value, if there is one."""
    previous: SecretValue | None = None
    """The ACSPrevious value, if there is one."""
    current_id: str | None = None
    """The ACSCurrent version's id, if there is one."""
    read_secret: SecretReader = field(default=lambda name: {}, repr=False)
    """Reads a Secret in the ManagedSecret's namespace by name (e.g. database admin credentials)."""
    rng: random.Random = field(default_factory=secrets.SystemRandom, repr=False)
    report: Reporter = field(default=lambda report: None, repr=False)
    """Tells the service where one target stands (see ``RotationStrategy.targets``)."""


class RotationStrategy(abc.ABC):
    """One way of rotating a secret, registered by name (the spec's value source)."""

    name: ClassVar[str]
    """The spec field that selects this strategy, e.g. ``database``."""

    local_only: ClassVar[bool] = False
    """True when no step reaches outside the operator (set, test and finish only check the value in memory).
    Nothing outside can then hold the pending value before it is current, so the engine rotates in one
    store write instead of one per step: a crash before it leaves nothing behind, one after it is done."""

    def is_local(self, config: Mapping[str, Any]) -> bool:
        """``local_only`` for this spec section (a strategy may reach outside for some configurations only)."""
        return self.local_only

    def targets(self, config: Mapping[str, Any]) -> tuple[str, ...]:
        """The target systems this configuration acts on, each reported on in ``status.hosts``. Default: none."""
        return ()

    @abc.abstractmethod
    def initial(self, ctx: RotationContext) -> SecretValue:
        """The first value of a new ManagedSecret."""

    @abc.abstractmethod
    def create(self, ctx: RotationContext) -> SecretValue:
        """A new value for the pending version. No side effects."""

    def set(self, ctx: RotationContext, pending: SecretValue) -> None:  # noqa: B027 - optional step
        """Apply ``pending`` to the target system. Idempotent."""

    def test(self, ctx: RotationContext, pending: SecretValue) -> None:  # noqa: B027 - optional step
        """Check that ``pending`` works; raise ``RotationStepFailed`` if not."""

    def finish(self, ctx: RotationContext, pending: SecretValue) -> None:  # noqa: B027 - optional step
        """Anything the target needs once ``pending`` is current."""

    def public_data(self, value: SecretValue) -> Mapping[str, str]:
        """Non-secret data to publish in status (e.g. an SSH public key). Default: nothing."""
        return {}


_REGISTRY: dict[str, type[RotationStrategy]] = {}


def register(cls: type[RotationStrategy]) -> type[RotationStrategy]:
    """Class decorator: registers a strategy under ``cls.name``; a second one of the same name is refused."""
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        raise TypeError(f"{cls.__name__} has no strategy name")
    if name in _REGISTRY and _REGISTRY[name] is not cls:
        raise ValueError(f"a rotation strategy named {name!r} is already registered ({_REGISTRY[name].__name__})")
    _REGISTRY[name] = cls
    return cls


def get_strategy(name: str) -> RotationStrategy:
    if name not in _REGISTRY:
        raise KeyError(f"no rotation strategy named {name!r}; registered: {sorted(_REGISTRY)}")
    return _REGISTRY[name]()


def registered() -> list[str]:
    return sorted(_REGISTRY)
