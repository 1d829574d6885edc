"""``terraform show -json`` of a state, rendered by the runner without starting terraform.

Every ``apply-plan`` job must send the new state in terraform's JSON representation to the
control plane (``state-json``). ``terraform show -json`` costs a whole terraform start: about
60 ms of Go package initialisation before any work, the backend round trips to read the state
back, and a start of every provider plugin for its schema (seconds and hundreds of MB for the
big cloud providers), on every apply.

The runner already holds everything that command reads: the state terraform just wrote (the
backend proxy saw it go by) and the provider schemas (cached on disk per provider version by
``handlers.terraform.schemas``). This module turns the two into the same bytes terraform would
print, following terraform's ``jsonstate`` format (format_version 1.0):

* attribute values decoded with the schema's implied type: dynamic values lose their
  ``{"value", "type"}`` wrapper, attributes missing from the state become null, object and map
  keys are sorted, set order is kept;
* ``sensitive_values`` from the paths the state records as sensitive, ``true`` at a sensitive
  node, list elements kept as ``false``, object keys that are not sensitive left out;
* resources in terraform's instance order (data sources first, then type, name and key, with
  numeric keys by value), child modules nested and sorted by address;
* numbers exactly as terraform wrote them, strings escaped as Go's ``encoding/json`` does.

Anything this module does not model (a deposed object, check results, a field newer than the
state format it knows, a schema it has not got, a schema version that does not match) raises
``CannotRender`` and the caller runs ``terraform show -json`` instead, so the output is
terraform's own or byte-for-byte the same; the terraform tier checks the latter against real
terraform.
"""

from __future__ import annotations

import json
import re
import secrets as pysecrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: A terraform type in the JSON form schemas and states use: ``"string"``, ``["list", T]``...
TypeSpec = Any

_FORMAT_VERSION = "1.0"
_STATE_KEYS = frozenset(
    {"version", "terraform_version", "serial", "lineage", "outputs", "resources", "check_results"}
)
_RESOURCE_KEYS = frozenset({"module", "mode", "type", "name", "each", "provider", "instances"})
_INSTANCE_KEYS = frozenset(
    {
        "index_key",
        "status",
        "schema_version",
        "attributes",
        "sensitive_attributes",
        "private",
        "dependencies",
        "create_before_destroy",
    }
)
_PROVIDER_RE = re.compile(r'(?:^|\.)provider\["([^"]+)"\](?:\.[A-Za-z_][\w-]*)?$')
_MODULE_STEP_RE = re.compile(r'module\.([A-Za-z_][\w-]*)(\[(?:\d+|"[^"\\]*")\])?')
_SAFE_KEY_RE = re.compile(r"[\x20-\x7e]*")


class CannotRender(Exception):
    """This state holds something the renderer does not model; use ``terraform show -json``."""


class RawNumber:
    """A JSON number no float carries exactly, kept as the text terraform wrote (cty numbers are
    arbitrary precision: ``12345678901234567890.5``, ``0.0000003``)."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RawNumber) and other.text == self.text

    def __hash__(self) -> int:
        return hash(self.text)


def _parse_float(text: str) -> float | RawNumber:
    number = float(text)
    if number == 0 and text.startswith("-"):
        return RawNumber("-0")  # cty keeps the sign of zero; terraform prints it as ``-0``
    return number if repr(number) == text else RawNumber(text)


def _parse_int(text: str) -> int | RawNumber:
    """Whole numbers as ints, except ``-0`` (an int would drop the sign terraform prints) and
    numbers past Python's digit limit for ``int()`` (terraform renders those; we do not)."""
    if text == "-0":
        return RawNumber("-0")
    try:
        return int(text)
    except ValueError as exc:
        raise CannotRender(f"a whole number of {len(text)} digits") from exc


@dataclass(frozen=True)
class ResourceSchema:
    """What rendering needs of a resource type's schema: its version and implied type."""

    version: int
    implied_type: TypeSpec


#: (provider source address, "managed" or "data", resource type) -> schema
SchemaLookup = Mapping[tuple[str, str, str], ResourceSchema]


# --------------------------------------------------------------------------- schema -> type


def implied_type(block: Mapping[str, Any]) -> TypeSpec:
    """The object type a schema block (``providers schema -json`` form) decodes to."""
    attributes: dict[str, TypeSpec] = {}
    for name, attribute in (block.get("attributes") or {}).items():
        if "type" in attribute:
            attributes[name] = attribute["type"]
        elif "nested_type" in attribute:
            nested = attribute["nested_type"]
            attributes[name] = _nest(nested.get("nesting_mode", "single"), implied_type(nested))
        else:
            raise CannotRender(f"schema attribute {name!r} has neither type nor nested_type")
    for name, nested_block in (block.get("block_types") or {}).items():
        inner = implied_type(nested_block.get("block") or {})
        attributes[name] = _nest(nested_block.get("nesting_mode", "single"), inner)
    return ["object", attributes]


