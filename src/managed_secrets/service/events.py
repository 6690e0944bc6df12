"""Kubernetes Events about ManagedSecrets, posted by the operator itself (Kopf's own posting is off).

Messages are written by the service and name versions, Secrets and reasons: never a value.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Mapping
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

log = logging.getLogger(__name__)

COMPONENT = "managed-secrets-operator"


class EventRecorder:
    def __init__(self, api: client.ApiClient) -> None:
        self._core = client.CoreV1Api(api)

    def normal(self, body: Mapping[str, Any], reason: str, message: str) -> None:
        self._post(body, "Normal", reason, message)

    def warning(self, body: Mapping[str, Any], reason: str, message: str) -> None:
        self._post(body, "Warning", reason, message)

    def _post(self, body: Mapping[str, Any], kind: str, reason: str, message: str) -> None:
        meta = body["metadata"]
        now = dt.datetime.now(dt.UTC)
        event = client.CoreV1Event(
            metadata=client.V1ObjectMeta(
                name=f"{meta['name']}.{uuid.uuid4().hex[:12]}", namespace=meta["namespace"]
            ),
            involved_object=client.V1ObjectReference(
                api_version=body.get("apiVersion"),
                kind=body.get("kind"),
                name=meta["name"],
                namespace=meta["namespace"],
                uid=meta.get("uid"),
                resource_version=meta.get("resourceVersion"),
            ),
            reason=reason,
            message=message[:1024],
            type=kind,
            source=client.V1EventSource(component=COMPONENT),
            reporting_component=COMPONENT,
            reporting_instance=COMPONENT,
            first_timestamp=now,
            last_timestamp=now,
            count=1,
        )
        try:
            self._core.create_namespaced_event(meta["namespace"], event)
        except ApiException as e:
            # Events are best effort; a missing permission is worth saying once per failure.
            log.warning("could not post a %s Event %s: HTTP %s %s", kind, reason, e.status, e.reason)
        log.info("%s %s/%s: %s", reason, meta["namespace"], meta["name"], message)
