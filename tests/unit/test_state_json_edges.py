"""The renderer's edges found by the differential test of issue 10: negative zero, integers past
Python's digit limit, deep nesting, and the fallback to ``terraform show -json`` on any failure.

The terraform tier (``tests/terraform/test_state_json.py``) checks the same cases byte for byte
against real terraform; these pin the decisions without it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from handlers.terraform import apply_state
from handlers.terraform.apply_state import try_render
from handlers.terraform.schemas import SchemaCache
from handlers.terraform.state_json import CannotRender, load_state, render_state_json
from tests.unit.test_state_json import SCHEMAS, instance, resource, state

pytestmark = pytest.mark.unit


def _payload_state(value_json: str, type_json: str) -> bytes:
    """A state whose dynamic ``payload`` is ``value_json`` (spliced in as text, so the number
    literals reach ``load_state`` exactly as terraform writes them)."""
    raw = state([resource(instance(attributes={"id": "i", "payload": {"value": "@V@", "type": "@T@"}}))])
    return raw.replace(b'"@V@"', value_json.encode()).replace(b'"@T@"', type_json.encode())


def _payload(raw: bytes) -> Any:
    text = render_state_json(load_state(raw), SCHEMAS)
    return text, json.loads(text)["values"]["root_module"]["resources"][0]["values"]["payload"]


def test_negative_zero_keeps_its_sign_as_terraform_prints_it() -> None:
    raw = _payload_state(
        '{"a": -0, "b": [-0, 1], "c": -0.0}',
        '["object", {"a": "number", "b": ["set", "number"], "c": "number"}]',
    )
    text, _ = _payload(raw)
    assert b'"payload":{"a":-0,"b":[-0,1],"c":-0}' in text
    # ... and a positive zero stays 0.
    text, value = _payload(_payload_state("0", '"number"'))
    assert value == 0
    assert b'"payload":0' in text


def test_load_state_keeps_the_integer_negative_zero() -> None:
    loaded = load_state(state([], outputs={"o": {"value": "@", "type": "number"}}).replace(b'"@"', b"-0"))
    value = loaded["outputs"]["o"]["value"]
    assert not isinstance(value, int), "an int 0 loses the sign"
    assert b'"value":-0' in render_state_json(loaded, SCHEMAS)


def test_negative_zero_in_outputs_and_sensitive_values() -> None:
    raw = state(
        [
            resource(
                instance(
                    attributes={"id": "i", "payload": {"value": "@", "type": "number"}},
                    sensitive_attributes=[[{"type": "get_attr", "value": "payload"}]],
                )
            )
        ],
        outputs={"o": {"value": "@", "type": "number", "sensitive": True}},
    ).replace(b'"@"', b"-0")
    text = render_state_json(load_state(raw), SCHEMAS)
    assert text.count(b"-0") == 2
    assert b'"payload":true' in text


def test_an_integer_past_the_digit_limit_cannot_render() -> None:
    raw = _payload_state("1" + "0" * 5000, '"number"')
    with pytest.raises(CannotRender, match="5001 digits"):
        load_state(raw)


def test_deep_nesting_cannot_render() -> None:
    depth = 1200
    raw = _payload_state("[" * depth + "1" + "]" * depth, '"dynamic"')
    with pytest.raises(CannotRender, match="nests deeper"):
        render_state_json(load_state(raw), SCHEMAS)


def test_deep_nesting_in_the_type_cannot_render() -> None:
    depth = 1200
    spec = '["list", ' * depth + '"number"' + "]" * depth
    raw = _payload_state("[" * depth + "1" + "]" * depth, spec)
    with pytest.raises(CannotRender):
        render_state_json(load_state(raw), SCHEMAS)


def test_any_renderer_failure_falls_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Not only ``CannotRender``: a bug in the renderer means ``terraform show -json``, never no
    state-json at all."""

    def broken(*_: Any) -> bytes:
        raise KeyError("a renderer bug")

    monkeypatch.setattr(apply_state, "render_state_json", broken)
    monkeypatch.setattr(SchemaCache, "lookup", lambda *_: SCHEMAS)
    attempt = try_render(state([resource(instance())]), SchemaCache(tmp_path / "s"), tmp_path)
    assert attempt.rendered is None
    assert "KeyError" in attempt.reason
    assert attempt.terraform_version == "1.11.4"
