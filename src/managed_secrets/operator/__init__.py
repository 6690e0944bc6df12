"""Kopf handlers and start-up wiring only; the work happens in managed_secrets.service."""
