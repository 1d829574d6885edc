"""Request and response plumbing shared by every route: auth, bounded bodies, JSON in and out.

Nothing here knows about jobs or terraform; it turns HTTP into validated Python values and
``APIError`` into the contract's error shape.
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from controlplane.auth import Principal, bearer_token
from controlplane.errors import BadRequest, PayloadTooLarge, Unauthorized
from controlplane.options import ControlPlaneOptions
from controlplane.store import Store
from controlplane.wire import dumps

M = TypeVar("M", bound=BaseModel)

JSON_TYPE = "application/json"
#: Largest integer query parameter (offsets, pages): SQLite integers are 64-bit.
QUERY_INT_MAX = 2**31 - 1


class JSONResponse(Response):
    """Compact JSON: no spaces (docs/runner-api.md §14.5), no pretty printing, no escaping of UTF-8."""

    media_type = JSON_TYPE

    def render(self, content: Any) -> bytes:
        return dumps(content)


def json_response(
    content: Any, status_code: int = 200, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(content, status_code=status_code, headers=headers)


def store_of(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


def options_of(request: Request) -> ControlPlaneOptions:
    options: ControlPlaneOptions = request.app.state.options
    return options


def base_url(request: Request) -> str:
    """The URL this client reached us at: what it should use for logs and terraform too."""
    return str(request.base_url).rstrip("/")


async def authenticate(request: Request) -> Principal:
    token = bearer_token(request)
    principal = await store_of(request).principal(token)
    if principal is None:
        raise Unauthorized("unknown or expired token")
    return principal


async def read_body(request: Request) -> bytes:
    """The request body, refused with 413 past ``max_body_bytes`` (checked while streaming)."""
    limit = options_of(request).max_body_bytes
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise PayloadTooLarge(f"the body is {declared} bytes; the limit is {limit}")
        except ValueError:
            raise BadRequest("invalid Content-Length header") from None
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"the body exceeds the limit of {limit} bytes")
            chunks.append(chunk)
    except ClientDisconnect:
        raise BadRequest("the client went away while sending the body") from None
    return b"".join(chunks)


async def read_json(request: Request, *, empty: Any = ...) -> Any:
    """The body as JSON; an empty body gives ``empty`` when one is given, else 400."""
    body = await read_body(request)
    if not body.strip():
        if empty is not ...:
            return empty
        raise BadRequest("the request body is empty; a JSON body is required", error="invalid request format")
    try:
        value = json.loads(body)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise BadRequest(f"malformed JSON: {exc}", error="invalid request format") from None
    if b"\\u" in body and b"\\ud" in body.lower():
        # A "\udXXX" escape may be a lone surrogate, which no database column or UTF-8
        # response can hold: refuse it here rather than fail later.
        try:
            json.dumps(value, ensure_ascii=False).encode()
        except UnicodeEncodeError:
            raise BadRequest(
                "malformed JSON: lone surrogate in a string", error="invalid request format"
            ) from None
    return value


def validate(model: type[M], data: Any) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'body'}: {err['msg']}" for err in exc.errors()[:5]
        )
        raise BadRequest(problems, error="invalid request") from None


async def read_model(request: Request, model: type[M], *, empty: Any = ...) -> M:
    return validate(model, await read_json(request, empty=empty))


def query_int(
    request: Request, name: str, default: int, *, minimum: int = 0, maximum: int | None = None
) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"invalid {name}: {raw!r} is not an integer", error=f"invalid {name}") from None
    if value < minimum:
        raise BadRequest(f"invalid {name}: must be at least {minimum}", error=f"invalid {name}")
    if value > QUERY_INT_MAX:
        raise BadRequest(f"invalid {name}: must be at most {QUERY_INT_MAX}", error=f"invalid {name}")
    if maximum is not None and value > maximum:
        value = maximum
    return value
