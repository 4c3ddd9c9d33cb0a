"""The throwaway servers themselves work (so storage tests can trust them)."""

from __future__ import annotations

import socket

from services import PostgresServer, RedisServer


def _roundtrip(port: int, payload: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(payload)
        return s.recv(100)


def test_redis_answers_ping(redis_server: RedisServer) -> None:
    assert _roundtrip(redis_server.port, b"PING\r\n") == b"+PONG\r\n"


def test_postgres_accepts_connections(postgres_server: PostgresServer) -> None:
    # An SSLRequest packet: a live server answers 'N' (no SSL) or 'S'.
    assert _roundtrip(postgres_server.port, bytes.fromhex("0000000804d2162f")) in (b"N", b"S")
