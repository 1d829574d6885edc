"""Which terraform input variables hold secrets, so that their values are masked in job logs.

Issue 11: a plan var ``db_password`` echoed by a ``local-exec`` was stored unmasked (plain,
base64, URL-encoded, and in terraform's "Executing:" line). A variable's value is registered
with the job's secret registry (which masks every encoded form) when

* its name looks secret: it contains ``SECRET``, ``TOKEN``, ``PASSWORD``, ``PASSWD``,
  ``CREDENTIAL``, ``PRIVATE`` or ``_KEY`` in any case (``credentials.looks_secret``, the same
  rule as for environment variables; documented in the README), or
* the module declares it ``sensitive = true`` (``*.tf`` and ``*.tf.json`` of the module's root).

Values come from the plan's ``vars`` and from ``vars_files`` written as JSON. Sensitive
*outputs* are registered when they are read (``operations.output_values``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol

from handlers.terraform.credentials import looks_secret


class SecretRegistry(Protocol):
    """The job's secret registry (the SDK's ``SecretRegistry``), as far as this module uses it."""

    def register(self, *values: str | None) -> None: ...


_VARIABLE = re.compile(r'(?m)^\s*variable\s+"([^"]+)"\s*\{')
_SENSITIVE = re.compile(r"(?m)^\s*sensitive\s*=\s*true\b")


def _block_body(text: str, start: int) -> str:
    """The text of the ``{ ... }`` block opening just before ``start`` (strings and comments
    are skipped while counting braces; nested blocks are included)."""
    depth, i, n = 1, start, len(text)
    while i < n and depth:
        c = text[i]
        if c == '"':
            i += 1
            while i < n and text[i] != '"':
                i += 2 if text[i] == "\\" else 1
        elif c == "#" or text.startswith("//", i):
            i = text.find("\n", i)
            i = n if i < 0 else i
        elif text.startswith("/*", i):
            i = text.find("*/", i + 2)
            i = n if i < 0 else i + 1
        elif c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
        i += 1
    return text[start : i - 1]


def sensitive_variables(module_dir: Path) -> set[str]:
    """Names of the root module's variables declared ``sensitive = true``."""
    names: set[str] = set()
    for path in sorted(module_dir.glob("*.tf")):
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        for match in _VARIABLE.finditer(text):
            if _SENSITIVE.search(_block_body(text, match.end())):
                names.add(match.group(1))
    for path in sorted(module_dir.glob("*.tf.json")):
        try:
            variables = json.loads(path.read_text()).get("variable") or {}
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(variables, dict):
            names |= {n for n, spec in variables.items() if isinstance(spec, dict) and spec.get("sensitive")}
    return names


def _strings(value: Any) -> Iterable[str]:
    """Every leaf of a value as text, and the value's JSON form when it is a structure."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, bool) or value is None:
        return
    elif isinstance(value, int | float):
        yield str(value)
    elif isinstance(value, dict | list):
        yield json.dumps(value)
        for item in value.values() if isinstance(value, dict) else value:
            yield from _strings(item)


def register_variable_secrets(
    variables: Mapping[str, Any], vars_files: Iterable[str], module_dir: Path, secrets: SecretRegistry
) -> list[str]:
    """Register the values of secret variables; returns their names (for the job log)."""
    declared = sensitive_variables(module_dir)
    merged: dict[str, Any] = {}
    for content in vars_files:
        try:
            parsed = json.loads(content)
        except ValueError:
            continue  # an HCL tfvars file: only its variables declared sensitive are known
        if isinstance(parsed, dict):
            merged.update(parsed)
    merged.update(variables)
    names = sorted(name for name in merged if name in declared or looks_secret(name))
    for name in names:
        secrets.register(*_strings(merged[name]))
    return names
