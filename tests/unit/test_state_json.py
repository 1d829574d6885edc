"""The state-json renderer's decisions on hand-made states (the terraform tier compares with real
terraform byte for byte), the plan file's init decision and the schema cache."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import pytest

from handlers.terraform.install import install_without_init, refused_linked_providers
from handlers.terraform.planfile import PlanNeeds, plan_needs
from handlers.terraform.schemas import (
    BUILTIN_PROVIDER,
    SchemaCache,
    locked_versions,
    providers_in_plan,
    terraform_version_of,
)
from handlers.terraform.state_json import (
    CannotRender,
    ResourceSchema,
    implied_type,
    load_state,
    render_state_json,
)

NULL = "registry.terraform.io/hashicorp/null"
THING_TYPE = [
    "object",
    {
        "id": "string",
        "payload": "dynamic",
        "tags": ["map", "string"],
        "ports": ["list", "number"],
        "members": ["set", "string"],
        "block": ["list", ["object", {"name": "string", "secret": "string"}]],
        "missing": "bool",
    },
]
SCHEMAS = {
    (NULL, "managed", "thing"): ResourceSchema(1, THING_TYPE),
    (NULL, "data", "thing"): ResourceSchema(0, ["object", {"id": "string"}]),
}


def instance(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "schema_version": 1,
        "attributes": {
            "id": "i-1",
            "payload": {
                "value": {"b": [1, 2.50], "a": "x"},
                "type": ["object", {"a": "string", "b": ["tuple", ["number", "number"]]}],
            },
            "tags": {"z": "1", "a": "2"},
            "ports": [80, 443],
            "members": ["m2", "m1"],
            "block": [{"secret": "pw", "name": "n"}],
        },
        "sensitive_attributes": [],
    }
    base.update(fields)
    return base


def state(resources: list[dict[str, Any]], outputs: dict[str, Any] | None = None, **top: Any) -> bytes:
    document: dict[str, Any] = {
        "version": 4,
        "terraform_version": "1.11.4",
        "serial": 3,
        "lineage": "l",
        "outputs": outputs or {},
        "resources": resources,
        "check_results": None,
    }
    document.update(top)
    return json.dumps(document).encode()


def resource(
    *instances: dict[str, Any], mode: str = "managed", name: str = "one", **fields: Any
) -> dict[str, Any]:
    base = {
        "mode": mode,
        "type": "thing",
        "name": name,
        "provider": f'provider["{NULL}"]',
        "instances": list(instances),
    }
    base.update(fields)
    return base


def render(raw: bytes) -> dict[str, Any]:
    out = render_state_json(load_state(raw), SCHEMAS)
    assert out.endswith(b"\n")
    return dict(json.loads(out))


def test_values_are_decoded_with_the_schema_type() -> None:
    doc = render(state([resource(instance())]))
    (item,) = doc["values"]["root_module"]["resources"]
    assert item["address"] == "thing.one"
    assert item["provider_name"] == NULL
    assert item["schema_version"] == 1
    values = item["values"]
    assert list(values) == sorted(values), "attributes sorted"
    assert values["payload"] == {"a": "x", "b": [1, 2.5]}, "the dynamic wrapper is gone"
    assert list(values["tags"]) == ["a", "z"], "map keys sorted"
    assert values["members"] == ["m2", "m1"], "set order kept as terraform wrote it"
    assert values["missing"] is None, "an attribute the state lacks is null"
    assert values["block"] == [{"name": "n", "secret": "pw"}]
    assert item["sensitive_values"] == {
        "payload": {"b": [False, False]},
        "tags": {},
        "ports": [False, False],
        "members": [False, False],
        "block": [{}],
    }


def test_numbers_are_copied_as_written() -> None:
    raw = state([resource(instance())], outputs={"n": {"value": "NUMBER", "type": "number"}})
    text = render_state_json(load_state(raw.replace(b'"NUMBER"', b"12345678901234567890.125")), SCHEMAS)
    assert b'"value":12345678901234567890.125' in text, "not rounded through a float"
    assert b'"b":[1,2.5]' in text


def test_sensitive_paths_mark_nodes_and_whole_collections() -> None:
    marks = [
        [{"type": "get_attr", "value": "payload"}, {"type": "get_attr", "value": "a"}],
        [{"type": "get_attr", "value": "ports"}, {"type": "index", "value": {"value": 1, "type": "number"}}],
        [{"type": "get_attr", "value": "tags"}, {"type": "index", "value": {"value": "z", "type": "string"}}],
        [{"type": "get_attr", "value": "members"}],
        [
            {"type": "get_attr", "value": "block"},
            {"type": "index", "value": {"value": 0, "type": "number"}},
            {"type": "get_attr", "value": "secret"},
        ],
    ]
    (item,) = render(state([resource(instance(sensitive_attributes=marks))]))["values"]["root_module"][
        "resources"
    ]
    assert item["sensitive_values"] == {
        "payload": {"a": True, "b": [False, False]},
        "ports": [False, True],
        "tags": {"z": True},
        "members": True,
        "block": [{"secret": True}],
    }


def test_order_modules_outputs_and_keys() -> None:
    raw = state(
        [
            resource(instance(index_key=10), instance(index_key=2), name="counted"),
            resource({"schema_version": 0, "attributes": {"id": "d"}}, mode="data", name="zz"),
            resource(
                instance(index_key="b"),
                instance(index_key="a"),
                name="keyed",
                module='module.x["k"].module.y',
            ),
            resource(
                instance(dependencies=["thing.counted"], status="tainted"), name="solo", module="module.a"
            ),
        ],
        outputs={
            "b": {"value": "<&>", "type": "string"},
            "a": {"value": [1], "type": ["tuple", ["number"]], "sensitive": True},
        },
    )
    out = render_state_json(load_state(raw), SCHEMAS)
    assert b'"value":"\\u003c\\u0026\\u003e"' in out, "HTML characters escaped as Go does"
    doc = json.loads(out)
    assert list(doc) == ["format_version", "terraform_version", "values"]
    assert doc["values"]["outputs"] == {
        "a": {"sensitive": True, "value": [1], "type": ["tuple", ["number"]]},
        "b": {"sensitive": False, "value": "<&>", "type": "string"},
    }
    root = doc["values"]["root_module"]
    assert [r["address"] for r in root["resources"]] == [
        "data.thing.zz",
        "thing.counted[2]",
        "thing.counted[10]",
    ]
    assert [r["index"] for r in root["resources"][1:]] == [2, 10]
    a, x = root["child_modules"]
    assert a["address"] == "module.a"
    assert a["resources"][0]["tainted"] is True
    assert a["resources"][0]["depends_on"] == ["thing.counted"]
    assert x == {
        "address": 'module.x["k"]',
        "child_modules": [
            {
                "resources": x["child_modules"][0]["resources"],
                "address": 'module.x["k"].module.y',
            }
        ],
    }, "a module with no resources of its own still holds its children"
    assert [r["index"] for r in x["child_modules"][0]["resources"]] == ["a", "b"]


def test_empty_state_and_outputs_only() -> None:
    assert render_state_json(load_state(state([])), SCHEMAS) == b'{"format_version":"1.0"}\n'
    doc = render(state([], outputs={"o": {"value": None, "type": "dynamic"}}))
    assert doc["values"] == {
        "outputs": {"o": {"sensitive": False, "value": None, "type": "dynamic"}},
        "root_module": {},
    }


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"not json", "not JSON"),
        (state([], version=3), "format version"),
        (state([], extra_field=1), "fields this renderer does not know"),
        (state([], check_results=[{"object_kind": "resource"}]), "check results"),
        (state([resource(instance(deposed="abc"))]), "instance has fields"),
        (state([resource(instance(schema_version=2))]), "schema version"),
        (state([resource(instance(), type="other")]), "no cached schema"),
        (state([resource(instance(attributes={"id": "x", "surprise": 1}))]), "not in the schema"),
        (state([resource(instance(attributes={"payload": "unwrapped"}))]), "not wrapped"),
        (state([resource(instance(index_key='quote"d'))]), "HCL escaping"),
        (state([resource(instance(status="weird"))]), "status"),
        (state([resource(instance(), provider='provider["-/legacy"]')]), "provider reference"),
    ],
)
def test_what_it_does_not_model_is_refused(raw: bytes, reason: str) -> None:
    with pytest.raises(CannotRender, match=reason):
        render_state_json(load_state(raw), SCHEMAS)


def test_implied_type_of_blocks_and_nested_attributes() -> None:
    block = {
        "attributes": {
            "a": {"type": "string"},
            "n": {"nested_type": {"nesting_mode": "set", "attributes": {"x": {"type": "number"}}}},
        },
        "block_types": {
            "single": {"nesting_mode": "single", "block": {"attributes": {"s": {"type": "bool"}}}},
            "many": {"nesting_mode": "map", "block": {}},
        },
    }
    assert implied_type(block) == [
        "object",
        {
            "a": "string",
            "n": ["set", ["object", {"x": "number"}]],
            "single": ["object", {"s": "bool"}],
            "many": ["map", ["object", {}]],
        },
    ]
    with pytest.raises(CannotRender):
        implied_type({"block_types": {"b": {"nesting_mode": "strange", "block": {}}}})


# --------------------------------------------------------------------------- plan file: init or not


def plan_zip(lock: str | None, modules: list[dict[str, str]] | None) -> zipfile.ZipFile:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("tfplan", b"")
        if lock is not None:
            zf.writestr(".terraform.lock.hcl", lock)
        if modules is not None:
            zf.writestr("tfconfig/modules.json", json.dumps(modules))
    return zipfile.ZipFile(io.BytesIO(buffer.getvalue()))


LOCK = (
    '# generated\nprovider "registry.terraform.io/hashicorp/null" {\n'
    '  version = "2.1.2"\n  hashes = ["h1:x"]\n}\n'
)
LOCAL_MODULES = [{"Key": "", "Dir": "."}, {"Key": "child", "Source": "./child", "Dir": "child"}]


def test_plan_needs_reads_the_lock_file_and_module_manifest() -> None:
    assert plan_needs(plan_zip("# generated\n", LOCAL_MODULES)) == PlanNeeds(lock_file=b"# generated\n")
    needs = plan_needs(plan_zip(LOCK, LOCAL_MODULES))
    assert needs.providers == {NULL: "2.1.2"}
    assert needs.lock_file == LOCK.encode()
    remote = [*LOCAL_MODULES, {"Key": "vpc", "Source": "git::https://example.test/vpc.git", "Dir": "x"}]
    assert plan_needs(plan_zip("", remote)).remote_modules == ("git::https://example.test/vpc.git",)
    assert plan_needs(plan_zip(None, LOCAL_MODULES)).unknown
    assert plan_needs(plan_zip("", None)).unknown


def test_install_without_init_links_cached_providers_or_says_why_not(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    package = cache / NULL / "2.1.2" / "linux_amd64"
    needs = PlanNeeds(providers={NULL: "2.1.2"}, lock_file=LOCK.encode())

    module = tmp_path / "m1"
    module.mkdir()
    assert "not in the plugin cache" in install_without_init(module, needs, cache, "linux_amd64")
    assert list(module.iterdir()) == [], "nothing changed when init must run"

    package.mkdir(parents=True)
    (package / "terraform-provider-null_v2.1.2").write_bytes(b"binary")
    assert install_without_init(module, needs, cache, "linux_amd64") == ""
    link = module / ".terraform/providers" / NULL / "2.1.2/linux_amd64"
    assert link.is_symlink()
    assert link.resolve() == package.resolve()
    assert (module / ".terraform.lock.hcl").read_text() == LOCK

    other = tmp_path / "m2"
    other.mkdir()
    (other / ".terraform.lock.hcl").write_text("# the module's own, different\n")
    assert "differs" in install_without_init(other, needs, cache, "linux_amd64")
    assert "remote modules" in install_without_init(other, PlanNeeds(remote_modules=("git::x",)), cache, "x")
    assert install_without_init(other, PlanNeeds(unknown="why"), cache, "x") == "why"
    sneaky = PlanNeeds(providers={"../hashicorp/null": "2.1.2"}, lock_file=b"")
    assert "not an address" in install_without_init(tmp_path / "m3", sneaky, cache, "linux_amd64")
    assert install_without_init(tmp_path, PlanNeeds(lock_file=b"# none\n"), cache, "x") == ""


REFUSED = (
    "registry.terraform.io/hashicorp/null: the cached package for registry.terraform.io/hashicorp/null"
    " 2.1.2 (in .terraform/providers) does not match any of the checksums recorded in the"
    " dependency lock file"
)


@pytest.mark.parametrize(
    ("init_skipped", "state_stored", "summaries", "retry"),
    [
        (True, False, [REFUSED], True),
        (True, False, ["there is no package for x 1.0 cached in .terraform/providers"], True),
        (True, True, [REFUSED], False),  # terraform stored a state: something may have been applied
        (False, False, [REFUSED], False),  # init ran: nothing of ours to blame
        (True, False, ["Error creating the thing: AccessDenied"], False),
        (True, False, [], False),
    ],
)
def test_init_and_retry_only_for_refused_links_before_any_state(
    init_skipped: bool, state_stored: bool, summaries: list[str], retry: bool
) -> None:
    assert (
        refused_linked_providers(
            init_skipped=init_skipped, state_stored=state_stored, error_summaries=summaries
        )
        is retry
    )


# --------------------------------------------------------------------------- schema cache


def test_schema_cache_round_trip(tmp_path: Path) -> None:
    (tmp_path / ".terraform.lock.hcl").write_text(LOCK)
    versions = locked_versions(tmp_path, "1.11.4")
    assert versions == {BUILTIN_PROVIDER: "1.11.4", NULL: "2.1.2"}
    cache = SchemaCache(tmp_path / "cache")
    assert cache.missing("1.11.4", {NULL, "registry.terraform.io/x/unlocked"}, versions) == [NULL]
    document = {
        "format_version": "1.0",
        "provider_schemas": {
            NULL: {
                "resource_schemas": {
                    "null_resource": {"version": 0, "block": {"attributes": {"id": {"type": "string"}}}}
                },
                "data_source_schemas": {"null_data_source": {"version": 0, "block": {}}},
            },
            "registry.terraform.io/x/unlocked": {"resource_schemas": {}},
        },
    }
    assert cache.store("1.11.4", json.dumps(document).encode(), versions) == [NULL]
    assert cache.missing("1.11.4", {NULL}, versions) == []
    schemas = cache.lookup("1.11.4", {NULL}, versions)
    assert schemas[(NULL, "managed", "null_resource")] == ResourceSchema(0, ["object", {"id": "string"}])
    assert (NULL, "data", "null_data_source") in schemas
    with pytest.raises(CannotRender, match="no cached schema"):
        cache.lookup("1.12.0", {NULL}, versions)
    with pytest.raises(CannotRender, match="lock file"):
        cache.lookup("1.11.4", {"registry.terraform.io/x/unlocked"}, versions)


def test_plan_json_helpers() -> None:
    plan = (
        b'{"format_version":"1.2","terraform_version":"1.11.4",'
        b'"resource_changes":[{"provider_name":"a/b/c"},{"provider_name":"d/e/f"}]}'
    )
    assert providers_in_plan(plan) == {"a/b/c", "d/e/f"}
    assert terraform_version_of(plan) == "1.11.4"
    assert terraform_version_of(b"{}") == ""
