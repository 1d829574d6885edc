"""The import contracts of DESIGN.md §1, checked over every module's syntax tree.

1. A handler (``handlers/...``) imports only the handler SDK (``runner.sdk``) and shared handler
   libraries (``handlers...``): never ``runner.api.client``, ``runner.config`` or any other agent
   module.
2. The control plane (``controlplane/...``) imports only the wire models (``runner.api``, not
   its client) of the agent.
3. The agent (``runner/...``) imports ``controlplane`` only in the ``local`` and ``exec`` entry
   points (``runner/local.py``).

Every import counts: top-level ones, those inside functions, and those under
``if TYPE_CHECKING:`` (a type-only import still ties the modules together). A failure lists each
offending import with its file and line.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Import:
    path: Path
    line: int
    module: str

    def __str__(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}: imports {self.module}"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, source: str | None = None) -> Iterator[Import]:
    """Every module ``path`` imports, anywhere in its body (relative imports resolved);
    ``source`` stands in for the file's text (the checker's own tests)."""
    tree = ast.parse(path.read_text() if source is None else source, filename=str(path))
    package = _module_name(path).rsplit(".", 1)[0] if path.name != "__init__.py" else _module_name(path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(path, node.lineno, alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            # ``from runner import sdk`` imports the module runner.sdk: count the names too.
            for alias in node.names:
                yield Import(path, node.lineno, f"{module}.{alias.name}")


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def _agent_module(module: str) -> bool:
    """A name under ``runner``: ``runner.x.y`` or ``runner.<name>`` from ``from runner import``."""
    return _within(module, "runner")


def handler_violation(module: str) -> bool:
    """Rule 1: of the agent, a handler may import the SDK only."""
    if not _agent_module(module):
        return False
    return not _within(module, "runner.sdk")


def controlplane_violation(module: str) -> bool:
    """Rule 2: of the agent, the control plane may import the wire models only."""
    if not _agent_module(module):
        return False
    return not _within(module, "runner.api") or _within(module, "runner.api.client")


#: Rule 3: the only agent modules that may start the embedded control plane.
CONTROLPLANE_ENTRY_POINTS = {Path("runner/local.py")}


def agent_violation(path: Path, module: str) -> bool:
    return _within(module, "controlplane") and path.relative_to(ROOT) not in CONTROLPLANE_ENTRY_POINTS


def violations() -> list[str]:
    found: list[str] = []
    for path in sorted((ROOT / "handlers").rglob("*.py")):
        found += [
            str(i) + " (handlers import only runner.sdk)"
            for i in imports_of(path)
            if handler_violation(i.module)
        ]
    for path in sorted((ROOT / "controlplane").rglob("*.py")):
        found += [
            str(i) + " (the control plane imports only runner.api)"
            for i in imports_of(path)
            if controlplane_violation(i.module)
        ]
    for path in sorted((ROOT / "runner").rglob("*.py")):
        found += [
            str(i) + " (the agent imports controlplane only in runner/local.py)"
            for i in imports_of(path)
            if agent_violation(path, i.module)
        ]
    return found


def test_import_contracts_hold() -> None:
    found = violations()
    assert not found, "import contracts broken:\n  " + "\n  ".join(found)


# --------------------------------------------------------------------------- the checker itself


def _imports_in(name: str, source: str) -> list[str]:
    """The imports of ``source`` as if it were the repository file ``name`` (not written)."""
    return [i.module for i in imports_of(ROOT / name, source)]


def test_the_checker_sees_imports_in_functions_and_type_checking_blocks() -> None:
    source = (
        "from typing import TYPE_CHECKING\n"
        "import runner.sdk\n"
        "if TYPE_CHECKING:\n"
        "    from runner.config import Config\n"
        "def f():\n"
        "    from runner.api import client\n"
        "    import controlplane.server\n"
    )
    modules = _imports_in("handlers/fake_family/x.py", source)
    assert "runner.config.Config" in modules
    assert "runner.api.client" in modules
    assert [m for m in modules if handler_violation(m)] == ["runner.config.Config", "runner.api.client"]
    assert controlplane_violation("runner.api.client.RunnerClient")
    assert not controlplane_violation("runner.api.models.JobStatus")
    assert controlplane_violation("runner.config.default_state_dir")
    assert agent_violation(ROOT / "runner/daemon.py", "controlplane.server")
    assert not agent_violation(ROOT / "runner/local.py", "controlplane.server")


def test_the_checker_resolves_relative_imports() -> None:
    modules = _imports_in("handlers/terraform/x.py", "from ..oci import registry\nfrom . import cli\n")
    assert modules == ["handlers.oci.registry", "handlers.terraform.cli"]