def _nest(mode: str, inner: TypeSpec) -> TypeSpec:
    if mode in ("single", "group"):
        return inner
    if mode in ("list", "set", "map"):
        return [mode, inner]
    raise CannotRender(f"unknown nesting mode {mode!r}")


# --------------------------------------------------------------------------- values


#: A path into a value: ("attr", name), ("index", key) steps; ("set",) inside a set.
AttrPath = tuple[tuple[Any, ...], ...]


def _decode(value: Any, spec: TypeSpec, path: AttrPath, sensitive: frozenset[AttrPath]) -> tuple[Any, Any]:
    """(the value as ``show -json`` prints it, its ``sensitive_values`` form).

    ``spec`` is the schema type at this position; a ``dynamic`` position carries its real type
    in the state's ``{"value", "type"}`` wrapper.
    """
    if spec == "dynamic":
        if value is None:
            return None, path in sensitive
        if not isinstance(value, dict) or set(value) != {"value", "type"}:
            raise CannotRender(f"a dynamic value at {_show(path)} is not wrapped with its type")
        return _decode(value["value"], value["type"], path, sensitive)
    marked = path in sensitive
    if value is None:
        return None, marked
    if isinstance(spec, str):
        if spec not in ("string", "number", "bool"):
            raise CannotRender(f"unknown type {spec!r} at {_show(path)}")
        return value, marked
    if not isinstance(spec, list) or len(spec) != 2:
        raise CannotRender(f"unknown type {spec!r} at {_show(path)}")
    kind, inner = spec
    if kind in ("list", "set", "tuple"):
        if not isinstance(value, list):
            raise CannotRender(f"expected a {kind} at {_show(path)}")
        if kind == "tuple" and (not isinstance(inner, list) or len(inner) != len(value)):
            raise CannotRender(f"a tuple at {_show(path)} does not match its type")
        items: list[Any] = []
        flags: list[Any] = []
        for index, item in enumerate(value):
            # Marks inside a set are hoisted to the set itself: its elements have no path.
            item_path = (*path, ("index", index)) if kind != "set" else (*path, ("set",))
            decoded, flag = _decode(item, inner[index] if kind == "tuple" else inner, item_path, sensitive)
            items.append(decoded)
            flags.append(flag)
        return items, True if marked else flags
    if kind in ("map", "object"):
        if not isinstance(value, dict):
            raise CannotRender(f"expected a {kind} at {_show(path)}")
        if kind == "object":
            if not isinstance(inner, dict):
                raise CannotRender(f"an object type at {_show(path)} is malformed")
            unknown = set(value) - set(inner)
            if unknown:
                raise CannotRender(f"attribute {sorted(unknown)[0]!r} at {_show(path)} is not in the schema")
            names = sorted(inner)
        else:
            names = sorted(value)
        result: dict[str, Any] = {}
        flags_by_name: dict[str, Any] = {}
        for name in names:
            step = ("attr", name) if kind == "object" else ("index", name)
            decoded, flag = _decode(
                value.get(name), inner[name] if kind == "object" else inner, (*path, step), sensitive
            )
            result[name] = decoded
            if flag is not False:
                flags_by_name[name] = flag
        return result, True if marked else flags_by_name
    raise CannotRender(f"unknown type {spec!r} at {_show(path)}")


def _show(path: AttrPath) -> str:
    return "".join(f".{step[1]}" if step[0] == "attr" else "[*]" for step in path) or "(root)"


def _sensitive_paths(raw: Any) -> frozenset[AttrPath]:
    """The state's ``sensitive_attributes`` as paths ``_decode`` compares against."""
    paths: set[AttrPath] = set()
    for steps in raw or []:
        path: list[tuple[Any, ...]] = []
        for step in steps:
            kind = step.get("type") if isinstance(step, dict) else None
            if kind == "get_attr":
                path.append(("attr", str(step["value"])))
            elif kind == "index":
                key = step.get("value") or {}
                if key.get("type") == "number":
                    path.append(("index", int(key["value"])))
                elif key.get("type") == "string":
                    path.append(("index", str(key["value"])))
                else:
                    raise CannotRender("a sensitive path indexes by something other than a number or string")
            else:
                raise CannotRender(f"unknown sensitive path step {step!r}")
        paths.add(tuple(path))
    return frozenset(paths)


# --------------------------------------------------------------------------- addresses


