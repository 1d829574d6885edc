"""The plan's values as helm arguments, with no value on argv unless it is a bare scalar.

Precedence (docs/helm.md): the chart's defaults, then each ``values_files`` entry in plan order
(YAML *content*, written to a file and passed as ``-f``: a later file wins, as with ``helm -f``;
the reference merged them the other way round), then ``values[]`` (a later entry wins).

A ``values[]`` entry never puts its value on argv when it could be a secret: a ``string`` entry,
and an ``auto`` entry that helm's ``--set`` would read as a string, are written to a 0600 file
and passed with ``--set-file name=path`` (helm reads the file's bytes as a string, exactly what
``--set-string`` and ``--set`` give for such a value). Only an ``auto`` value that ``--set`` types
as a bool, null or integer goes as ``--set name=value``. Helm applies ``--set`` before
``--set-file``; entries are de-duplicated by name (the last wins) first, so that order does not
change which entry wins. Unlike ``--set``, a value is never split on commas nor read as a
``{a,b}`` list: write lists in a values file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from runner.sdk import HandlerError
from runner.sdk.plans import HelmValue

_INT = re.compile(r"^-?[1-9][0-9]*$|^0$")


class ValuesError(HandlerError):
    """A ``values[]`` entry helm cannot take."""


@dataclass(frozen=True)
class ValueArg:
    name: str
    value: str
    #: "set" (typed scalar on argv) or "set-file" (the value in a file).
    how: str


def typed_scalar(value: str) -> bool:
    """Whether helm's ``--set`` reads ``value`` as a bool, null or int64 (strvals.typedVal)."""
    if value.lower() in ("true", "false", "null"):
        return True
    if _INT.match(value):
        try:
            return -(2**63) <= int(value) < 2**63
        except ValueError:
            return False
    return False


def value_args(values: list[HelmValue] | None) -> list[ValueArg]:
    """The ``values[]`` entries as arguments: the last entry of each name (in that order)."""
    last: dict[str, HelmValue] = {}
    for v in values or []:
        name = v.name.strip()
        if not name:
            raise ValuesError("a values[] entry has no name")
        if "=" in name or "," in name:
            raise ValuesError(f"values[] name {name!r} contains '=' or ','")
        kind = (v.type or "auto").strip().lower()
        if kind not in ("auto", "string"):
            raise ValuesError(f"values[] {name}: type {v.type!r} is neither string nor auto")
        last.pop(name, None)
        last[name] = HelmValue(name=name, value=v.value, type=kind)
    out: list[ValueArg] = []
    for name, v in last.items():
        if v.type == "auto" and typed_scalar(v.value):
            out.append(ValueArg(name, v.value, "set"))
        else:
            out.append(ValueArg(name, v.value, "set-file"))
    return out
