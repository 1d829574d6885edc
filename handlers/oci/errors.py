"""Registry failures as ``HandlerError``s, so a handler can let them fail the job as they are.

Every message names the reference (``host/repository:tag``, never with credentials) and what
went wrong, in words an operator can act on.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from runner.sdk import ErrorCode, HandlerError


class RegistryError(HandlerError):
    """Any failure talking to a registry."""

    def __init__(
        self, message: str, *, status: int | None = None, code: ErrorCode | None = None, **details: Any
    ):
        super().__init__(message, code=code, status=status, **details)
        self.status = status


class AuthenticationError(RegistryError):
    """401: missing or wrong credentials."""


class AccessDenied(RegistryError):
    """403: the credentials are valid but may not do this."""


class NotFound(RegistryError):
    """404 / MANIFEST_UNKNOWN / BLOB_UNKNOWN / NAME_UNKNOWN."""


class DigestMismatch(RegistryError):
    """Content whose sha256 is not the digest it was asked for or announced with."""


class UnsupportedMediaType(RegistryError):
    """A manifest of a media type we cannot walk (e.g. Docker schema 1)."""


class TransientError(RegistryError):
    """A failure worth retrying: connection trouble, 5xx, 429."""


class ConfigurationError(RegistryError):
    """A registry configuration the plan got wrong (unknown type, missing credentials...)."""

    code = ErrorCode.INVALID_PLAN


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    out: list[BaseException] = []
    for exc in group.exceptions:
        out.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return out


@contextmanager
def first_error() -> Iterator[None]:
    """Turn an anyio task group's ExceptionGroup back into its first real error.

    Concurrent blob copies fail together (one failure cancels the rest); the job should see
    the one clear error that started it, not a group. Registry errors win over others.
    """
    try:
        yield
    except BaseExceptionGroup as group:
        leaves = [e for e in _leaves(group) if isinstance(e, Exception)]
        if not leaves:
            raise
        preferred = [e for e in leaves if isinstance(e, RegistryError)] or leaves
        raise preferred[0] from None
