"""Wheels of this project at other versions, built from the working tree without a build backend.

A wheel is a zip of the packages plus a ``.dist-info`` (METADATA, WHEEL, entry points, RECORD);
writing it directly takes a fraction of a second and needs neither setuptools nor an index,
where ``pip wheel`` spends ~15 s per build here. ``patches`` rewrite a file of the copy: the
"version that fails its health check" is this project with ``/readyz`` answering 503 forever.
"""

from __future__ import annotations

import base64
import hashlib
import re
import tomllib
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("runner", "handlers", "controlplane")
DIST = "byoc_runner"

#: Appended to runner/health.py of the broken version: every /readyz is 503, the rest unchanged.
NEVER_READY = '''

_real_route = route


def route(endpoints: HealthEndpoints, method: str, path: str) -> bytes:  # type: ignore[no-redef]
    """Test stand-in: a version whose /readyz never passes."""
    if path.split("?", 1)[0] == "/readyz":
        return _response(503, b'{"ok": false, "stand_in": "never ready"}', "application/json")
    return _real_route(endpoints, method, path)
'''


def never_ready(text: str) -> str:
    assert "def route(" in text, "runner/health.py changed shape"
    assert "def _response(" in text, "runner/health.py changed shape"
    return text + NEVER_READY


def _set_version(version: str) -> Callable[[str], str]:
    def patch(text: str) -> str:
        new, count = re.subn(r'^__version__ = ".*"$', f'__version__ = "{version}"', text, flags=re.M)
        assert count == 1, "runner/__init__.py has no __version__ line"
        return new

    return patch


def _entry_points(pyproject: dict[str, object]) -> str:
    project = pyproject["project"]
    assert isinstance(project, dict)
    sections: dict[str, dict[str, str]] = {"console_scripts": dict(project.get("scripts", {}))}
    sections.update({k: dict(v) for k, v in project.get("entry-points", {}).items()})
    out = []
    for name, entries in sections.items():
        out.append(f"[{name}]")
        out += [f"{k} = {v}" for k, v in entries.items()]
        out.append("")
    return "\n".join(out)


def build_wheel(
    version: str, out_dir: Path, *, patches: Mapping[str, Callable[[str], str]] | None = None
) -> Path:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    edits: dict[str, Callable[[str], str]] = {"runner/__init__.py": _set_version(version), **(patches or {})}
    out_dir.mkdir(parents=True, exist_ok=True)
    wheel = out_dir / f"{DIST}-{version}-py3-none-any.whl"
    info = f"{DIST}-{version}.dist-info"
    records: list[str] = []

    def add(zf: zipfile.ZipFile, name: str, data: bytes) -> None:
        zf.writestr(name, data)
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        records.append(f"{name},sha256={digest},{len(data)}")

    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as zf:
        for package in PACKAGES:
            for path in sorted((REPO / package).rglob("*")):
                if not path.is_file() or "__pycache__" in path.parts or path.suffix == ".pyc":
                    continue
                name = path.relative_to(REPO).as_posix()
                data = path.read_bytes()
                if name in edits:
                    data = edits[name](data.decode()).encode()
                add(zf, name, data)
        metadata = f"Metadata-Version: 2.1\nName: byoc-runner\nVersion: {version}\nRequires-Python: >=3.11\n"
        add(zf, f"{info}/METADATA", metadata.encode())
        add(
            zf,
            f"{info}/WHEEL",
            b"Wheel-Version: 1.0\nGenerator: tests.mng.wheels\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        )
        add(zf, f"{info}/entry_points.txt", _entry_points(pyproject).encode())
        add(zf, f"{info}/top_level.txt", ("\n".join(PACKAGES) + "\n").encode())
        records.append(f"{info}/RECORD,,")
        zf.writestr(f"{info}/RECORD", "\n".join(records) + "\n")
    return wheel