def _index_suffix(key: Any) -> str:
    if key is None:
        return ""
    if isinstance(key, bool) or not isinstance(key, int | str):
        raise CannotRender(f"instance key {key!r} is neither a number nor a string")
    if isinstance(key, int):
        return f"[{key}]"
    text = str(key)
    # Terraform quotes keys the HCL way; plain printable keys are the same in every quoting.
    if not _SAFE_KEY_RE.fullmatch(text) or any(c in text for c in '"\\') or "${" in text or "%{" in text:
        raise CannotRender("an instance key needs HCL escaping")
    return f'["{text}"]'


def _module_parent(address: str) -> str:
    """``module.a["x"].module.b`` -> ``module.a["x"]``; a top-level module -> "" (root)."""
    steps = _module_steps(address)
    return ".".join(steps[:-1])


def _module_steps(address: str) -> list[str]:
    steps: list[str] = []
    position = 0
    while position < len(address):
        match = _MODULE_STEP_RE.match(address, position)
        if match is None:
            raise CannotRender(f"module address {address!r} is not one this renderer parses")
        steps.append(match.group(0))
        position = match.end()
        if position < len(address):
            if address[position] != ".":
                raise CannotRender(f"module address {address!r} is not one this renderer parses")
            position += 1
    return steps


def provider_address(provider: str) -> str:
    """``module.x.provider["registry.terraform.io/hashicorp/null"].alias`` -> the source address."""
    match = _PROVIDER_RE.search(provider)
    if match is None or match.group(1).startswith("-/"):
        raise CannotRender(f"provider reference {provider!r} is not one this renderer parses")
    return match.group(1)


# --------------------------------------------------------------------------- rendering


def load_state(raw: bytes) -> dict[str, Any]:
    """Parse a state file keeping every number exact (``RawNumber`` where a float would not be)."""
    try:
        state = json.loads(raw, parse_float=_parse_float, parse_int=_parse_int)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CannotRender(f"the state is not JSON: {exc}") from exc
    except RecursionError as exc:
        raise CannotRender("the state nests deeper than this renderer recurses") from exc
    if not isinstance(state, dict):
        raise CannotRender("the state is not a JSON object")
    if str(state.get("version")) != "4":
        raise CannotRender(f"state format version {state.get('version')!r} (only 4 is rendered)")
    unknown = set(state) - _STATE_KEYS
    if unknown:
        raise CannotRender(f"the state has fields this renderer does not know: {sorted(unknown)}")
    if state.get("check_results"):
        raise CannotRender("the state has check results")
    return state


def providers_in_state(state: Mapping[str, Any]) -> set[str]:
    """Source addresses of the providers that manage something in ``state``."""
    return {provider_address(str(resource.get("provider", ""))) for resource in state.get("resources") or []}


def render_state_json(state: Mapping[str, Any], schemas: SchemaLookup) -> bytes:
    """What ``terraform show -json`` prints for ``state`` (from ``load_state``); see the module doc."""
    try:
        return _render(state, schemas)
    except RecursionError as exc:  # values nested past the interpreter's recursion limit
        raise CannotRender("a value nests deeper than this renderer recurses") from exc


def _render(state: Mapping[str, Any], schemas: SchemaLookup) -> bytes:
    resources = state.get("resources") or []
    outputs = state.get("outputs") or {}
    document: dict[str, Any] = {"format_version": _FORMAT_VERSION}
    if not resources and not outputs:
        return _dump(document)
    if state.get("terraform_version"):
        document["terraform_version"] = str(state["terraform_version"])

    by_module: dict[str, list[dict[str, Any]]] = {}
    for resource in resources:
        module = str(resource.get("module") or "")
        by_module.setdefault(module, []).extend(_resource_instances(resource, module, schemas))

    values: dict[str, Any] = {}
    if outputs:
        values["outputs"] = {name: _output(outputs[name]) for name in sorted(outputs)}
    values["root_module"] = _module_tree(by_module)
    document["values"] = values
    return _dump(document)


def _output(output: Mapping[str, Any]) -> dict[str, Any]:
    rendered: dict[str, Any] = {"sensitive": bool(output.get("sensitive", False))}
    rendered["value"] = output.get("value")
    if "type" in output:
        rendered["type"] = output["type"]
    return rendered


