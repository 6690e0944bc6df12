"""Kopf handlers: one event handler that hands ManagedSecret events to the reconcile service.

The service lives in ``memo.service`` (built at start-up). Secrets are not watched through Kopf: the
operator's own server-side filtered watches (``operator.watches``) bring only the Secrets it has to do with.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

import kopf

from managed_secrets.errors import safe_message
from managed_secrets.names import API_GROUP, API_VERSION, PLURAL
from managed_secrets.service import ManagedSecretService
from managed_secrets.service.keys import KeyManager

log = logging.getLogger(__name__)
RESOURCE = (API_GROUP, API_VERSION, PLURAL)


def _service(memo: kopf.Memo) -> ManagedSecretService:
    service: ManagedSecretService = memo["service"]
    return service


@kopf.on.event(*RESOURCE)
async def managed_secret_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    """Every ManagedSecret event goes to the service, on its pool for the object's kind of work.

    Only event handlers are registered: Kopf keeps no progress or diff-base annotations and no finalizer
    of its own on our objects (each would be a write per change). The service keeps the finalizer, drops the
    echoes of its own writes, retries failures with backoff and never raises.
    """
    service = _service(memo)
    body: dict[str, Any] = dict(event.get("object") or {})
    if not (body.get("metadata") or {}).get("name"):
        return
    await asyncio.wrap_future(
        service.pools.submit(body.get("spec") or {}, service.observe, event.get("type"), body)
    )


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
