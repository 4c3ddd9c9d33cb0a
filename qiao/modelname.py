"""The one grammar for model names, and the one way they enter an upstream URL.

A model name comes from the caller (a JSON field, or a URL path segment on the Gemini surface,
decoded once by the router) and may end up inside an upstream URL (Gemini, Vertex, Bedrock and
Azure put the model in the path). So a name is checked once, where the request is read:

- 1 to 256 ASCII characters from ``A-Z a-z 0-9 . _ - : @ +`` and ``/``;
- ``/`` only separates non-empty segments (``provider/model``, ``deepseek-ai/DeepSeek-V3``),
  and no segment is ``.`` or ``..``;
- nothing else: no ``?``, ``#``, ``%`` (a percent-escape is never decoded a second time),
  backslash, space or control character.

``:`` is allowed (``ft:gpt-4o:org:id``, ``qwen3:8b``) except where the protocol uses it: a name
sent to a Gemini-style URL (``models/{model}:{method}``) must not contain one. Every path segment
Qiao builds from a name is percent-encoded as well (:func:`segment`), so even a configured
target name cannot change the path it lands in.
"""

from __future__ import annotations

import re
from urllib.parse import quote

from .errors import InvalidRequest

__all__ = ["MAX_LENGTH", "check_model_name", "segment", "segments"]

MAX_LENGTH = 256
_NAME = re.compile(r"[A-Za-z0-9._\-:@+]+(?:/[A-Za-z0-9._\-:@+]+)*")
_DOTS = re.compile(r"(?:^|/)\.{1,2}(?:/|$)")


def check_model_name(name: str, *, param: str = "model") -> str:
    """``name`` if it follows the grammar above, else a 400 saying what is wrong."""
    if 0 < len(name) <= MAX_LENGTH and _NAME.fullmatch(name) and not _DOTS.search(name):
        return name
    if not name:
        why = "is empty"
    elif len(name) > MAX_LENGTH:
        why = f"is longer than {MAX_LENGTH} characters"
    elif _DOTS.search(name) or "//" in name or name.startswith("/") or name.endswith("/"):
        why = "has an empty, '.' or '..' path segment"
    else:
        why = "may only contain letters, digits and . _ - : @ + / (no ? # % or spaces)"
    shown = name[:64].encode("unicode_escape").decode("ascii")
    raise InvalidRequest(
        f"Invalid model name {shown!r}: it {why}.", param=param, code="invalid_model"
    )


def segment(value: str, *, colon: bool = True) -> str:
    """``value`` as one URL path segment: every ``/``, ``?``, ``#``, ``%`` escaped.

    ``colon=False`` is for Gemini-style paths, where ``:`` starts the method name.
    """
    if value in ("", ".", ".."):
        raise InvalidRequest(f"Invalid model name segment {value!r}.", code="invalid_model")
    if not colon and ":" in value:
        raise InvalidRequest(
            f"Model name {value!r} cannot contain ':' for this provider "
            "(its URLs use ':' before the method name).",
            param="model",
            code="invalid_model",
        )
    return quote(value, safe="-._~@+:" if colon else "-._~@+")


def segments(value: str, *, colon: bool = True) -> str:
    """A ``/``-separated name (``tunedModels/x``) with each segment encoded alone."""
    return "/".join(segment(part, colon=colon) for part in value.split("/"))
