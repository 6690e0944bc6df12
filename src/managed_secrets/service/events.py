"""Kubernetes Events about ManagedSecrets, posted by the operator itself (Kopf's own posting is off).

Messages are written by the service and name versions, Secrets and reasons: never a value. Each Event is
also logged at INFO, so the log tells the same story without an Event reader.
"""

from __future__ import annotations

import logging

from managed_secrets.cluster import Cluster, EventRef

log = logging.getLogger(__name__)


class EventRecorder:
    def __init__(self, cluster: Cluster) -> None:
        self._cluster = cluster

    def normal(self, about: EventRef, reason: str, message: str) -> None:
        self._post(about, "Normal", reason, message)

    def warning(self, about: EventRef, reason: str, message: str) -> None:
        self._post(about, "Warning", reason, message)

    def _post(self, about: EventRef, type_: str, reason: str, message: str) -> None:
        self._cluster.post_event(about, type_, reason, message)
        log.info("%s %s/%s: %s", reason, about.namespace, about.name, message)
