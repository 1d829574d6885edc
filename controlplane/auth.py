"""Who is calling, and what they may touch.

Three kinds of bearer token exist (docs/runner-api.md §1.1, §5.4):
* ``admin``: everything, including the operator API;
* ``runner``: its own runner's endpoints, and the jobs, executions, log streams and terraform
  workspaces of that runner and its org;
* ``log_stream``: may only POST logs to its own stream.
Ownership is checked by passing the principal's runner or org into the store query, so a job of
another runner looks exactly like an unknown one (404) and costs no extra query.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from starlette.requests import Request

from controlplane.errors import Forbidden, Unauthorized

ADMIN = "admin"
RUNNER = "runner"
LOG_STREAM = "log_stream"

#: Prefix of a stored token hash (a stored value without it is a plain token of an older database).
HASH_PREFIX = "sha256:"


def token_hash(token: str) -> str:
    """What the database keeps of a bearer token.

    A plain SHA-256 is enough: tokens are ~119 random bits (``controlplane.ids``), so there is
    nothing to guess and no need for a slow, salted hash; a copy of ``controlplane.db`` then
    gives no one the runner's or the admin's token. The tokens themselves live only in
    ``credentials.json`` (0600) and with the runner.
    """
    return HASH_PREFIX + hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Principal:
    kind: str
    org_id: str
    runner_id: str | None = None
    log_stream_id: str | None = None
    expires_at: int | None = None

    @property
    def is_admin(self) -> bool:
        return self.kind == ADMIN

    def runner_scope(self) -> str | None:
        """The runner a query must be limited to; None for admin (no limit)."""
        if self.kind == ADMIN:
            return None
        if self.kind == RUNNER:
            return self.runner_id
        raise Forbidden("a log stream token may only write logs to its stream")

    def require_admin(self) -> None:
        if self.kind != ADMIN:
            raise Forbidden("this operation needs the admin token")

    def require_runner(self, runner_id: str) -> None:
        """The caller may act for ``runner_id`` (admin, or that runner's own token)."""
        if self.kind == ADMIN:
            return
        if self.kind == RUNNER and self.runner_id == runner_id:
            return
        raise Forbidden(f"this token may not act for runner {runner_id}")

    def require_org_member(self) -> str:
        if self.kind == LOG_STREAM:
            raise Forbidden("a log stream token may only write logs to its stream")
        return self.org_id


def bearer_token(request: Request) -> str:
    """``Authorization: Bearer <t>``, else ``?token=<t>`` (terraform's http backend sends no header)."""
    header = request.headers.get("authorization")
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
        raise Unauthorized("malformed Authorization header: expected 'Bearer <token>'")
    token = request.query_params.get("token")
    if token:
        return token
    raise Unauthorized("missing bearer token (Authorization header or ?token=)")
