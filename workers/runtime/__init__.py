"""Shared runtime: settings, bus, event log, telemetry, embedded NATS, logging."""
