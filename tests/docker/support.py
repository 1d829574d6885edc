"""Helpers of the docker tier's end-to-end tests: submit, wait, read outputs, logs and layers."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from typing import Any

import anyio

from handlers.oci.client import RegistryClient

TERMINAL = ("finished", "failed", "timed-out", "cancelled", "not-attempted")


def run_job(
    operator: Any, job_type: str, plan: dict[str, Any], timeout: float = 180.0, **fields: Any
) -> dict[str, Any]:
    job = operator.submit(job_type, plan=plan, **fields)
    done: dict[str, Any] = operator.wait_job(job["id"], TERMINAL, timeout=timeout)
    return done


def outputs_of(operator: Any, job_id: str) -> dict[str, Any]:
    job = operator.get_job(job_id)
    if isinstance(job.get("outputs"), dict):
        return dict(job["outputs"])
    execution = operator.executions(job_id)[0]
    stored = execution.get("outputs") or {}
    return dict(stored.get("outputs") or json.loads(stored.get("outputs_json") or "{}"))


def log_text(operator: Any, job: dict[str, Any]) -> str:
    records = operator.logs(job["log_stream_id"])
    return "\n".join(str(r.get("body", "")) for r in records)


def failure(operator: Any, job: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = operator.result(job["id"])
    meta: dict[str, Any] = result.get("error_metadata") or {}
    return meta


def _layer_files(data: bytes) -> dict[str, bytes]:
    raw = gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
    files: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        for member in tar.getmembers():
            if member.isfile():
                handle = tar.extractfile(member)
                files[member.name.lstrip("./")] = handle.read() if handle else b""
    return files


async def _read_image(
    registry: str, repository: str, tag: str
) -> tuple[dict[str, Any], list[bytes], dict[str, bytes]]:
    async with RegistryClient(registry) as client:
        manifest = await client.get_manifest(repository, tag)
        config_desc = manifest.config
        assert config_desc is not None
        config = json.loads(await client.get_blob(repository, config_desc.digest))
        layers = [
            await client.get_blob(repository, d.digest, max_size=64 * 1024 * 1024) for d in manifest.layers
        ]
    files: dict[str, bytes] = {}
    for layer in layers:
        files.update(_layer_files(layer))
    return config, layers, files


def read_pushed_image(
    registry: str, repository: str, tag: str
) -> tuple[dict[str, Any], list[bytes], dict[str, bytes]]:
    """The image config, every raw layer blob and the merged files of an image in a registry."""
    return anyio.run(_read_image, registry, repository, tag)


def layers_contain(layers: list[bytes], needle: bytes) -> bool:
    for layer in layers:
        raw = gzip.decompress(layer) if layer[:2] == b"\x1f\x8b" else layer
        if needle in raw:
            return True
    return False


async def _has_tag(registry: str, repository: str, tag: str) -> bool:
    async with RegistryClient(registry) as client:
        return await client.head_manifest(repository, tag) is not None


def has_tag(registry: str, repository: str, tag: str) -> bool:
    return anyio.run(_has_tag, registry, repository, tag)
