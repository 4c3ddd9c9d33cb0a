"""Upstream protocols: one module of pure functions each, and their presets."""
