"""The plan/apply pipeline shared by ``terraform-deploy`` and ``sandbox-terraform``.

``prepare`` checks everything that can be checked before terraform starts (operation, workspace
id, the apply job's plan file, var files), fetches the module, writes the job's files and
resolves the binary: bad input fails here, with nothing planned or applied.

``execute`` runs with the job's backend proxy serving:

* ``create-apply-plan`` / ``create-teardown-plan``: ``init``, ``plan [-destroy] -out``,
  ``show -json``; the result carries the raw plan file and the gzipped JSON
  (docs/runner-api.md §7.5, via ``encode_plan_result``); outputs are the current state's outputs.
* ``apply-plan``: ``init`` (skipped when the plugin cache has what the plan needs: ``install``),
  hooks, ``apply <planfile>``, hooks, then the JSON form of the new state, which is POSTed to
  ``state-json`` and gives the outputs (values only; sensitive values are registered for
  masking). ``apply_state`` renders that JSON in the runner from the state terraform just
  stored, or runs ``terraform show -json``; plan jobs cache the provider schemas it needs.

The backend proxy registers the release of the workspace lock on the job's exit stack
(``ctx.resources``): if this job's terraform still holds it (killed after the grace period, or
crashed), the lock is released by its own lock ID only, after ``cleanup``, whatever happened.

In sandbox mode ``sandbox`` stands in for ``execute``: it stores the plan's fake state and its
JSON form in the job's workspace, as a real apply would.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from handlers.common.toolcache import file_lock
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
from runner.sdk import (
    APIRequestFailed,
    APIUnreachable,
    ErrorCode,
    Handler,
    HandlerError,
    JobContext,
    ResultRequest,
    SecretRegistry,
    TerraformSettings,
    sandbox_bytes,
)
from runner.sdk.plans import SandboxMode, encode_plan_result

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


@dataclass
class PreparedRun:
    """What ``prepare`` established and ``execute`` runs with: all of it, or no run at all."""

    inputs: TerraformInputs
    #: The job's private files (var files, CLI config, plan file, kubeconfig); absolute.
    runner_dir: Path
    module_dir: Path
    binary: TerraformBinary
    var_files: list[Path]
    env: dict[str, str]
    hook_env: dict[str, str] = field(default_factory=dict)
    #: The saved plan of an apply job (None for plan jobs).
    plan_file: PlanFile | None = None


class TerraformRunHandler(Handler):
    """Base of the deploy and sandbox handlers; subclasses say where the module comes from."""

    operations: ClassVar[frozenset[str]] = OPERATIONS
    settings_model = TerraformSettings
    #: Which app config key names the version: ``sandbox.terraform_version`` or
    #: ``terraform_module.version``.
    sandbox_version_key: ClassVar[bool] = False

    def __init__(self) -> None:
        self._prepared: PreparedRun | None = None
        #: The job's backend proxy, once ``execute`` started it (the lock-conflict message and
        #: the init-and-retry decision read what it saw).
        self.proxy: BackendProxy | None = None
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

    @property
    def prepared(self) -> PreparedRun:
        if self._prepared is None:
            raise HandlerError("terraform: execute ran before a successful prepare")
        return self._prepared

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
        plan_file: PlanFile | None = None
        if operation == APPLY_PLAN:
            plan_file = decode_plan_file(inputs.apply_plan_contents)
            ctx.log.info("apply plan decoded", bytes=len(plan_file.raw), mode=plan_file.mode)
        register_env_secrets(inputs.env_vars, ctx.secrets)

        # Absolute: terraform runs in the module directory, and it gets file paths.
        runner_dir = private_dir(ctx.workspace.absolute() / ".runner")
        variables = dict(inputs.vars)
        if inputs.policies:
            # Relative to the module directory (terraform's working directory): the path is baked
            # into the saved plan, so it must be the same in the plan job and the apply job.
            variables[POLICY_DIR_VAR] = POLICY_DIR_NAME
        var_files = write_var_files(runner_dir, variables, inputs.vars_files)

        module_dir = (await self.fetch_module(ctx)).absolute()
        prepare_module(module_dir, ctx.log)
        masked = register_variable_secrets(inputs.vars, inputs.vars_files, module_dir, ctx.secrets)
        if masked:
            ctx.log.info("secret variables are masked in the logs", variables=masked)
        if inputs.policies:
            policy_dir = write_policies(module_dir / POLICY_DIR_NAME, inputs.policies)
            ctx.log.info("policies written", count=len(inputs.policies), directory=str(policy_dir))

        settings = ctx.handler_settings(TerraformSettings)
        app_id, app_config_id, component_id = self.version_hints(ctx)
        request = await requested_version(
            ctx,
            app_id=app_id,
            app_config_id=app_config_id,
            plan_version=inputs.terraform_version,
            sandbox=self.sandbox_version_key,
            component_id=component_id,
        )
        tools_dir = ctx.tools.tools_dir.absolute()
        binary = await resolve_binary(
            request,
            tools_dir=tools_dir,
            mirror_url=settings.mirror_url,
            processes=ctx.processes,
            log=ctx.log,
        )
        cli_config = write_cli_config(
            runner_dir / "terraform.rc",
            tools_dir=tools_dir,
            provider_mirror=settings.provider_mirror,
        )
        env, hook_env = await self._terraform_env(ctx, inputs, runner_dir, cli_config)
        self._prepared = PreparedRun(
            inputs=inputs,
            runner_dir=runner_dir,
            module_dir=module_dir,
            binary=binary,
            var_files=var_files,
            env=env,
            hook_env=hook_env,
            plan_file=plan_file,
        )

    async def _terraform_env(
        self, ctx: JobContext, inputs: TerraformInputs, runner_dir: Path, cli_config: Path
    ) -> tuple[dict[str, str], dict[str, str]]:
        """(terraform's environment, the hooks' environment)."""
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
            kubeconfig = write_kubeconfig(runner_dir / "kubeconfig", cluster, cluster_aws or aws)
            env["KUBECONFIG"] = str(kubeconfig)
            env.update(cluster.env_vars or {})
            register_env_secrets(cluster.env_vars or {}, ctx.secrets)
        env.update(AUTOMATION_ENV)
        env["TF_CLI_CONFIG_FILE"] = str(cli_config)
        hook_env: dict[str, str] = {}
        hooks = inputs.hooks
        if hooks is not None and hooks.enabled:
            hook_env = dict(hooks.env_vars or {})
            register_env_secrets(hook_env, ctx.secrets)
            hook_env.update(
                await aws_env(hooks.run_auth, secrets=ctx.secrets, log=ctx.log, default_session_name=session)
            )
        return env, hook_env

    # ------------------------------------------------------------------ execute
    async def execute(self, ctx: JobContext) -> None:
        run = self.prepared
        proxy = BackendProxy(ctx.api, workspace_id=run.inputs.workspace_id, job_id=ctx.job.id, log=ctx.log)
        self.proxy = proxy
        ctx.secrets.register(proxy.prefix.strip("/"))
        ctx.resources.push_async_callback(self._release_lock, ctx, proxy)
        async with proxy.serving():
            cli = TerraformCLI(
                binary=run.binary.path,
                cwd=run.module_dir,
                env={**run.env, **proxy.terraform_env()},
                processes=ctx.processes,
                log=ctx.log,
                tools_dir=ctx.tools.tools_dir.absolute(),
                grace_period=ctx.tools.child_grace,
            )
            try:
                if ctx.operation == APPLY_PLAN:
                    await self._install_for_apply(ctx, run, cli)
                    await self._apply(ctx, run, proxy, cli)
                else:
                    await self._init(cli)
                    await self._plan(ctx, run, cli, destroy=ctx.operation == CREATE_TEARDOWN_PLAN)
            except TerraformFailed as exc:
                raise self._explain_lock_conflict(run, proxy, exc) from exc

    async def _init(self, cli: TerraformCLI) -> None:
        if not self.initialized:
            await cli.init()
            self.initialized = True

    async def _install_for_apply(self, ctx: JobContext, run: PreparedRun, cli: TerraformCLI) -> None:
        """``init``, unless the plugin cache already has all the plan needs (``install``)."""
        assert run.plan_file is not None, "an apply job decodes its plan file in prepare"
        tools_dir = ctx.tools.tools_dir.absolute()
        needs = run.plan_file.needs
        if not ctx.handler_settings(TerraformSettings).shortcuts:
            reason = "RUNNER_TERRAFORM_SHORTCUTS is off"
        else:
            async with file_lock(plugin_cache_lock(tools_dir)):
                reason = install_without_init(
                    run.module_dir, needs, plugin_cache_dir(tools_dir), platform_suffix()
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

    def _retry_with_init(self, proxy: BackendProxy, cli: TerraformCLI) -> bool:
        """After a failed apply: were the providers linked without init refused, nothing stored?"""
        output = cli.last_output
        return refused_linked_providers(
            init_skipped=self.init_skipped and not self.initialized,
            state_stored=proxy.last_state is not None,
            error_summaries=[d.summary for d in output.errors()] if output is not None else [],
        )

    @staticmethod
    def _explain_lock_conflict(
        run: PreparedRun, proxy: BackendProxy, exc: TerraformFailed
    ) -> TerraformFailed:
        """Name the holder first when terraform failed because someone else holds the lock."""
        holder = proxy.conflict
        if not holder:
            return exc
        who = ", ".join(f"{key} {holder[key]}" for key in ("operation", "who", "created") if holder.get(key))
        message = f"workspace {run.inputs.workspace_id} is locked by lock ID {holder.get('id', '')}"
        message += f" ({who})" if who else ""
        failed = TerraformFailed(f"{message}; {exc}")
        failed.details = {**exc.details, "lock_holder": str(holder.get("id", ""))}
        return failed

    async def _plan(self, ctx: JobContext, run: PreparedRun, cli: TerraformCLI, *, destroy: bool) -> None:
        planfile = run.runner_dir / "tfplan"
        await cli.plan(planfile, destroy=destroy, var_files=run.var_files)
        display = await cli.show_json(planfile)
        raw = planfile.read_bytes()
        ctx.set_result(ResultRequest(success=True, **encode_plan_result(raw, display)))
        ctx.log.info("plan created", operation=ctx.operation, plan_bytes=len(raw), display_bytes=len(display))
        ctx.set_outputs(output_values(await cli.output_json(), ctx.secrets))
        providers = frozenset(providers_in_plan(display))
        await cache_schemas(ctx, cli, run.module_dir, terraform_version_of(display), providers)

    @staticmethod
    def _hooks(ctx: JobContext, run: PreparedRun) -> Hooks:
        hooks = run.inputs.hooks
        return Hooks(
            module_dir=run.module_dir,
            env=run.hook_env,
            processes=ctx.processes,
            log=ctx.log,
            enabled=bool(hooks is not None and hooks.enabled),
        )

    async def _apply(self, ctx: JobContext, run: PreparedRun, proxy: BackendProxy, cli: TerraformCLI) -> None:
        assert run.plan_file is not None, "an apply job decodes its plan file in prepare"
        planfile = write_private(run.runner_dir / "tfplan", run.plan_file.raw)
        kind = "destroy" if run.plan_file.is_destroy else "apply"
        hooks = self._hooks(ctx, run)
        await hooks.run("pre", kind)
        try:
            try:
                await cli.apply(planfile)
            except TerraformFailed as exc:
                if not self._retry_with_init(proxy, cli):
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

        raw_state = await proxy.current_state()
        state = await state_document(ctx, cli, raw_state, run.module_dir, lambda: self._init(cli))
        await _store_state_json(ctx, run.inputs.workspace_id, state, applied=True)
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

    @staticmethod
    async def _release_lock(ctx: JobContext, proxy: BackendProxy) -> None:
        """On the job's exit stack: release this job's lock if its terraform still holds it."""
        released = await proxy.release_held_lock()
        if released:
            ctx.log.warning("workspace unlocked after an interrupted terraform run", lock_id=released)

    # ------------------------------------------------------------------ sandbox mode
    async def sandbox(self, ctx: JobContext, block: SandboxMode) -> None:
        """The fake plan contents and outputs, plus what a real apply leaves behind: the fake
        state (the plan's ``sandbox_mode.terraform.state_json``) in the job's workspace, and its
        JSON form."""
        await super().sandbox(ctx, block)
        fake = block.terraform
        if fake is None or not fake.state_json:
            return
        workspace_id = fake.workspace_id or self._plan_workspace_id(ctx)
        if not workspace_id:
            return
        state = sandbox_bytes(fake.state_json)
        try:
            await ctx.api.put_terraform_state(workspace_id, ctx.job.id, state)
        except (APIRequestFailed, APIUnreachable) as exc:
            raise HandlerError(f"sandbox mode: the fake state could not be stored: {exc}") from exc
        await _store_state_json(ctx, workspace_id, state, applied=False)

    def _plan_workspace_id(self, ctx: JobContext) -> str:
        try:
            return self.read_inputs(ctx).workspace_id
        except HandlerError:
            return ""


async def _store_state_json(ctx: JobContext, workspace_id: str, state: bytes, *, applied: bool) -> None:
    try:
        await ctx.api.post_terraform_state_json(workspace_id, ctx.job.id, state)
    except (APIRequestFailed, APIUnreachable) as exc:
        what = "applied, but the state JSON" if applied else "sandbox mode: the state JSON"
        raise HandlerError(f"{what} could not be stored: {exc}", code=ErrorCode.HANDLER_ERROR) from exc
    ctx.log.info("state JSON stored", workspace_id=workspace_id, bytes=len(state))