def _resource_instances(
    resource: Mapping[str, Any], module: str, schemas: SchemaLookup
) -> list[dict[str, Any]]:
    unknown = set(resource) - _RESOURCE_KEYS
    if unknown:
        raise CannotRender(f"a resource has fields this renderer does not know: {sorted(unknown)}")
    mode = str(resource.get("mode", ""))
    if mode not in ("managed", "data"):
        raise CannotRender(f"resource mode {mode!r}")
    rtype, name = str(resource.get("type", "")), str(resource.get("name", ""))
    provider = provider_address(str(resource.get("provider", "")))
    schema = schemas.get((provider, mode, rtype))
    if schema is None:
        raise CannotRender(f"no cached schema for {mode} {rtype} of {provider}")
    base = (f"{module}." if module else "") + ("data." if mode == "data" else "") + f"{rtype}.{name}"
    rendered: list[dict[str, Any]] = []
    for instance in resource.get("instances") or []:
        unknown = set(instance) - _INSTANCE_KEYS
        if unknown:
            raise CannotRender(f"an instance has fields this renderer does not know: {sorted(unknown)}")
        version = int(instance.get("schema_version", 0))
        if version != schema.version:
            raise CannotRender(
                f"{base} is at schema version {version}, the cached schema at {schema.version}"
            )
        if "attributes" not in instance:
            raise CannotRender(f"{base} has no JSON attributes (a legacy flatmap state)")
        key = instance.get("index_key")
        item: dict[str, Any] = {
            "address": base + _index_suffix(key),
            "mode": mode,
            "type": rtype,
            "name": name,
        }
        if key is not None:
            item["index"] = key
        item["provider_name"] = provider
        item["schema_version"] = version
        attributes, flags = _decode(
            instance["attributes"],
            schema.implied_type,
            (),
            _sensitive_paths(instance.get("sensitive_attributes")),
        )
        if attributes:
            item["values"] = attributes
        item["sensitive_values"] = flags
        dependencies = instance.get("dependencies") or []
        if dependencies:
            item["depends_on"] = [str(dependency) for dependency in dependencies]
        status = instance.get("status")
        if status == "tainted":
            item["tainted"] = True
        elif status not in (None, ""):
            raise CannotRender(f"instance status {status!r}")
        rendered.append(item)
    return rendered


def _instance_order(item: Mapping[str, Any]) -> tuple[int, str, str, int, int, str]:
    """Terraform's resource instance order: data sources first, then type, name, and key
    (numbers by value, so ``[2]`` comes before ``[10]``)."""
    key = item.get("index")
    number = key if isinstance(key, int) else 0
    text = key if isinstance(key, str) else ""
    kind = 0 if key is None else 1 if isinstance(key, int) else 2
    return (0 if item["mode"] == "data" else 1, item["type"], item["name"], kind, number, text)


def _module_tree(by_module: Mapping[str, list[dict[str, Any]]]) -> dict[str, Any]:
    children: dict[str, set[str]] = {}
    for module in by_module:
        address = module
        while address:
            parent = _module_parent(address)
            children.setdefault(parent, set()).add(address)
            address = parent

    def build(address: str) -> dict[str, Any]:
        node: dict[str, Any] = {}
        instances = sorted(by_module.get(address, []), key=_instance_order)
        if instances:
            node["resources"] = instances
        if address:
            node["address"] = address
        below = sorted(children.get(address, set()))
        if below:
            node["child_modules"] = [build(child) for child in below]
        return node

    return build("")


# --------------------------------------------------------------------------- Go-compatible JSON

_HTML_ESCAPES = (
    ("<", "\\u003c"),
    (">", "\\u003e"),
    ("&", "\\u0026"),
    ("\u2028", "\\u2028"),
    ("\u2029", "\\u2029"),
)


def _dump(document: Any) -> bytes:
    """Compact JSON as Go's ``encoding/json`` writes it, plus the newline terraform prints.

    The C encoder does the work. Numbers a float cannot carry exactly (``RawNumber``) go out as
    unique placeholders and are put back as written; ``<``, ``>``, ``&`` and the JS line
    separators can only occur inside strings, so escaping them in the whole text is exact.
    """
    raw_numbers: list[str] = []
    marker = "\x00" + pysecrets.token_hex(8)

    def placeholder(value: object) -> str:
        if not isinstance(value, RawNumber):  # pragma: no cover - load_state makes no other type
            raise TypeError(f"cannot encode {type(value).__name__}")
        raw_numbers.append(value.text)
        return f"{marker}{len(raw_numbers) - 1}"

    text = json.dumps(document, ensure_ascii=False, separators=(",", ":"), default=placeholder)
    for character, escaped in _HTML_ESCAPES:
        if character in text:
            text = text.replace(character, escaped)
    if raw_numbers:
        quoted = re.escape(json.dumps(marker)[1:-1])
        text = re.sub(f'"{quoted}(\\d+)"', lambda match: raw_numbers[int(match.group(1))], text)
    try:
        return (text + "\n").encode("utf-8")
    except UnicodeEncodeError as exc:
        raise CannotRender("the state holds a string that is not valid UTF-8") from exc
