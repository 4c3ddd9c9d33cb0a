"""Policies applied around every request: rate limits (:mod:`.limits`, :mod:`.redis_limits`)
and spend budgets (:mod:`.budget`, :mod:`.redis_spend`).

Each policy reserves atomically before the request is forwarded and settles with the real
usage after it; the Redis-backed variants hold the limit for a whole fleet of processes.
"""
