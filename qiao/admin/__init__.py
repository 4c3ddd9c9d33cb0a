"""The admin REST API under /admin (and later the console)."""
