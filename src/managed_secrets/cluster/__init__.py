"""The cluster port: what the reconcile service asks of Kubernetes, and its two implementations.

``cluster.kubernetes`` (the official client) and ``cluster.memory`` (unit tests) are imported by name:
this package itself imports no client library.
"""

from managed_secrets.cluster.base import (
    Cluster,
    EventRef,
    LeaseRecord,
    Leases,
    LiveSecret,
    OwnerRef,
    SecretObject,
    WorkloadRef,
)

__all__ = ["Cluster", "EventRef", "LeaseRecord", "Leases", "LiveSecret", "OwnerRef", "SecretObject", "WorkloadRef"]
