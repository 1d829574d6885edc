"""The handler registry defers the built-in handlers' imports to first use (issue 17).

An idle ``runner run`` and ``runner exec --type noop`` must not import every handler family
(kubernetes_asyncio alone is about 50 MB and 0.5 s); a job type is loaded when a poller first
sees a job of it, and a handler that fails to load then is not claimed, as at start-up.
"""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys
from pathlib import Path

import pytest

from runner.sdk import Handler
from runner.sdk.handler import BUILTIN_HANDLER_PACKAGE, ENTRY_POINT_GROUP, HandlerRegistry
from runner.sdk.settings import SettingsError

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]


def builtin_entry_points() -> list[importlib.metadata.EntryPoint]:
    return [
        ep
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
        if ep.module.partition(".")[0] == BUILTIN_HANDLER_PACKAGE
    ]


def test_a_deferred_handler_that_validate_rejects_is_not_supported() -> None:
    # The daemon's validate parses the handler's settings family (a family outside
    # BUILTIN_FAMILIES, which load_config checks at start-up, is checked here).
    registry = HandlerRegistry.from_entry_points()

    def reject(handler: type[Handler]) -> None:
        raise SettingsError(f"RUNNER_X_TIMEOUT: not a number (handler {handler.__name__})")

    registry.validate = reject
    reported: list[tuple[str, str]] = []
    registry.on_load_error = lambda name, error: reported.append((name, error))
    assert registry.supports("noop") is False
    assert registry.get("noop") is None
    assert "RUNNER_X_TIMEOUT" in registry.load_errors["noop"]
    assert [name for name, _ in reported] == ["noop"]


def test_builtin_handlers_load_on_first_use() -> None:
    registry = HandlerRegistry.from_entry_points()
    names = {ep.name for ep in builtin_entry_points()}
    assert names <= set(registry.job_types())
    assert not names & set(registry.loaded())
    assert registry.supports("noop")
    assert registry.get("noop") is not None
    assert "noop" in registry.loaded()
    assert "kubernetes-manifest-deploy" not in registry.loaded()


def test_a_deferred_handler_that_fails_to_load_is_not_supported() -> None:
    ep = importlib.metadata.EntryPoint(
        name="broken", value="handlers.does_not_exist:Nope", group=ENTRY_POINT_GROUP
    )
    registry = HandlerRegistry()
    registry._pending["broken"] = ep
    reported: list[tuple[str, str]] = []
    registry.on_load_error = lambda name, error: reported.append((name, error))
    assert registry.supports("broken") is False
    assert registry.get("broken") is None
    assert "ModuleNotFoundError" in registry.load_errors["broken"]
    assert [name for name, _ in reported] == ["broken"]  # reported once
    assert "broken" not in registry.job_types()


def test_an_override_replaces_a_deferred_handler() -> None:
    registry = HandlerRegistry.from_entry_points()
    registry.load_overrides({"noop": "tests.support.handlers:ScriptHandler"})
    handler = registry.get("noop")
    assert handler is not None
    assert handler.__name__ == "ScriptHandler"


def test_load_all_imports_every_installed_handler() -> None:
    registry = HandlerRegistry.from_entry_points()
    registry.load_all()
    assert set(registry.job_types()) == set(registry.loaded())
    assert {ep.name for ep in builtin_entry_points()} <= set(registry.loaded())


def test_a_fresh_registry_imports_no_handler_family() -> None:
    code = (
        "import json, sys\n"
        "from runner.sdk.handler import HandlerRegistry\n"
        "r = HandlerRegistry.from_entry_points()\n"
        "assert r.supports('noop')\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    modules = set(json.loads(proc.stdout))
    heavy_modules = ("kubernetes_asyncio", "handlers.kube", "handlers.oci", "handlers.terraform", "boto3")
    for heavy in (*heavy_modules, "handlers.docker"):
        assert not any(m == heavy or m.startswith(heavy + ".") for m in modules), heavy
    assert "handlers.noop" in modules
