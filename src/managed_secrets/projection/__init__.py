"""Render the ACSCurrent value into a native Secret and keep that Secret as rendered."""

from managed_secrets.projection.apply import (
    Applied,
    ApplyAction,
    Owner,
    ProjectionConflict,
    ProjectionError,
    ProjectionRejected,
    apply_projection,
    delete_projection,
)
from managed_secrets.projection.render import DesiredSecret, RenderError, TargetSpec, data_hash, render

__all__ = [
    "Applied",
    "ApplyAction",
    "DesiredSecret",
    "Owner",
    "ProjectionConflict",
    "ProjectionError",
    "ProjectionRejected",
    "RenderError",
    "TargetSpec",
    "apply_projection",
    "data_hash",
    "delete_projection",
    "render",
]
