"""API errors in the contract's shape ``{"error", "description", "user_error"}`` (docs/runner-api.md §1.3).

The store and the routes raise these; one exception handler turns them into responses, so no
code path builds an error body by hand.
"""

from __future__ import annotations

from typing import Any


class APIError(Exception):
    status = 500
    error = "internal error"
    user_error = False

    def __init__(self, description: str = "", *, error: str | None = None, body: Any = None) -> None:
        super().__init__(description or self.error)
        self.description = description
        if error is not None:
            self.error = error
        #: A body that replaces the error shape (terraform's lock info on 423/409).
        self.body = body

    def payload(self) -> Any:
        if self.body is not None:
            return self.body
        out: dict[str, Any] = {"error": self.error, "user_error": self.user_error}
        if self.description:
            out["description"] = self.description
        return out


class BadRequest(APIError):
    status = 400
    error = "invalid request"
    user_error = True


class Unauthorized(APIError):
    status = 401
    error = "unauthorized"
    user_error = True


class Forbidden(APIError):
    status = 403
    error = "forbidden"
    user_error = True


class NotFound(APIError):
    status = 404
    error = "not found"
    user_error = True


class MethodNotAllowed(APIError):
    status = 405
    error = "method not allowed"
    user_error = True


class Conflict(APIError):
    status = 409
    error = "conflict"
    user_error = True


class PayloadTooLarge(APIError):
    status = 413
    error = "request body too large"
    user_error = True


class UnsupportedMediaType(APIError):
    status = 415
    error = "unsupported media type"
    user_error = True


class Locked(APIError):
    status = 423
    error = "locked"
    user_error = True
