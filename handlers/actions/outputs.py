"""Step outputs: each step appends lines to its own file (``NUON_ACTIONS_OUTPUT_FILEPATH``).

A line is a JSON object (its keys merged into the step's outputs) or ``key=value`` (the value a
string); blank lines are skipped. Anything else, a JSON array included, fails the step with the
line's number, and never its text (a line may carry a secret). The job's outputs are what the
reference makes of them: every step's keys merged at the top level (a later step wins) plus
``steps: {<step name>: {...}}``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from runner.sdk import HandlerError

#: An outputs file larger than this fails its step: outputs are a few values, not a data channel.
MAX_OUTPUTS_BYTES = 4 * 1024 * 1024


class OutputsError(HandlerError):
    """A step's outputs file is not JSON-object or key=value lines."""


def parse_line(line: str, number: int) -> dict[str, Any]:
    stripped = line.strip()
    if stripped.startswith("{"):
        try:
            value = json.loads(stripped)
        except json.JSONDecodeError as exc:
            raise OutputsError(
                f"outputs line {number} starts like a JSON object but is not one: {exc.msg}"
            ) from None
        if not isinstance(value, dict):  # pragma: no cover - '{' always decodes to an object
            raise OutputsError(f"outputs line {number} is not a JSON object")
        return value
    if stripped.startswith("["):
        raise OutputsError(f"outputs line {number} is a JSON array; write a JSON object or key=value")
    key, sep, value_text = line.partition("=")
    if not sep or not key.strip():
        raise OutputsError(f"outputs line {number} is neither a JSON object nor key=value")
    return {key.strip(): value_text}


def parse_outputs(text: str) -> dict[str, Any]:
    """One step's outputs file, lines merged in order."""
    outputs: dict[str, Any] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        outputs.update(parse_line(line, number))
    return outputs


def job_outputs(steps: Iterable[tuple[str, Mapping[str, Any]]]) -> dict[str, Any]:
    """The merged keys of every step, then ``steps`` by step name."""
    merged: dict[str, Any] = {}
    by_name: dict[str, Any] = {}
    for name, outputs in steps:
        merged.update(outputs)
        by_name[name] = dict(outputs)
    merged["steps"] = by_name
    return merged
