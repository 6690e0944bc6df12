"""Background jobs started with the operator.

Kopf runs the operator (start-up, clean-up, signals, the liveness endpoint) but watches nothing: ManagedSecrets
and Secrets come through the operator's own server-side filtered watches (``operator.watches``), which follow
this replica's share of the shards (``service.coordinator``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from managed_secrets.errors import safe_message
from managed_secrets.service import ManagedSecretService
from managed_secrets.service.keys import KeyManager

log = logging.getLogger(__name__)


def start_purger(
    service: ManagedSecretService,
    interval: float,
    stop: threading.Event,
    keys: KeyManager | None = None,
    leader: Callable[[], bool] = lambda: True,
) -> threading.Thread:
    """A background sweep: purges records past their recovery window and finishes KEK re-wrapping. It runs
    on the leader only (one replica at a time); the others skip their turn.

    When nothing is due it only reads.
    """

    def loop() -> None:
        while True:
            try:
                if leader():
                    service.purge_expired()
                    if keys is not None:
                        # A KEK rotation that failed earlier (say, the key service was away) goes again.
                        keys.handle_request(keys.secret.annotations())
                        keys.rewrap_all()
            except Exception as e:
                log.warning("background sweep failed: %s", safe_message(e))
            if stop.wait(interval):
                return

    thread = threading.Thread(target=loop, name="purger", daemon=True)
    thread.start()
    return thread
