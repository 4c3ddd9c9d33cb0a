"""Inbound protocols: each parses its own wire format and renders its own errors."""
