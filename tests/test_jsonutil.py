from __future__ import annotations

import pytest

from qiao.errors import InvalidRequest
from qiao.jsonutil import loads_strict


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
