from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from gateway import Gateway
from services import PostgresServer, RedisServer

CLIENT_KEY = "sk-qiao-test-client-key"
ADMIN_KEY = "sk-qiao-test-admin-key"
LIMITED_KEY = "sk-qiao-test-limited-key"

MOCK_CONFIG = f"""
listen: 127.0.0.1:0
admin_key: {ADMIN_KEY}
providers:
  mock:
    type: mock
models:
  qiao-mock: [{{provider: mock}}]
  gpt-4o-mini: [{{provider: mock}}]
keys:
  - name: tester
    key: {CLIENT_KEY}
  - name: limited
    key: {LIMITED_KEY}
    models: ["gpt-4o-*"]
"""


@pytest.fixture(scope="module")
def mock_gateway() -> Iterator[Gateway]:
    with Gateway(MOCK_CONFIG) as gw:
        yield gw


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.close()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    server = PostgresServer().start()
    yield server
    server.close()
