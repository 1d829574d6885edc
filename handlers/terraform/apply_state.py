"""The ``state-json`` document of an apply job, and the provider schemas that make it cheap.

After an apply the contract wants ``terraform show -json`` of the new state. ``state_document``
renders it in the runner from the state terraform just stored (``state_json``) with the cached
provider schemas (``schemas``); when it cannot, it runs ``terraform show -json`` and, alongside,
``terraform providers schema -json`` to fill the cache for the next apply. ``cache_schemas`` is
also called by plan jobs, so the apply that follows a plan on the same runner renders at once.
Caching schemas is only an optimisation: its failures are logged and the job goes on.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import anyio

from handlers.terraform.cli import TerraformCLI
from handlers.terraform.schemas import SchemaCache, locked_versions
from handlers.terraform.state_json import CannotRender, load_state, providers_in_state, render_state_json
from runner.sdk import HandlerError, JobContext, TerraformSettings

#: States up to this size are rendered on the event loop (a few ms at most); larger in a thread.
RENDER_INLINE_BYTES = 64 * 1024


@dataclass(frozen=True)
class RenderAttempt:
    """A rendered document, or why there is none and which schemas would have made one."""

    rendered: bytes | None
    reason: str = ""
    terraform_version: str = ""
    providers: frozenset[str] = frozenset()


def try_render(raw: bytes, cache: SchemaCache, module_dir: Path) -> RenderAttempt:
    """Render ``raw`` (a state file) as ``show -json`` would, or say why not."""
    version, providers = "", frozenset[str]()
    try:
        state = load_state(raw)
        version = str(state.get("terraform_version") or "")
        providers = frozenset(providers_in_state(state))
        schemas = cache.lookup(version, providers, locked_versions(module_dir, version))
        return RenderAttempt(render_state_json(state, schemas))
    except CannotRender as exc:
        return RenderAttempt(None, str(exc), version, providers)
    except Exception as exc:  # noqa: BLE001 - any renderer failure falls back to terraform show -json
        return RenderAttempt(None, f"the renderer failed: {type(exc).__name__}: {exc}", version, providers)


def schema_cache(ctx: JobContext) -> SchemaCache:
    return SchemaCache.in_tools_dir(ctx.tools.tools_dir.absolute())


async def state_document(
    ctx: JobContext,
    cli: TerraformCLI,
    raw_state: bytes,
    module_dir: Path,
    ensure_init: Callable[[], Awaitable[None]],
) -> bytes:
    """``terraform show -json`` of ``raw_state``, rendered here when possible; see the module doc.

    ``ensure_init`` runs ``terraform init`` if the job skipped it: ``show`` and ``providers
    schema`` read the working directory's backend and providers.
    """
    if not ctx.handler_settings(TerraformSettings).shortcuts:
        attempt = RenderAttempt(None, "RUNNER_TERRAFORM_SHORTCUTS is off")
    elif len(raw_state) > RENDER_INLINE_BYTES:  # off the event loop: a large state takes a while
        attempt = await anyio.to_thread.run_sync(try_render, raw_state, schema_cache(ctx), module_dir)
    else:
        attempt = try_render(raw_state, schema_cache(ctx), module_dir)
    if attempt.rendered is not None:
        ctx.log.info("state JSON rendered from the applied state", bytes=len(attempt.rendered))
        return attempt.rendered
    ctx.log.info("state JSON from terraform show -json", reason=attempt.reason)
    await ensure_init()
    shown = b""

    async def show() -> None:
        nonlocal shown
        shown = await cli.show_json()

    async with anyio.create_task_group() as tg:
        tg.start_soon(show)
        tg.start_soon(cache_schemas, ctx, cli, module_dir, attempt.terraform_version, attempt.providers)
    return shown


async def cache_schemas(
    ctx: JobContext, cli: TerraformCLI, module_dir: Path, version: str, providers: frozenset[str]
) -> None:
    """Cache the schemas of ``providers`` (at their locked versions) that are not cached yet."""
    if not version or not providers or not ctx.handler_settings(TerraformSettings).shortcuts:
        return
    cache = schema_cache(ctx)
    versions = locked_versions(module_dir, version)
    if not cache.missing(version, providers, versions):
        return  # all cached, or none that can be (not in the lock file)
    try:
        document = await cli.providers_schema_json()
        stored = await anyio.to_thread.run_sync(cache.store, version, document, versions)
    except (HandlerError, CannotRender, ValueError, OSError) as exc:
        ctx.log.warning("provider schemas not cached", error=str(exc))
        return
    ctx.log.info("provider schemas cached", providers=",".join(stored), terraform_version=version)
