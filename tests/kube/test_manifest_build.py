"""kubernetes-manifest-build from a real git daemon into the real registry, pulled back; no cluster."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from handlers.kube.build import (
    ARTIFACT_TYPE,
    KubernetesManifestBuildHandler,
    concatenate,
    manifest_files,
    validate,
)
from handlers.kube.manifest import ManifestError
from handlers.oci.artifacts import pull_directory
from handlers.oci.registry import open_registry
from runner.sdk import ToolSettings
from runner.sdk.plans import OCIRegistryRepository, SandboxMode
from runner.testing import make_context, run_handler
from tests.support.registry import RegistryServer
from tests.support.terraform import GitServer, git_server  # noqa: F401 - fixture

CM = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\n  namespace: app\ndata: {a: b}\n"
SVC = "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  ports: [{port: 80}]\n"


@pytest.fixture
def anyio_backend() -> str:
    """The runner runs on asyncio (anyio's trio backend is not one it ships)."""
    return "asyncio"


NS = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: app\n"


def dst(registry: RegistryServer, repository: str) -> dict[str, Any]:
    return {"RegistryType": "private_oci", "Repository": f"{registry.host}/{repository}"}


async def build(
    git: GitServer, registry: RegistryServer, files: dict[str, str], tmp_path: Path, name: str
) -> Any:
    url = git.create(name, files)
    plan = {"git_source": {"url": url, "ref": "main", "path": "deploy"}, "dst_registry": dst(registry, name)}
    ws = tmp_path / "build"
    ws.mkdir()
    ctx = make_context(
        "kubernetes-manifest-build",
        plan,
        workspace=ws,
        owner_id="bld42",
        tools=ToolSettings(tools_dir=tmp_path),
    )
    return await run_handler(KubernetesManifestBuildHandler(), ctx=ctx, raise_errors=False)


@pytest.mark.anyio
async def test_build_pushes_the_validated_manifests(
    git_server: GitServer,  # noqa: F811
    oci_registry: RegistryServer,
    tmp_path: Path,
) -> None:
    files = {
        "deploy/b/svc.yml": SVC,
        "deploy/a.yaml": NS + "---\n" + CM,
        "deploy/README.md": "not a manifest",
        "other/ignored.yaml": "not: [valid",
    }
    run = await build(git_server, oci_registry, files, tmp_path, "manifests")
    assert run.error is None, run.error
    outputs = run.outputs
    assert outputs is not None
    assert outputs["files"] == [{"AbsPath": "", "RelPath": "manifest.yaml", "FileType": ""}]
    assert outputs["image"]["tag"] == "bld42"
    assert outputs["image"]["repository"].endswith("manifests")
    assert outputs["digest"].startswith("sha256:")
    assert outputs["image"]["digest"] == outputs["digest"]
    assert outputs["objects"] == [
        {"apiVersion": "v1", "kind": "Namespace", "namespace": "", "name": "app"},
        {"apiVersion": "v1", "kind": "ConfigMap", "namespace": "app", "name": "settings"},
        {"apiVersion": "v1", "kind": "Service", "namespace": "", "name": "web"},
    ]

    repo = OCIRegistryRepository.model_validate(dst(oci_registry, "manifests"))
    target = await open_registry(repo, config=ToolSettings(tools_dir=tmp_path))
    async with target:
        manifest = await target.client.get_manifest(target.repository, "bld42")
        pulled = await pull_directory(target, "bld42", tmp_path / "pulled")
    assert manifest.artifact_type == ARTIFACT_TYPE
    assert pulled == ["manifest.yaml"]
    expected = concatenate({"a.yaml": files["deploy/a.yaml"], "b/svc.yml": SVC})
    assert (tmp_path / "pulled" / "manifest.yaml").read_bytes() == expected.encode()


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("apiVersion: v1\nkind: ConfigMap\nmetadata: {}\n", "deploy/bad.yaml: manifest document 1"),
        (NS + "---\napiVersion: v1\nmetadata:\n  name: x\n", "deploy/bad.yaml: manifest document 2"),
        ("a: [b\n", "deploy/bad.yaml: the manifest is not valid YAML"),
        (NS, "deploy/bad.yaml: Namespace app (v1) is already defined in a.yaml"),
    ],
    ids=["missing-name", "missing-kind", "unparseable", "duplicate"],
)
async def test_invalid_manifests_fail_naming_file_and_document(
    git_server: GitServer,  # noqa: F811
    oci_registry: RegistryServer,
    tmp_path: Path,
    text: str,
    message: str,
) -> None:
    files = {"deploy/a.yaml": NS, "deploy/bad.yaml": text}
    run = await build(git_server, oci_registry, files, tmp_path, "invalid-" + str(abs(hash(text)) % 10**8))
    assert isinstance(run.error, ManifestError)
    assert message.removeprefix("deploy/") in str(run.error)
    assert not run.outputs


@pytest.mark.anyio
async def test_an_empty_source_fails_clearly(
    git_server: GitServer,  # noqa: F811
    oci_registry: RegistryServer,
    tmp_path: Path,
) -> None:
    run = await build(
        git_server, oci_registry, {"deploy/empty.yaml": "---\n", "x.yaml": NS}, tmp_path, "empty"
    )
    assert isinstance(run.error, ManifestError)
    assert "no Kubernetes object" in str(run.error)


@pytest.mark.anyio
async def test_sandbox_mode_reports_the_blocks_outputs_and_pushes_nothing(tmp_path: Path) -> None:
    plan = {
        "git_source": {"url": "git://127.0.0.1:1/none", "ref": "main"},
        "dst_registry": {"RegistryType": "private_oci", "Repository": "127.0.0.1:1/x"},
        "sandbox_mode": {"enabled": True, "outputs": {"digest": "sha256:fake"}},
    }
    ctx = make_context("kubernetes-manifest-build", plan, workspace=tmp_path, owner_id="b1")
    block = ctx.plan.sandbox_mode
    assert isinstance(block, SandboxMode)
    await KubernetesManifestBuildHandler().sandbox(ctx, block)
    assert ctx.outputs == {"digest": "sha256:fake"}
    assert not any(tmp_path.iterdir())


def test_files_are_sorted_recursive_yaml_only(tmp_path: Path) -> None:
    for rel in ("b.yml", "a/z.yaml", "a/notes.txt", ".git/config.yaml", "c.yaml"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("")
    assert [p.relative_to(tmp_path).as_posix() for p in manifest_files(tmp_path)] == [
        "a/z.yaml",
        "b.yml",
        "c.yaml",
    ]


def test_validate_lists_every_files_problem_and_refuses_lists() -> None:
    listed = "apiVersion: v1\nkind: List\nitems: []\n"
    with pytest.raises(ManifestError) as err:
        validate({"a.yaml": "kind: Secret\n", "b.yaml": listed, "c.yaml": NS})
    text = str(err.value)
    assert "a.yaml: manifest document 1" in text
    assert "b.yaml: manifest document 1 is a List" in text


def test_empty_files_are_skipped_not_refused() -> None:
    objects = validate({"a.yaml": "", "b.yaml": "---\n---\n" + NS})
    assert [o.key.name for o in objects] == ["app"]
