"""fetch-image-metadata against a real registry: an index, a single image, auth, a missing tag."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from handlers.docker.metadata import FetchImageMetadataHandler
from handlers.oci.client import RegistryClient
from handlers.oci.errors import NotFound
from runner.api.plans import FetchImageMetadataPlan
from runner.testing import run_handler
from tests.support.registry import (
    PASSWORD,
    USER,
    RegistryServer,
    push_random_image,
    push_random_index,
    skopeo_raw_digest,
)

pytestmark = [pytest.mark.oci]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _plan(host: str, repo: str, tag: str, **extra: Any) -> FetchImageMetadataPlan:
    return FetchImageMetadataPlan.model_validate(
        {"Registry": {"RegistryType": "private_oci", "Repository": f"{host}/{repo}", **extra}, "Tag": tag}
    )


@pytest.mark.anyio
async def test_an_index_gives_every_platform(oci_registry: RegistryServer, tmp_path: Path) -> None:
    async with RegistryClient(oci_registry.host) as client:
        index = await push_random_index(
            client, "meta/multi", "v1", [("linux", "amd64"), ("linux", "arm64")], [1000], seed="meta-index"
        )
    run = await run_handler(
        FetchImageMetadataHandler(),
        _plan(oci_registry.host, "meta/multi", "v1"),
        job_type="fetch-image-metadata",
        workspace=tmp_path,
    )
    assert run.outputs is not None
    image = run.outputs["image"]
    assert image["digest"] == index.digest == skopeo_raw_digest(f"{oci_registry.host}/meta/multi:v1")
    assert image["media_type"] == "application/vnd.oci.image.index.v1+json"
    assert image["repository"] == f"{oci_registry.host}/meta/multi"
    assert [(p["os"], p["architecture"]) for p in image["platforms"]] == [
        ("linux", "amd64"),
        ("linux", "arm64"),
    ]
    assert image["platform"]["architecture"] == "amd64"
    assert image["labels"] == {"seed": "meta-index-linux-amd64"}
    assert [m["labels"]["seed"] for m in image["manifests"]] == [
        "meta-index-linux-amd64",
        "meta-index-linux-arm64",
    ]
    assert image["layers"][0]["size"] == 1000
    assert any("2 image(s): linux/amd64, linux/arm64" in m for m in run.log.messages("info"))


@pytest.mark.anyio
async def test_a_single_image_with_credentials(oci_basic_registry: RegistryServer, tmp_path: Path) -> None:
    async with RegistryClient(oci_basic_registry.host, credentials=_creds()) as client:
        pushed = await push_random_image(client, "meta/one", "b1", [300], seed="meta-one", docker=True)
    plan = _plan(oci_basic_registry.host, "meta/one", "b1", OCIAuth={"Username": USER, "Password": PASSWORD})
    run = await run_handler(
        FetchImageMetadataHandler(), plan, job_type="fetch-image-metadata", workspace=tmp_path
    )
    assert run.outputs is not None
    image = run.outputs["image"]
    assert image["digest"] == pushed.digest
    assert image["labels"] == {"seed": "meta-one"}
    assert image["platforms"] == [image["platform"]]
    assert "manifests" not in image
    assert PASSWORD in run.ctx.secrets.values  # type: ignore[attr-defined]
    assert PASSWORD not in json.dumps(run.outputs)


@pytest.mark.anyio
async def test_a_missing_tag_is_a_clear_error(oci_registry: RegistryServer, tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="nope"):
        await run_handler(
            FetchImageMetadataHandler(),
            _plan(oci_registry.host, "meta/none", "nope"),
            job_type="fetch-image-metadata",
            workspace=tmp_path,
        )


def _creds() -> Any:
    from handlers.oci.auth import Credentials

    return Credentials(USER, PASSWORD)


def test_fetch_image_metadata_through_the_control_plane(
    runner_process_factory: Any, operator: Any, oci_registry: RegistryServer
) -> None:
    """The job type end to end: table row (sync group), plan decoding, the handler in a runner."""
    import anyio

    async def push() -> Any:
        async with RegistryClient(oci_registry.host) as client:
            return await push_random_image(client, "meta/e2e", "rel-1", [700], seed="meta-e2e")

    pushed = anyio.run(push)
    runner_process_factory()
    plan = {
        "Registry": {"RegistryType": "public_oci", "Repository": f"{oci_registry.host}/meta/e2e"},
        "Tag": "rel-1",
    }
    job = operator.submit("fetch-image-metadata", plan=plan)
    assert job["group"] == "sync"
    done = operator.wait_job(job["id"], timeout=60)
    assert done["status"] == "finished", operator.result(job["id"])
    image = done["outputs"]["image"]
    assert image["digest"] == pushed.digest
    assert image["labels"] == {"seed": "meta-e2e"}
    assert image["platform"]["architecture"] == "amd64"
    bodies = " ".join(str(r.get("body", "")) for r in operator.logs(done["log_stream_id"]))
    assert "1 image(s): linux/amd64" in bodies
