from __future__ import annotations

import threading

import pytest

from qiao.errors import InvalidRequest
from qiao.jsonutil import MAX_DEPTH, loads_strict


@pytest.mark.parametrize(
    "body",
    [
        b'{"a": NaN}',
        b'{"a": Infinity}',
        b'{"a": -Infinity}',
        b'{"a": "\\ud800"}',
        b'{"a": "\xed\xa0\x80"}',
        b'{"a": "\xff"}',
        b'{"model": "a", "model": "b"}',
        b'{"model" : "a", "model" : "b"}',
        b'{"model"\t:"a",\n"model"\r\n:"b"}',
        b'{"m\\u006fdel": "a", "model": "b"}',
        b'{"x": {"k": 1, "k": 2}}',
        b'[{"k": 1, "k": 2}]',
        b'{"a": 1',
        b"",
        b'{"a": 1} trailing',
    ],
)
def test_rejects(body: bytes) -> None:
    with pytest.raises(InvalidRequest):
        loads_strict(body)


def test_accepts_valid_unicode_and_nesting() -> None:
    value = loads_strict('{"a": "中文 \\ud83d\\ude00", "b": [{"c": 1}, {"c": 2}]}'.encode())
    assert value["a"] == "中文 😀"
    assert value["b"][1]["c"] == 2


def test_duplicate_check_is_linear() -> None:
    # 200,000 members with the repeat at the very end: the old per-member ``names.count`` was
    # quadratic (8,000 members took 1.5 s; this size would take about 15 minutes). The work is
    # done in a thread so a regression fails at the ceiling instead of hanging the run.
    members = b",".join(b'"k%d": 1' % i for i in range(200_000))
    body = b"{" + members + b', "k199999": 2}'
    outcome: list[BaseException] = []
    worker = threading.Thread(target=_expect_invalid, args=(body, outcome), daemon=True)
    worker.start()
    worker.join(timeout=60)
    assert not worker.is_alive(), "the duplicate-key check is not linear"
    assert len(outcome) == 1 and "duplicate key: 'k199999'" in str(outcome[0])


def _expect_invalid(body: bytes, outcome: list[BaseException]) -> None:
    try:
        loads_strict(body)
    except InvalidRequest as exc:
        outcome.append(exc)


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 1_000, 1_023, 5_000])
@pytest.mark.parametrize("open_, close", [(b"[", b"]"), (b'{"a":', b"}")])
def test_deep_nesting_is_a_400(depth: int, open_: bytes, close: bytes) -> None:
    # Depth 1,000 raised RecursionError (a 500) in the duplicate-key scanner.
    with pytest.raises(InvalidRequest, match=r"nests|depth"):
        loads_strict(open_ * depth + b"1" + close * depth)


def test_nesting_up_to_the_limit_is_accepted() -> None:
    value = loads_strict(b"[" * MAX_DEPTH + b"]" * MAX_DEPTH)
    for _ in range(MAX_DEPTH - 1):
        value = value[0]
    assert value == []


def test_many_brackets_but_shallow() -> None:
    body = b'{"a": [' + b",".join(b'{"b": [1]}' for _ in range(10_000)) + b"]}"
    assert len(loads_strict(body)["a"]) == 10_000
