"""Logs, redaction and (later) metrics."""
