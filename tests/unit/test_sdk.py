"""The handler SDK: family settings, runner.testing's driver, the sandbox hook, the ports."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, ClassVar

import anyio
import pytest

from runner.adapters import tool_settings
from runner.config import ConfigError, load_config
from runner.sandbox import SandboxHandler, SandboxTiming
from runner.sdk import (
    APIRequestFailed,
    Handler,
    HandlerError,
    HandlerSettings,
    JobContext,
    SettingsError,
    SettingsSource,
    TerraformSettings,
    fake_plan_result,
)
from runner.sdk.plans import SandboxMode
from runner.testing import NoAPI, make_context, run_handler

pytestmark = [pytest.mark.unit, pytest.mark.anyio]

BASE = {"RUNNER_ID": "runabc", "RUNNER_API_URL": "http://127.0.0.1:1/", "RUNNER_API_TOKEN": "tok-secret"}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# --------------------------------------------------------------------------- family settings


@dataclasses.dataclass(frozen=True)
class WidgetSettings(HandlerSettings):
    """A third-party family: nothing in runner/config.py knows it."""

    prefix: ClassVar[str] = "RUNNER_WIDGET_"
    size: int = 3
    colour: str = "blue"
    fast: bool = False
    hosts: tuple[str, ...] = ()


def test_a_family_parses_its_own_prefix() -> None:
    parsed = WidgetSettings.from_source(
        {"RUNNER_WIDGET_SIZE": "7", "RUNNER_WIDGET_FAST": "yes", "RUNNER_WIDGET_HOSTS": "a, b", "OTHER": "x"}
    )
    assert parsed == WidgetSettings(size=7, colour="blue", fast=True, hosts=("a", "b"))
    assert WidgetSettings.env_names()["colour"] == "RUNNER_WIDGET_COLOUR"
    assert WidgetSettings.file_key("colour") == "widget_colour"
    with pytest.raises(SettingsError, match="RUNNER_WIDGET_SIZE: 'big' is not an integer"):
        WidgetSettings.from_source({"RUNNER_WIDGET_SIZE": "big"})


def test_terraform_settings_from_env_and_file_with_env_winning(tmp_path: Path) -> None:
    cfg = tmp_path / "runner.toml"
    cfg.write_text('terraform_shortcuts = false\nterraform_version = "1.5.0"\n')
    config = load_config(env={**BASE, "RUNNER_TERRAFORM_VERSION": "1.11.4"}, config_file=cfg)
    tf = config.handler_settings(TerraformSettings)
    assert tf.shortcuts is False  # from the file (a TOML boolean)
    assert tf.version == "1.11.4"  # the environment wins over the file
    assert config.terraform_shortcuts is False


def test_a_bad_family_value_is_a_config_error_at_load_time(tmp_path: Path) -> None:
    cfg = tmp_path / "runner.yaml"
    cfg.write_text("terraform_shortcuts: maybe\n")
    with pytest.raises(ConfigError, match="RUNNER_TERRAFORM_SHORTCUTS: 'maybe' is not true or false"):
        load_config(env=BASE, config_file=cfg)


def test_third_party_families_read_the_environment_but_never_a_token() -> None:
    config = load_config(
        env={
            **BASE,
            "RUNNER_WIDGET_SIZE": "9",
            "RUNNER_ADMIN_TOKEN": "adm-secret",
            "RUNNER_WIDGET_PASSWORD": "p",
        }
    )
    assert config.handler_settings(WidgetSettings).size == 9
    assert "RUNNER_ADMIN_TOKEN" not in config.handler_env
    assert "RUNNER_WIDGET_PASSWORD" not in config.handler_env
    assert "RUNNER_API_TOKEN" not in config.handler_env


def test_settings_source_parses_once_per_family() -> None:
    source = SettingsSource({"RUNNER_WIDGET_SIZE": "4"})
    assert source.get(WidgetSettings) is source.get(WidgetSettings)
    assert source.get(TerraformSettings) == TerraformSettings()


def test_tool_settings_from_the_agent_config(tmp_path: Path) -> None:
    config = load_config(
        env={**BASE, "RUNNER_STATE_DIR": str(tmp_path), "RUNNER_INSECURE_REGISTRIES": "reg:5000,other:80"}
    )
    tools = tool_settings(config)
    assert tools.tools_dir == (tmp_path / "tools").absolute()
    assert tools.insecure_registries == ("reg:5000", "other:80")
    assert tools.runner_version == config.version


# --------------------------------------------------------------------------- run_handler


class Steps(Handler):
    """Records the order of its steps, registers a resource, optionally fails or sleeps."""

    needs_plan = False

    def __init__(self, fail_in: str = "", child: bool = False) -> None:
        self.fail_in = fail_in
        self.child = child
        self.seen: list[str] = []

    async def _step(self, name: str) -> None:
        self.seen.append(name)
        if self.fail_in == name:
            raise HandlerError(f"{name} failed")

    async def prepare(self, ctx: JobContext) -> None:
        ctx.resources.callback(self.seen.append, "resources closed")
        await self._step("prepare")

    async def execute(self, ctx: JobContext) -> None:
        await self._step("execute")
        if self.child:
            await ctx.processes.run(["sleep", "30"])
        ctx.set_outputs({"size": ctx.handler_settings(WidgetSettings).size})

    async def cleanup(self, ctx: JobContext) -> None:
        self.seen.append("cleanup")

    async def cancel(self, ctx: JobContext) -> None:
        self.seen.append("cancel")


async def test_run_handler_runs_the_steps_then_closes_the_exit_stack(tmp_path: Path) -> None:
    handler = Steps()
    run = await run_handler(handler, job_type="noop", workspace=tmp_path, env={"RUNNER_WIDGET_SIZE": "5"})
    assert handler.seen == ["prepare", "execute", "cleanup", "resources closed"]
    assert run.outputs == {"size": 5}
    assert run.error is None
    assert not run.cancelled


async def test_a_failure_is_raised_after_cleanup_and_the_exit_stack(tmp_path: Path) -> None:
    handler = Steps(fail_in="prepare")
    with pytest.raises(HandlerError, match="prepare failed"):
        await run_handler(handler, job_type="noop", workspace=tmp_path)
    assert handler.seen == ["prepare", "cleanup", "resources closed"]
    quiet = await run_handler(
        Steps(fail_in="execute"), job_type="noop", workspace=tmp_path, raise_errors=False
    )
    assert isinstance(quiet.error, HandlerError)
    assert quiet.step == "execute"


async def test_cancel_asks_the_handler_then_stops_its_child(tmp_path: Path) -> None:
    handler = Steps(child=True)
    with anyio.fail_after(20):
        run = await run_handler(handler, job_type="noop", workspace=tmp_path, cancel_after=0.5)
    assert run.cancelled
    assert handler.seen == ["prepare", "execute", "cancel", "cleanup", "resources closed"]
    assert any(m.startswith("$ sleep 30") for m in run.log.messages())


async def test_make_context_decodes_the_plan_and_records_masked_logs(tmp_path: Path) -> None:
    ctx = make_context(
        "oci-sync", {"src_tag": "v1", "dst_tag": "v2"}, workspace=tmp_path, metadata={"k": "v"}
    )
    assert type(ctx.plan).__name__ == "SyncOCIPlan"
    assert ctx.job.metadata == {"k": "v"}
    ctx.secrets.register("hunter22")
    ctx.log.bind(step="x").info("the password is hunter22", note="hunter22")
    level, message, attrs = ctx.log.records[0]  # type: ignore[attr-defined]
    assert (level, message, attrs) == ("info", "the password is ***", {"step": "x", "note": "***"})
    with pytest.raises(APIRequestFailed, match="unexpected control-plane call app_config"):
        await NoAPI().app_config("a", "b")


# --------------------------------------------------------------------------- sandbox hook


class TerraformLike(Handler):
    """A family that adds to what the default sandbox hook reports."""

    async def sandbox(self, ctx: JobContext, block: SandboxMode) -> None:
        await super().sandbox(ctx, block)
        ctx.extra["state stored"] = True


SANDBOX_PLAN: dict[str, Any] = {
    "sandbox_mode": {
        "enabled": True,
        "outputs": {"bucket": "b-1"},
        "terraform": {"plan_contents": "cGxhbg==", "plan_display_contents": "{}"},
    }
}


async def test_sandbox_mode_asks_the_real_handler_what_to_report(tmp_path: Path) -> None:
    real = TerraformLike()
    timing = SandboxTiming(duration=0.0)
    run = await run_handler(
        SandboxHandler(real, timing), SANDBOX_PLAN, job_type="sandbox-terraform", workspace=tmp_path
    )
    assert run.outputs == {"bucket": "b-1"}
    block = run.ctx.plan.sandbox_mode
    assert block is not None
    assert block.terraform is not None
    assert run.result == fake_plan_result(block.terraform)
    assert run.ctx.extra == {"state stored": True}
    assert any("sandbox mode: faking execute" in m for m in run.log.messages())


async def test_sandbox_mode_without_an_enabled_block_reports_nothing(tmp_path: Path) -> None:
    run = await run_handler(
        SandboxHandler(None, SandboxTiming(duration=0.0)), {}, job_type="noop-deploy", workspace=tmp_path
    )
    assert run.outputs == {}
    assert run.result is None


async def test_sandbox_faults_fail_the_job(tmp_path: Path) -> None:
    with pytest.raises(HandlerError, match="sandbox mode fault injected in prepare"):
        await run_handler(
            SandboxHandler(None, SandboxTiming(duration=0.0, faults=1.0)),
            {},
            job_type="noop",
            workspace=tmp_path,
        )
