"""Errors of the web layer.

LiveChatWebError
├── ConfigError          bad flag, environment variable or config file value
└── ApiError             answered as ``{"error": {"code", "message", "field"?}}`` with ``status``
    ├── BadRequest       400  invalid_json, invalid_body (with ``field``), bad_parameter
    ├── Unauthorized     401  unauthenticated, session_expired, bad_credentials
    ├── Forbidden        403  forbidden (role), csrf_failed, workspace_suspended, origin_refused
    ├── NotFound         404  not_found (also for another workspace's ids: no oracle)
    ├── Conflict         409  conflict (unique name taken, illegal state change)
    ├── PayloadTooLarge  413  body_too_large
    ├── TooManyRequests  429  rate_limited, login_throttled (``retry_after_s``)
    └── Unavailable      503  not_ready, storage_unavailable
        └── Overloaded   503  overloaded (``retry_after_s``): shed at once, e.g. a login flood

Codes are stable strings documented in docs/admin-api.md; messages are for humans. An error
with ``retry_after_s`` is answered with a ``Retry-After`` header.
"""

from __future__ import annotations


class LiveChatWebError(Exception):
    """Root of the web layer's errors."""


class ConfigError(LiveChatWebError):
    """A setting is missing or malformed; the message names it."""


class ApiError(LiveChatWebError):
    """An error answered to an HTTP client; subclasses fix the status."""

    status = 500
    default_code = "internal"
    retry_after_s: float | None = None

    def __init__(self, message: str, *, code: str | None = None, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        self.field = field


class BadRequest(ApiError):
    status = 400
    default_code = "invalid_body"


class Unauthorized(ApiError):
    status = 401
    default_code = "unauthenticated"


class Forbidden(ApiError):
    status = 403
    default_code = "forbidden"


class NotFound(ApiError):
    status = 404
    default_code = "not_found"

    def __init__(self, message: str = "not found", **kwargs: str | None) -> None:
        super().__init__(message, **kwargs)


class Conflict(ApiError):
    status = 409
    default_code = "conflict"


class PayloadTooLarge(ApiError):
    status = 413
    default_code = "body_too_large"


class TooManyRequests(ApiError):
    status = 429
    default_code = "rate_limited"

    def __init__(self, message: str, *, retry_after_s: float, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.retry_after_s = retry_after_s


class Unavailable(ApiError):
    status = 503
    default_code = "not_ready"


class Overloaded(Unavailable):
    """Refused before doing the work because a scarce resource is saturated; retry later."""

    default_code = "overloaded"

    def __init__(self, message: str, *, retry_after_s: float, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.retry_after_s = retry_after_s
