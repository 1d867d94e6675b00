"""Lifecycle managers of the runtime (supervise, scheduled, event_driven) and their helpers."""
