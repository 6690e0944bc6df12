"""The reconcile service: one idempotent path that every operator handler calls."""

from managed_secrets.service.conditions import Condition, Outcome
from managed_secrets.service.events import EventRecorder
from managed_secrets.service.reconcile import ManagedSecretService
from managed_secrets.service.resource import ManagedSecretResource
from managed_secrets.service.spec import parse_spec

__all__ = ["Condition", "EventRecorder", "ManagedSecretResource", "ManagedSecretService", "Outcome", "parse_spec"]
