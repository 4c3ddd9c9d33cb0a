"""The one exception tree of Qiao.

Every failure the gateway reports to a caller is a :class:`QiaoError`. Each
knows its HTTP status, a machine-readable ``code``, the OpenAI-style ``type``,
whether a retry on another target may help, and (for upstream failures) which
provider it came from. Surfaces render these in their own wire format.

    QiaoError
    ├── ClientError                 4xx: the caller must change the request
    │   ├── InvalidRequest          400
    │   ├── AuthenticationFailed    401
    │   ├── PermissionDenied        403
    │   ├── NotFound                404
    │   ├── PayloadTooLarge         413
    │   ├── UnsupportedMediaType    415
    │   └── RequestTimeout          408 (the client was too slow sending)
    ├── UpstreamError               an upstream attempt failed
    │   ├── UpstreamStatusError     upstream answered with an error status
    │   ├── UpstreamConnectError    could not connect (502, retryable)
    │   ├── UpstreamTimeout         connect/first-byte/idle/total timeout (504)
    │   ├── UpstreamOverloaded      upstream overloaded (503 + Retry-After)
    │   ├── ConnectionShareExceeded the key holds its share of the provider's pool (429)
    │   └── UpstreamProtocolError   upstream sent something we cannot relay (502)
    └── Unavailable                 503: Qiao itself cannot serve (no healthy target)

Foreign exceptions (aiohttp, asyncio) are mapped to this tree in exactly one
place: :mod:`qiao.upstream`.
"""

from __future__ import annotations

__all__ = [
    "AuthenticationFailed",
    "ClientError",
    "ConnectionShareExceeded",
    "InvalidRequest",
    "NotFound",
    "PayloadTooLarge",
    "PermissionDenied",
    "QiaoError",
    "RequestTimeout",
    "Unavailable",
    "UnsupportedMediaType",
    "UpstreamConnectError",
    "UpstreamError",
    "UpstreamOverloaded",
    "UpstreamProtocolError",
    "UpstreamStatusError",
    "UpstreamTimeout",
]


class QiaoError(Exception):
    status: int = 500
    type: str = "server_error"
    code: str | None = None
    retryable: bool = False

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        provider: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.param = param
        self.provider = provider
        self.retry_after = retry_after


class ClientError(QiaoError):
    status = 400
    type = "invalid_request_error"


class InvalidRequest(ClientError):
    status = 400


class AuthenticationFailed(ClientError):
    status = 401
    code = "invalid_api_key"


class PermissionDenied(ClientError):
    status = 403
    code = "model_not_allowed"


class NotFound(ClientError):
    status = 404


class PayloadTooLarge(ClientError):
    status = 413
    code = "request_too_large"


class UnsupportedMediaType(ClientError):
    status = 415
    code = "unsupported_media_type"


class RequestTimeout(ClientError):
    status = 408
    code = "request_timeout"


class UpstreamError(QiaoError):
    status = 502
    type = "upstream_error"
    retryable = True


class UpstreamStatusError(UpstreamError):
    """Upstream answered with an error status; ``body`` is already scrubbed."""

    def __init__(
        self,
        message: str,
        *,
        upstream_status: int,
        body: bytes,
        content_type: str,
        provider: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, provider=provider, retry_after=retry_after)
        self.upstream_status = upstream_status
        self.body = body
        self.content_type = content_type
        self.status, self.retryable = _status_for_upstream(upstream_status)
        self.protocol: str | None = None  # the wire protocol of ``body``


def _status_for_upstream(upstream_status: int) -> tuple[int, bool]:
    """Map an upstream status to (status we return, whether another target may help)."""
    if upstream_status in (401, 403):
        # Our provider credential was refused: not the caller's fault.
        return 502, True
    if upstream_status == 429:
        return 429, True
    if upstream_status in (503, 529):
        return 503, True
    if upstream_status == 504:
        return 504, True
    if upstream_status >= 500:
        return 502, True
    if upstream_status in (404, 408, 409):
        return upstream_status, upstream_status != 404
    return upstream_status, False


class UpstreamConnectError(UpstreamError):
    status = 502
    code = "upstream_connect_error"


class UpstreamTimeout(UpstreamError):
    status = 504
    type = "timeout_error"
    code = "upstream_timeout"


class UpstreamOverloaded(UpstreamError):
    status = 503
    type = "service_unavailable_error"
    code = "upstream_overloaded"


class ConnectionShareExceeded(UpstreamError):
    """Not sent: the caller's key already holds its share of this provider's connection pool.
    Another target has a pool of its own, so the next one is tried; the provider is healthy."""

    status = 429
    type = "rate_limit_error"
    code = "upstream_connections_exceeded"


class UpstreamProtocolError(UpstreamError):
    status = 502
    code = "upstream_protocol_error"
    retryable = False


class Unavailable(QiaoError):
    status = 503
    type = "service_unavailable_error"
    code = "unavailable"
    retryable = False
