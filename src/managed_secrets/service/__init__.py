"""The reconcile service: one idempotent path that every operator handler calls."""

from managed_secrets.service.events import EventRecorder
from managed_secrets.service.reconcile import ManagedSecretService, Outcome, safe_message
from managed_secrets.service.spec import parse_spec

__all__ = ["EventRecorder", "ManagedSecretService", "Outcome", "parse_spec", "safe_message"]
