"""Registry authentication: anonymous, basic, and the bearer-token challenge flow.

A registry says how it wants to be authenticated in the ``WWW-Authenticate`` header of a 401:
``Basic realm=...`` or ``Bearer realm=...,service=...,scope=...``. The ``Authenticator`` keeps
what it learned per registry: once the registry asked for basic auth, every later request
carries it up front; for bearer, tokens are fetched from the realm and cached **per scope**
(``repository:app:pull`` and ``repository:app:pull,push`` are different tokens) until shortly
before they expire, and a scope first seen after the realm is known gets its token without
another round trip through a 401. Concurrent requests that hit the same 401 share one token
fetch. Credentials and tokens never reach a log line: each value is handed to ``on_secret``
(the job's secret registry) the moment it exists, and ``Credentials`` hides the password from
``repr``.
"""

from __future__ import annotations

import base64
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import anyio
import httpx

from handlers.oci.errors import AccessDenied, AuthenticationError, TransientError

#: Refresh a token this many seconds before the registry says it expires.
_EXPIRY_MARGIN = 10.0
_DEFAULT_TOKEN_LIFETIME = 60.0
_PARAM_RE = re.compile(r'([A-Za-z][A-Za-z0-9_-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))')


@dataclass(frozen=True)
class Credentials:
    """A username and password (or token) for one registry."""

    username: str
    password: str = field(repr=False)

    def basic_header(self) -> str:
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode("ascii")


@dataclass(frozen=True)
class Challenge:
    scheme: str  # "basic" or "bearer", lower case
    params: dict[str, str]


def parse_challenge(header: str | None) -> Challenge | None:
    """Parse one ``WWW-Authenticate`` value (``Bearer realm="...",service="...",scope="..."``)."""
    if not header:
        return None
    scheme, _, rest = header.strip().partition(" ")
    params = {
        m.group(1).lower(): (m.group(2) if m.group(2) is not None else m.group(3))
        for m in _PARAM_RE.finditer(rest)
    }
    params = {k: v.replace('\\"', '"') for k, v in params.items()}
    return Challenge(scheme=scheme.lower(), params=params)


def repository_scope(repository: str, *actions: str) -> str:
    """``repository:<name>:<actions>``, the scope syntax of the distribution token spec."""
    return f"repository:{repository}:{','.join(actions or ('pull',))}"


@dataclass
class _Token:
    value: str
    expires_at: float  # time.monotonic()


class Authenticator:
    """Authentication state for one registry, shared by every request of one client."""

    def __init__(
        self,
        registry: str,
        credentials: Credentials | None = None,
        *,
        on_secret: Callable[[str], None] | None = None,
    ) -> None:
        self.registry = registry
        self.credentials = credentials
        self._on_secret = on_secret or (lambda _value: None)
        self._mode: str | None = None  # None until the registry challenged us
        self._bearer: Challenge | None = None
        self._tokens: dict[str, _Token] = {}
        self._locks: dict[str, anyio.Lock] = {}
        #: How many tokens were fetched (tests assert on caching).
        self.token_fetches = 0
        if credentials is not None:
            self._on_secret(credentials.password)
            self._on_secret(credentials.basic_header().split(" ", 1)[1])

    @property
    def mode(self) -> str | None:
        return self._mode

    async def authorization(self, http: httpx.AsyncClient, scope: str) -> str | None:
        """The Authorization header to send for a request needing ``scope``, if any is known."""
        if self._mode == "basic" and self.credentials is not None:
            return self.credentials.basic_header()
        if self._mode == "bearer" and self._bearer is not None:
            token = self._tokens.get(scope)
            if token is None or token.expires_at <= time.monotonic():
                token = await self._fetch_locked(http, scope, stale=token)
            return "Bearer " + token.value
        return None

    async def challenge(self, http: httpx.AsyncClient, response: httpx.Response, scope: str) -> bool:
        """Learn from a 401; True when a retry with new credentials makes sense."""
        challenge = parse_challenge(response.headers.get("www-authenticate"))
        sent = response.request.headers.get("authorization")
        if challenge is None:
            return False
        if challenge.scheme == "basic":
            if self.credentials is None or sent == self.credentials.basic_header():
                return False  # nothing to offer, or what we offered was refused
            self._mode = "basic"  # (concurrent requests may all learn this at once)
            return True
        if challenge.scheme != "bearer" or not challenge.params.get("realm"):
            return False
        self._mode = "bearer"
        self._bearer = challenge
        stale = self._tokens.get(scope)
        if stale is not None and sent != "Bearer " + stale.value:
            return True  # someone else already refreshed it meanwhile
        if stale is not None and sent is not None:
            # The token we just got was refused: fetch once more (it may have been revoked).
            self._tokens.pop(scope, None)
        await self._fetch_locked(http, scope, stale=stale, extra_scope=challenge.params.get("scope"))
        return True

    async def _fetch_locked(
        self, http: httpx.AsyncClient, scope: str, *, stale: _Token | None, extra_scope: str | None = None
    ) -> _Token:
        lock = self._locks.setdefault(scope, anyio.Lock())
        async with lock:
            current = self._tokens.get(scope)
            if current is not None and current is not stale and current.expires_at > time.monotonic():
                return current
            token = await self._fetch(http, scope, extra_scope)
            self._tokens[scope] = token
            return token

    async def _fetch(self, http: httpx.AsyncClient, scope: str, extra_scope: str | None) -> _Token:
        assert self._bearer is not None
        realm = self._bearer.params["realm"]
        scopes = [s for s in scope.split(" ") if s]
        for s in (extra_scope or "").split(" "):
            if s and s not in scopes:
                scopes.append(s)
        params: list[tuple[str, str | int | float | bool | None]] = []
        if self._bearer.params.get("service"):
            params.append(("service", self._bearer.params["service"]))
        params.extend(("scope", s) for s in scopes)
        headers = {"Accept": "application/json"}
        if self.credentials is not None:
            headers["Authorization"] = self.credentials.basic_header()
        self.token_fetches += 1
        try:
            response = await http.get(realm, params=params, headers=headers)
        except httpx.TransportError as exc:
            raise TransientError(
                f"registry {self.registry}: cannot reach its token service: {type(exc).__name__}"
            ) from None
        if response.status_code in (401, 403):
            who = "the given credentials" if self.credentials else "anonymous access"
            cls = AuthenticationError if response.status_code == 401 else AccessDenied
            raise cls(
                f"registry {self.registry}: its token service refused {who} "
                f"({response.status_code}) for {' '.join(scopes)}",
                status=response.status_code,
            )
        if response.status_code >= 500 or response.status_code == 429:
            raise TransientError(
                f"registry {self.registry}: token service answered {response.status_code}",
                status=response.status_code,
            )
        if response.status_code != 200:
            raise AuthenticationError(
                f"registry {self.registry}: token service answered {response.status_code}",
                status=response.status_code,
            )
        try:
            body = response.json()
            value = str(body.get("token") or body.get("access_token") or "")
            lifetime = float(body.get("expires_in") or _DEFAULT_TOKEN_LIFETIME)
        except (ValueError, AttributeError):
            value, lifetime = "", 0.0
        if not value:
            raise AuthenticationError(f"registry {self.registry}: token service returned no token")
        self._on_secret(value)
        lifetime = max(lifetime - _EXPIRY_MARGIN, min(lifetime, 1.0))
        return _Token(value=value, expires_at=time.monotonic() + lifetime)
