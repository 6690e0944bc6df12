"""Kopf handlers: a few lines each, validating the event and calling the reconcile service.

The service lives in ``memo.service`` (built at start-up). Handler failures are re-raised as Kopf errors
whose text comes from ``safe_message``: Kopf copies it into annotations, logs and (if enabled) Events.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

import kopf

from managed_secrets.errors import safe_message
from managed_secrets.names import API_GROUP, API_VERSION, MANAGED_LABEL, OWNER_ANNOTATION, PLURAL
from managed_secrets.service import ManagedSecretService
from managed_secrets.service.keys import KeyManager

log = logging.getLogger(__name__)
RESOURCE = (API_GROUP, API_VERSION, PLURAL)


def _service(memo: kopf.Memo) -> ManagedSecretService:
    service: ManagedSecretService = memo["service"]
    return service


def _guard(call: Any, *args: Any) -> Any:
    try:
        return call(*args)
    except kopf.PermanentError:
        raise
    except Exception as e:
        raise kopf.TemporaryError(safe_message(e), delay=15) from None


@kopf.on.resume(*RESOURCE)
@kopf.on.create(*RESOURCE)
@kopf.on.update(*RESOURCE)
async def reconcile(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Runs on the service's pool for the object's kind of work, not on Kopf's shared handler threads."""
    service = _service(memo)
    await asyncio.wrap_future(service.pools.submit(body.get("spec") or {}, _guard, service.reconcile, body))


@kopf.on.delete(*RESOURCE)
def delete(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    _guard(_service(memo).delete, body)
    _service(memo).forget(body["metadata"]["namespace"], body["metadata"]["name"])


@kopf.index(*RESOURCE)
def value_sources(
    namespace: str | None, name: str, spec: kopf.Spec, **_: Any
) -> dict[tuple[str, str], str] | None:
    """(namespace, source Secret name) -> ManagedSecret names that take their value from it."""
    source = (spec.get("valueFrom") or {}).get("secretRef") or {}
    if source.get("name") and namespace:
        return {(namespace, str(source["name"])): name}
    return None


@kopf.on.event("v1", "secrets")
def secret_changed(
    event: kopf.RawEvent,
    namespace: str | None,
    name: str,
    memo: kopf.Memo,
    **kwargs: Any,
) -> None:
    """A projected Secret was edited or deleted, or a valueFrom source changed: reconcile its ManagedSecret."""
    if not namespace:
        return
    obj: dict[str, Any] = dict(event.get("object") or {})
    metadata: dict[str, Any] = obj.get("metadata") or {}
    value_sources: kopf.Index[tuple[str, str], str] = kwargs["value_sources"]
    owners: set[tuple[str, str]] = set()
    if (metadata.get("labels") or {}).get(MANAGED_LABEL) == "true":
        owner_ref = str((metadata.get("annotations") or {}).get(OWNER_ANNOTATION, ""))
        owner_ns, _sep, owner_name = owner_ref.partition("/")
        if owner_ns == namespace and owner_name:
            owners.add((owner_ns, owner_name))
    for ms_name in value_sources.get((namespace, name), []):
        owners.add((namespace, ms_name))
    cfg = memo.get("config")
    keys = memo.get("keys")
    if keys is not None and cfg is not None and namespace == cfg.namespace and name == cfg.keyring_secret:
        try:
            keys.handle_request(dict(metadata.get("annotations") or {}))
        except Exception as e:
            log.warning("key-encryption key rotation failed: %s", safe_message(e))
    service = _service(memo)
    for owner_ns, owner_name in sorted(owners):
        try:
            body = service.current_body(owner_ns, owner_name)
        except Exception as e:
            log.warning(
                "cannot read ManagedSecret %s/%s after a Secret event: %s", owner_ns, owner_name, safe_message(e)
            )
            continue
        if body is not None:
            # Handed to the pool for its kind of work: a slow reconcile never holds Kopf's event threads.
            service.submit(body).add_done_callback(_log_failure(owner_ns, owner_name))


def _log_failure(namespace: str, name: str) -> Any:
    def done(future: Any) -> None:
        error = future.exception()
        if error is not None:
            log.warning("reconcile of %s/%s after a Secret event failed: %s", namespace, name, safe_message(error))

    return done


def start_purger(
    service: ManagedSecretService, interval: float, stop: threading.Event, keys: KeyManager | None = None
) -> threading.Thread:
    """A background sweep: purges records past their recovery window and finishes KEK re-wrapping.

    When nothing is due it only reads.
    """

    def loop() -> None:
        while True:
            try:
                service.purge_expired()
                if keys is not None:
                    keys.rewrap_all()
            except Exception as e:
                log.warning("background sweep failed: %s", safe_message(e))
            if stop.wait(interval):
                return

    thread = threading.Thread(target=loop, name="purger", daemon=True)
    thread.start()
    return thread
