"""The plan/apply pipeline shared by ``terraform-deploy`` and ``sandbox-terraform``.

``prepare`` checks everything that can be checked before terraform starts (operation, workspace
id, the apply job's plan file, var files), fetches the module, writes the job's files and
resolves the binary: bad input fails here, with nothing planned or applied.

``execute`` runs with the job's backend proxy serving:

* ``create-apply-plan`` / ``create-teardown-plan``: ``init``, ``plan [-destroy] -out``,
  ``show -json``; the result carries the raw plan file and the gzipped JSON (runner-api.md
  §7.5, via ``encode_plan_result``); outputs are the current state's outputs.
* ``apply-plan``: ``init`` (skipped when the plugin cache has what the plan needs: ``install``),
  hooks, ``apply <planfile>``, hooks, then the JSON form of the new state, which is POSTed to
  ``state-json`` and gives the outputs (values only; sensitive values are registered for
  masking). ``apply_state`` renders that JSON in the runner from the state terraform just
  stored, or runs ``terraform show -json``; plan jobs cache the provider schemas it needs.

``cleanup`` releases the workspace lock if this job's terraform still holds it (killed after
the grace period, or crashed), by its own lock ID only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

from handlers.terraform.apply_state import cache_schemas, state_document
from handlers.terraform.backend_proxy import BackendProxy
from handlers.terraform.binary import TerraformBinary, platform_suffix, requested_version, resolve_binary
from handlers.terraform.cli import TerraformCLI, TerraformFailed
from handlers.terraform.cli_config import (
    AUTOMATION_ENV,
    plugin_cache_dir,
    plugin_cache_lock,
    write_cli_config,
)
from handlers.terraform.credentials import aws_env, azure_env, register_env_secrets
from handlers.terraform.filelock import file_lock
from handlers.terraform.hooks import Hooks
from handlers.terraform.install import install_without_init, refused_linked_providers
from handlers.terraform.planfile import PlanFile, decode_plan_file
from handlers.terraform.schemas import providers_in_plan, terraform_version_of
from handlers.terraform.sensitive import register_variable_secrets
from handlers.terraform.workspace import (
    POLICY_DIR_NAME,
    POLICY_DIR_VAR,
    InvalidInput,
    TerraformInputs,
    prepare_module,
    private_dir,
    write_kubeconfig,
    write_policies,
    write_private,
    write_var_files,
)
from runner.api.client import APIError, TransportError
from runner.api.models import ErrorCode, ResultRequest
from runner.api.plans import encode_plan_result
from runner.handler import Handler, HandlerError, JobContext, SecretRegistry

CREATE_APPLY_PLAN = "create-apply-plan"
CREATE_TEARDOWN_PLAN = "create-teardown-plan"
APPLY_PLAN = "apply-plan"
OPERATIONS = frozenset({CREATE_APPLY_PLAN, CREATE_TEARDOWN_PLAN, APPLY_PLAN})


def register_sensitive(value: Any, secrets: SecretRegistry) -> None:
    """Register every string leaf of a sensitive output (and its JSON form) for masking."""
    if isinstance(value, str):
        secrets.register(value)
    elif isinstance(value, dict):
        for item in value.values():
            register_sensitive(item, secrets)
        secrets.register(json.dumps(value))
    elif isinstance(value, list):
        for item in value:
            register_sensitive(item, secrets)
        secrets.register(json.dumps(value))
    elif isinstance(value, int | float) and not isinstance(value, bool) and len(str(value)) >= 4:
        secrets.register(str(value))


def output_values(outputs: dict[str, Any], secrets: SecretRegistry) -> dict[str, Any]:
    """``{name: {value, sensitive, type}}`` -> ``{name: value}``, registering sensitive values."""
    values: dict[str, Any] = {}
    for name, item in outputs.items():
        if not isinstance(item, dict):
            continue
        value = item.get("value")
        if item.get("sensitive"):
            register_sensitive(value, secrets)
        values[name] = value
    return values


class TerraformRunHandler(Handler):
    """Base of the deploy and sandbox handlers; subclasses say where the module comes from."""

    operations: ClassVar[frozenset[str]] = OPERATIONS
    #: Which app config key names the version: ``sandbox.terraform_version`` or
    #: ``terraform_module.version``.
    sandbox_version_key: ClassVar[bool] = False

    def __init__(self) -> None:
        self.inputs: TerraformInputs | None = None
        self.module_dir: Path | None = None
        self.runner_dir: Path | None = None
        self.plan_file: PlanFile | None = None
        self.var_files: list[Path] = []
        self.binary: TerraformBinary | None = None
        self.env: dict[str, str] = {}
        self.hook_env: dict[str, str] = {}
        self.proxy: BackendProxy | None = None
        self.cli: TerraformCLI | None = None
        self.cancelled = False
        self.initialized = False
        self.init_skipped = False

    # ------------------------------------------------------------------ subclass API
    def read_inputs(self, ctx: JobContext) -> TerraformInputs:
        raise NotImplementedError

    async def fetch_module(self, ctx: JobContext) -> Path:
        """Put the module into the workspace and return its directory."""
        raise NotImplementedError

    def version_hints(self, ctx: JobContext) -> tuple[str, str, str]:
        """(app_id, app_config_id, component_id) used to read the app config."""
        raise NotImplementedError

    # ------------------------------------------------------------------ prepare
    async def prepare(self, ctx: JobContext) -> None:
        operation = ctx.operation
        if operation not in OPERATIONS:
            raise InvalidInput(
                f"unsupported operation {operation!r} for {ctx.job_type}; expected one of "
                + ", ".join(sorted(OPERATIONS)),
                operation=operation,
            )
        inputs = self.read_inputs(ctx)
        if not inputs.workspace_id:
            raise InvalidInput("the plan has no terraform_backend.WorkspaceID: nowhere to keep the state")
        if operation == APPLY_PLAN:
            self.plan_file = decode_plan_file(inputs.apply_plan_contents)
            ctx.log.info("apply plan decoded", bytes=len(self.plan_file.raw), mode=self.plan_file.mode)
        self.inputs = inputs
        register_env_secrets(inputs.env_vars, ctx.secrets)

        # Absolute: terraform runs in the module directory, and it gets file paths.
        self.runner_dir = private_dir(ctx.workspace.absolute() / ".runner")
        variables = dict(inputs.vars)
        if inputs.policies:
            # Relative to the module directory (terraform's working directory): the path is baked
            # into the saved plan, so it must be the same in the plan job and the apply job.
            variables[POLICY_DIR_VAR] = POLICY_DIR_NAME
        self.var_files = write_var_files(self.runner_dir, variables, inputs.vars_files)

        self.module_dir = (await self.fetch_module(ctx)).absolute()
        prepare_module(self.module_dir, ctx.log)
        masked = register_variable_secrets(inputs.vars, inputs.vars_files, self.module_dir, ctx.secrets)
        if masked:
            ctx.log.info("secret variables are masked in the logs", variables=masked)
        if inputs.policies:
            policy_dir = write_policies(self.module_dir / POLICY_DIR_NAME, inputs.policies)
            ctx.log.info("policies written", count=len(inputs.policies), directory=str(policy_dir))

        app_id, app_config_id, component_id = self.version_hints(ctx)
        request = await requested_version(
            ctx,
            app_id=app_id,
            app_config_id=app_config_id,
            plan_version=inputs.terraform_version,
            sandbox=self.sandbox_version_key,
            component_id=component_id,
        )
        tools_dir = ctx.config.resolved_tools_dir.absolute()
        self.binary = await resolve_binary(
            request,
            tools_dir=tools_dir,
            mirror_url=ctx.config.terraform_mirror_url,
            processes=ctx.processes,
            log=ctx.log,
        )
        cli_config = write_cli_config(
            self.runner_dir / "terraform.rc",
            tools_dir=tools_dir,
            provider_mirror=ctx.config.terraform_provider_mirror,
        )
        self.env = await self._terraform_env(ctx, inputs, cli_config)

    async def _terraform_env(
        self, ctx: JobContext, inputs: TerraformInputs, cli_config: Path
    ) -> dict[str, str]:
        assert self.runner_dir is not None
        session = f"byoc-runner-{ctx.job.id}"[:64]
        env: dict[str, str] = dict(inputs.env_vars)
        aws = await aws_env(inputs.aws_auth, secrets=ctx.secrets, log=ctx.log, default_session_name=session)
        env.update(aws)
        env.update(azure_env(inputs.azure_auth, secrets=ctx.secrets))
        cluster = inputs.cluster_info
        if cluster is not None and (cluster.endpoint or cluster.kube_config):
            cluster_aws = await aws_env(
                cluster.aws_auth, secrets=ctx.secrets, log=ctx.log, default_session_name=session
            )
            kubeconfig = write_kubeconfig(self.runner_dir / "kubeconfig", cluster, cluster_aws or aws)
            env["KUBECONFIG"] = str(kubeconfig)
            env.update(cluster.env_vars or {})
            register_env_secrets(cluster.env_vars or {}, ctx.secrets)
        env.update(AUTOMATION_ENV)
        env["TF_CLI_CONFIG_FILE"] = str(cli_config)
        hooks = inputs.hooks
        if hooks is not None and hooks.enabled:
            self.hook_env = dict(hooks.env_vars or {})
            register_env_secrets(self.hook_env, ctx.secrets)
            self.hook_env.update(
                await aws_env(hooks.run_auth, secrets=ctx.secrets, log=ctx.log, default_session_name=session)
            )
        return env

    # ------------------------------------------------------------------ execute
    async def execute(self, ctx: JobContext) -> None:
        assert self.inputs is not None
        assert self.module_dir is not None
        assert self.binary is not None
        self.proxy = BackendProxy(
            ctx.api, workspace_id=self.inputs.workspace_id, job_id=ctx.job.id, log=ctx.log
        )
        ctx.secrets.register(self.proxy.prefix.strip("/"))
        async with self.proxy.serving():
            self.cli = TerraformCLI(
                binary=self.binary.path,
                cwd=self.module_dir,
                env={**self.env, **self.proxy.terraform_env()},
                processes=ctx.processes,
                log=ctx.log,
                tools_dir=ctx.config.resolved_tools_dir.absolute(),
                grace_period=ctx.config.child_grace,
            )
            try:
                if ctx.operation == APPLY_PLAN:
                    await self._install_for_apply(ctx, self.cli)
                    await self._apply(ctx, self.cli)
                else:
                    await self._init(self.cli)
                    await self._plan(ctx, self.cli, destroy=ctx.operation == CREATE_TEARDOWN_PLAN)
            except TerraformFailed as exc:
                raise self._explain_lock_conflict(exc) from exc

    async def _init(self, cli: TerraformCLI) -> None:
        if not self.initialized:
            await cli.init()
            self.initialized = True

    async def _install_for_apply(self, ctx: JobContext, cli: TerraformCLI) -> None:
        """``init``, unless the plugin cache already has all the plan needs (``install``)."""
        assert self.plan_file is not None
        assert self.module_dir is not None
        tools_dir = ctx.config.resolved_tools_dir.absolute()
        needs = self.plan_file.needs
        if not ctx.config.terraform_shortcuts:
            reason = "RUNNER_TERRAFORM_SHORTCUTS is off"
        else:
            async with file_lock(plugin_cache_lock(tools_dir)):
                reason = install_without_init(
                    self.module_dir, needs, plugin_cache_dir(tools_dir), platform_suffix()
                )
        if reason:
            ctx.log.info("terraform init needed", reason=reason)
            await self._init(cli)
            return
        self.init_skipped = True
        ctx.log.info(
            "terraform init skipped: what the saved plan needs is in place",
            providers=", ".join(f"{a} {v}" for a, v in sorted(needs.providers.items())) or "none",
        )

    def _retry_with_init(self, cli: TerraformCLI) -> bool:
        """After a failed apply: were the providers linked without init refused, nothing stored?"""
        output = cli.last_output
        return refused_linked_providers(
            init_skipped=self.init_skipped and not self.initialized,
            state_stored=self.proxy is None or self.proxy.last_state is not None,
            error_summaries=[d.summary for d in output.errors()] if output is not None else [],
        )

    def _explain_lock_conflict(self, exc: TerraformFailed) -> TerraformFailed:
        """Name the holder first when terraform failed because someone else holds the lock."""
        holder = self.proxy.conflict if self.proxy is not None else None
        if not holder or self.inputs is None:
            return exc
        who = ", ".join(f"{key} {holder[key]}" for key in ("operation", "who", "created") if holder.get(key))
        message = f"workspace {self.inputs.workspace_id} is locked by lock ID {holder.get('id', '')}"
        message += f" ({who})" if who else ""
        failed = TerraformFailed(f"{message}; {exc}")
        failed.details = {**exc.details, "lock_holder": str(holder.get("id", ""))}
        return failed

    async def _plan(self, ctx: JobContext, cli: TerraformCLI, *, destroy: bool) -> None:
        assert self.runner_dir is not None
        planfile = self.runner_dir / "tfplan"
        await cli.plan(planfile, destroy=destroy, var_files=self.var_files)
        display = await cli.show_json(planfile)
        raw = planfile.read_bytes()
        ctx.set_result(ResultRequest(success=True, **encode_plan_result(raw, display)))
        ctx.log.info("plan created", operation=ctx.operation, plan_bytes=len(raw), display_bytes=len(display))
        ctx.set_outputs(output_values(await cli.output_json(), ctx.secrets))
        assert self.module_dir is not None
        providers = frozenset(providers_in_plan(display))
        await cache_schemas(ctx, cli, self.module_dir, terraform_version_of(display), providers)

    def _hooks(self, ctx: JobContext) -> Hooks:
        assert self.module_dir is not None
        assert self.inputs is not None
        hooks = self.inputs.hooks
        return Hooks(
            module_dir=self.module_dir,
            env=self.hook_env,
            processes=ctx.processes,
            log=ctx.log,
            enabled=bool(hooks is not None and hooks.enabled),
        )

    async def _apply(self, ctx: JobContext, cli: TerraformCLI) -> None:
        assert self.runner_dir is not None
        assert self.plan_file is not None
        assert self.inputs is not None
        planfile = write_private(self.runner_dir / "tfplan", self.plan_file.raw)
        kind = "destroy" if self.plan_file.is_destroy else "apply"
        hooks = self._hooks(ctx)
        await hooks.run("pre", kind)
        try:
            try:
                await cli.apply(planfile)
            except TerraformFailed as exc:
                if not self._retry_with_init(cli):
                    raise
                ctx.log.warning(
                    "the linked providers were refused; running init and applying again", error=str(exc)
                )
                await self._init(cli)
                await cli.apply(planfile)
        except HandlerError:
            await hooks.run("error", kind, must_succeed=False)
            raise
        await hooks.run("post", kind)

        assert self.proxy is not None
        assert self.module_dir is not None
        raw_state = await self.proxy.current_state()
        state = await state_document(ctx, cli, raw_state, self.module_dir, lambda: self._init(cli))
        try:
            await ctx.api.post_state_json(self.inputs.workspace_id, ctx.job.id, state)
        except (APIError, TransportError) as exc:
            raise HandlerError(
                f"applied, but the state JSON could not be stored: {exc}", code=ErrorCode.HANDLER_ERROR
            ) from exc
        ctx.log.info("state JSON stored", workspace_id=self.inputs.workspace_id, bytes=len(state))
        try:
            document = json.loads(state or b"{}")
        except json.JSONDecodeError:
            document = {}
        outputs = (document.get("values") or {}).get("outputs") or {} if isinstance(document, dict) else {}
        ctx.set_outputs(output_values(outputs, ctx.secrets))

    # ------------------------------------------------------------------ cancel / cleanup
    async def cancel(self, ctx: JobContext) -> None:
        # The process runner interrupts terraform (SIGINT, grace, SIGKILL); nothing else to stop.
        self.cancelled = True

    async def cleanup(self, ctx: JobContext) -> None:
        if self.proxy is not None:
            released = await self.proxy.release_held_lock()
            if released:
                ctx.log.warning("workspace unlocked after an interrupted terraform run", lock_id=released)
