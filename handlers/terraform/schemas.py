"""Provider schemas cached on disk, so the runner can render ``state-json`` itself.

A provider's schema is fixed by its version, so it is fetched once per (terraform version,
provider, provider version) with ``terraform providers schema -json`` and kept under
``<tools_dir>/terraform-schemas/<terraform version>/``, reduced to what rendering needs (each
resource type's schema version and implied type: a few percent of the full document). Files
are written atomically and never changed, so concurrent jobs need no lock.

The versions come from the module's dependency lock file (written or checked by ``init``); the
built-in ``terraform.io/builtin/terraform`` provider is versioned with terraform itself.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

from handlers.terraform.planfile import LOCK_FILE, locked_providers
from handlers.terraform.state_json import CannotRender, ResourceSchema, SchemaLookup, implied_type

BUILTIN_PROVIDER = "terraform.io/builtin/terraform"
_PLAN_PROVIDER_RE = re.compile(rb'"provider_name":"([^"\\]+)"')
_MODES = (("managed", "resource_schemas"), ("data", "data_source_schemas"))
#: Parsed schema files kept for the next job (the files never change once written): the small
#: ones only, so a big cloud provider's schema (megabytes of types) is not held between jobs.
_MEMO: dict[Path, dict[str, Any]] = {}
_MEMO_LIMIT = 16
_MEMO_MAX_FILE_BYTES = 256 * 1024


def locked_versions(module_dir: Path, terraform_version: str) -> dict[str, str]:
    """Provider source address -> version, from the lock file, plus the built-in provider."""
    try:
        text = (module_dir / LOCK_FILE).read_text(encoding="utf-8")
    except (FileNotFoundError, UnicodeDecodeError):
        text = ""
    locked = {address: version for address, version in locked_providers(text).items() if version}
    return {BUILTIN_PROVIDER: terraform_version, **locked}


def providers_in_plan(plan_json: bytes) -> set[str]:
    """Provider source addresses named in a ``show -json`` plan (its changes and prior state)."""
    return {match.decode() for match in _PLAN_PROVIDER_RE.findall(plan_json)}


def terraform_version_of(document: bytes) -> str:
    """The ``terraform_version`` near the start of a ``show -json`` document ("" if absent)."""
    match = re.search(rb'"terraform_version":"([^"\\]+)"', document[:4096])
    return match.group(1).decode() if match else ""


class SchemaCache:
    """See the module docstring."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @classmethod
    def in_tools_dir(cls, tools_dir: Path) -> SchemaCache:
        return cls(tools_dir / "terraform-schemas")

    def _file(self, terraform_version: str, provider: str, version: str) -> Path:
        name = quote(provider, safe="") + "@" + quote(version, safe="") + ".json"
        return self.root / quote(terraform_version, safe="") / name

    def missing(
        self, terraform_version: str, providers: Iterable[str], versions: Mapping[str, str]
    ) -> list[str]:
        """The providers among ``providers`` with a locked version whose schema is not cached
        (one without a version cannot be cached: nothing to key it by)."""
        return sorted(
            provider
            for provider in providers
            if provider in versions
            and not self._file(terraform_version, provider, versions[provider]).is_file()
        )

    def lookup(
        self, terraform_version: str, providers: Iterable[str], versions: Mapping[str, str]
    ) -> SchemaLookup:
        """Every resource schema of ``providers``; ``CannotRender`` if one is not cached."""
        found: dict[tuple[str, str, str], ResourceSchema] = {}
        for provider in providers:
            if provider not in versions:
                raise CannotRender(f"provider {provider} is not in the dependency lock file")
            document = self._load(self._file(terraform_version, provider, versions[provider]))
            if document is None:
                raise CannotRender(f"no cached schema for {provider} {versions[provider]}")
            for mode, key in _MODES:
                for rtype, entry in (document.get(key) or {}).items():
                    found[(provider, mode, rtype)] = ResourceSchema(int(entry["version"]), entry["type"])
        return found

    def _load(self, path: Path) -> dict[str, Any] | None:
        if path in _MEMO:
            return _MEMO[path]
        try:
            data = path.read_bytes()
            document = json.loads(data)
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        if not isinstance(document, dict):
            return None
        if len(data) <= _MEMO_MAX_FILE_BYTES:
            if len(_MEMO) >= _MEMO_LIMIT:
                _MEMO.pop(next(iter(_MEMO)))
            _MEMO[path] = document
        return document

    def store(self, terraform_version: str, schemas_json: bytes, versions: Mapping[str, str]) -> list[str]:
        """Keep each provider of a ``providers schema -json`` document; returns those stored."""
        document = json.loads(schemas_json)
        stored: list[str] = []
        for provider, schema in (document.get("provider_schemas") or {}).items():
            version = versions.get(provider)
            if not version:
                continue
            reduced = {
                key: {
                    rtype: {
                        "version": int(entry.get("version", 0)),
                        "type": implied_type(entry.get("block") or {}),
                    }
                    for rtype, entry in (schema.get(key) or {}).items()
                }
                for _mode, key in _MODES
            }
            _write_atomic(self._file(terraform_version, provider, version), json.dumps(reduced).encode())
            stored.append(provider)
        return stored


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".schema-")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
