"""The ``nuon`` storage driver: a release's records live in the control plane (docs/runner-api.md §9).

The reference embeds helm as a Go library and plugs in an HTTP driver. The ``helm`` CLI has no
pluggable drivers, so the records are **staged**: before helm runs, the control plane's records
of the release are written into the release namespace exactly as helm's own ``secret`` driver
stores them, helm runs with ``HELM_DRIVER=secret``, and afterwards every record of the release is
read back, the difference is written to the control plane (create, update, delete) and the staged
Secrets are deleted. Helm itself keeps the history's meaning (the superseded revision, a
rollback's revisions, ``--history-max`` pruning, an uninstall); the runner only copies records.

Why not the others:

- ``memory`` lives in one helm process: its ``HELM_MEMORY_DRIVER_DATA`` preload is read-only, and
  what a run changed (the previous revision marked superseded, a failed revision and its
  rollback, pruned revisions) cannot be read back when helm exits.
- ``sql`` needs a PostgreSQL the runner does not have.
- A proxy in front of the API server that serves helm's Secrets from the control plane would be
  an imitation of the Kubernetes API (lists, label selectors, watches, errors) for one resource.

Crash safety: records are deleted from the cluster only after the control plane took them. A
runner killed in between leaves them staged; they are newer than the control plane's copy, so at
the next job's staging **the cluster copy wins** and is written back then. The same path takes
over a release that helm's own ``secret`` driver kept before the plan switched to ``nuon``.
While staged, the records are Secrets in the release namespace, as with helm's default driver
(and with its 1 MiB limit per revision).
"""

from __future__ import annotations

import base64
import gzip
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import anyio

from handlers.kube.cluster import Cluster, KubeError
from handlers.kube.manifest import ManifestObject, ObjectKey
from runner.sdk import APIRequestFailed, APIUnreachable, HandlerError, HelmReleaseAPI, JobLog

#: helm's storage key prefix (``sh.helm.release.v1.<name>.v<version>``) and record type.
KEY_PREFIX = "sh.helm.release.v1"
RECORD_TYPE = "helm.sh/release.v1"
#: Labels helm's drivers set themselves; any other label is one of the release's own labels.
SYSTEM_LABELS = frozenset({"name", "owner", "status", "version", "createdAt", "modifiedAt"})
FIELD_MANAGER = "byoc-runner-helm-nuon"
#: The write-back runs shielded from a cancel, bounded by this.
WRITE_BACK_SECONDS = 60.0


class NuonStorageError(HandlerError):
    """The release records could not be staged or written back; the message says where they are."""


def release_key(name: str, version: int) -> str:
    return f"{KEY_PREFIX}.{name}.v{version}"


def version_of(release: Mapping[str, Any]) -> int:
    version = release.get("version")
    return version if isinstance(version, int) and not isinstance(version, bool) else 0


def status_of(release: Mapping[str, Any]) -> str:
    info = release.get("info")
    return str(info.get("status", "")) if isinstance(info, dict) else ""


def normal(release: Mapping[str, Any]) -> dict[str, Any]:
    """The record as compared and written: helm's JSON, plus ``labels`` only when there are some."""
    out = dict(release)
    if not out.get("labels"):
        out.pop("labels", None)
    return out


def encode_record(release: Mapping[str, Any]) -> str:
    """helm's ``encodeRelease``: base64 (standard) of the gzipped JSON, without the labels."""
    body = {k: v for k, v in release.items() if k != "labels"}
    return base64.b64encode(gzip.compress(json.dumps(body).encode())).decode()


def decode_record(text: str) -> dict[str, Any]:
    """helm's ``decodeRelease``: base64, then gunzip when it is gzip (helm reads plain JSON too)."""
    raw = base64.b64decode(text)
    if raw[:3] == b"\x1f\x8b\x08":
        raw = gzip.decompress(raw)
    data = json.loads(raw)
    if not isinstance(data, dict):
        raise ValueError("a release record is not a JSON object")
    return data


def secret_body(release: Mapping[str, Any], namespace: str, *, now: int | None = None) -> dict[str, Any]:
    """The Secret helm's ``secret`` driver would have written for this record."""
    name, version = str(release.get("name", "")), version_of(release)
    labels = {str(k): str(v) for k, v in (release.get("labels") or {}).items()}
    labels.update(
        name=name,
        owner="helm",
        status=status_of(release),
        version=str(version),
        createdAt=str(now if now is not None else int(time.time())),
    )
    record = encode_record(release)
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": RECORD_TYPE,
        "metadata": {"name": release_key(name, version), "namespace": namespace, "labels": labels},
        "data": {"release": base64.b64encode(record.encode()).decode()},
    }


def release_of_secret(secret: Mapping[str, Any]) -> dict[str, Any]:
    """The record a helm Secret holds, with the release's own labels, as the control plane keeps it."""
    meta = secret.get("metadata") or {}
    data = secret.get("data") or {}
    encoded = data.get("release")
    if not isinstance(encoded, str):
        raise ValueError(f"Secret {meta.get('name')} holds no release")
    release = decode_record(base64.b64decode(encoded).decode())
    labels = {k: v for k, v in (meta.get("labels") or {}).items() if k not in SYSTEM_LABELS}
    if labels:
        release["labels"] = labels
    return normal(release)


@dataclass
class WriteBack:
    """What the control plane must do so that it holds what the cluster holds."""

    create: list[str] = field(default_factory=list)
    update: list[str] = field(default_factory=list)
    delete: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.create or self.update or self.delete)

    def summary(self) -> str:
        return f"{len(self.create)} created, {len(self.update)} updated, {len(self.delete)} deleted"


def write_back_plan(cluster: Mapping[str, dict[str, Any]], stored: Mapping[str, dict[str, Any]]) -> WriteBack:
    """The difference, by key: the cluster's records are the truth after helm ran."""

    def order(keys: set[str], records: Mapping[str, dict[str, Any]]) -> list[str]:
        return sorted(keys, key=lambda k: (version_of(records[k]), k))

    both = cluster.keys() & stored.keys()
    return WriteBack(
        create=order(set(cluster.keys() - stored.keys()), cluster),
        update=order({k for k in both if normal(cluster[k]) != normal(stored[k])}, cluster),
        delete=order(set(stored.keys() - cluster.keys()), stored),
    )


def revisions(records: Mapping[str, dict[str, Any]]) -> str:
    versions = sorted(version_of(r) for r in records.values())
    return ", ".join(str(v) for v in versions) or "none"


class NuonStorage:
    """One job's staging of one release (``helm_chart_id``, namespace, name)."""

    def __init__(
        self,
        api: HelmReleaseAPI,
        cluster: Cluster,
        *,
        helm_chart_id: str,
        namespace: str,
        name: str,
        log: JobLog,
    ) -> None:
        self._api, self._cluster, self._log = api, cluster, log
        self.chart, self.namespace, self.name = helm_chart_id, namespace, name
        #: The control plane's records as staging read them, or None before staging: nothing else
        #: writes this release's records while its job runs, so the write-back diffs against these.
        self._stored: dict[str, dict[str, Any]] | None = None

    def _where(self) -> str:
        return f"release {self.namespace}/{self.name} (helm chart {self.chart})"

    async def stored(self) -> dict[str, dict[str, Any]]:
        """The control plane's records of this release, by key."""
        try:
            records = await self._api.helm_releases(self.chart, self.namespace)
        except (APIRequestFailed, APIUnreachable) as exc:
            raise NuonStorageError(
                f"{self._where()}: reading the release records from the control plane: {exc}"
            ) from exc
        mine = (normal(r) for r in records if r.get("name") == self.name)
        return {release_key(self.name, version_of(r)): r for r in mine}

    async def in_cluster(self) -> dict[str, dict[str, Any]]:
        """The helm Secrets of this release in its namespace, by key (helm's own selector)."""
        key = ObjectKey("v1", "Secret", self.namespace, "")
        secrets = await self._cluster.list_objects(key, f"owner=helm,name={self.name}")
        out: dict[str, dict[str, Any]] = {}
        for secret in secrets:
            if secret.get("type") != RECORD_TYPE:
                continue
            name = str((secret.get("metadata") or {}).get("name", ""))
            try:
                out[name] = release_of_secret(secret)
            except (ValueError, OSError, EOFError) as exc:
                raise NuonStorageError(
                    f"{self._where()}: the helm record {name} does not decode: {exc}"
                ) from exc
        return out

    async def stage(self, *, create_namespace: bool) -> None:
        """Write the control plane's records into the namespace where the cluster has none."""
        stored = await self.stored()
        if stored:
            await self._namespace_ready(len(stored), create_namespace=create_namespace)
        present = await self.in_cluster()
        if present.keys() - stored.keys():
            self._log.warning(
                f"{self._where()}: {len(present.keys() - stored.keys())} release record(s) in the cluster "
                f"that the control plane does not hold (revisions {revisions(present)}: left by an "
                "interrupted job, or kept by helm's secret driver before); they are taken over and "
                "written to the control plane after this job's helm run"
            )
        created: list[ObjectKey] = []
        try:
            for key in sorted(stored.keys() - present.keys(), key=lambda k: version_of(stored[k])):
                obj_key = ObjectKey("v1", "Secret", self.namespace, key)
                body = secret_body(stored[key], self.namespace)
                if await self._cluster.create(ManifestObject(obj_key, body), field_manager=FIELD_MANAGER):
                    created.append(obj_key)
        except BaseException:
            with anyio.move_on_after(10, shield=True):
                for obj_key in created:  # the control plane still has them: undo only what we wrote
                    await self._cluster.delete(obj_key)
            raise
        self._stored = stored
        self._log.info(
            f"helm storage nuon: {self._where()}: {len(stored)} record(s) from the control plane "
            f"(revisions {revisions(stored)}), {len(created)} staged as helm Secrets"
        )

    async def _namespace_ready(self, records: int, *, create_namespace: bool) -> None:
        key = ObjectKey("v1", "Namespace", "", self.namespace)
        try:
            if await self._cluster.get(key) is not None:
                return
        except KubeError as exc:
            if exc.status == 403:  # a namespaced Role cannot read namespaces: staging will tell
                return
            raise
        if not create_namespace:
            raise NuonStorageError(
                f"{self._where()}: namespace {self.namespace} does not exist, and the control plane "
                f"holds {records} record(s) of the release: create the namespace (or set "
                "create_namespace); helm would otherwise install it again at revision 1"
            )
        body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": self.namespace}}
        await self._cluster.create(ManifestObject(key, body), field_manager=FIELD_MANAGER)
        self._log.info(f"created namespace {self.namespace} to stage the release records in")

    async def write_back(self) -> WriteBack:
        """Make the control plane hold what the cluster holds, then delete the staged Secrets.

        Shielded and bounded: a cancelled job still writes back the revisions its helm made. When
        the control plane cannot take them, the Secrets stay and the next job writes them back.
        """
        if self._stored is None:
            return WriteBack()
        with anyio.CancelScope(shield=True) as scope:
            scope.deadline = anyio.current_time() + WRITE_BACK_SECONDS
            todo = await self._write_back()
        if scope.cancelled_caught:
            raise NuonStorageError(
                f"{self._where()}: writing the release records back did not finish within "
                f"{WRITE_BACK_SECONDS:.0f} s; they stay staged as helm Secrets in namespace "
                f"{self.namespace}, and the next job writes them back"
            )
        return todo

    async def _write_back(self) -> WriteBack:
        assert self._stored is not None
        present = await self.in_cluster()
        todo = write_back_plan(present, self._stored)
        try:
            for key in todo.create:
                await self._put(key, present[key], create=True)
            for key in todo.update:
                await self._put(key, present[key], create=False)
            for key in todo.delete:
                try:
                    await self._api.delete_helm_release(self.chart, self.namespace, key)
                except APIRequestFailed as exc:
                    if exc.status != 404:
                        raise
        except (APIRequestFailed, APIUnreachable) as exc:
            raise NuonStorageError(
                f"{self._where()}: the control plane did not take the release records ({exc}); they "
                f"stay staged as helm Secrets in namespace {self.namespace} (revisions "
                f"{revisions(present)}), and the next job writes them back"
            ) from exc
        for key in sorted(present):
            await self._cluster.delete(ObjectKey("v1", "Secret", self.namespace, key))
        self._log.info(
            f"helm storage nuon: {self._where()}: control plane now holds revisions "
            f"{revisions(present)} ({todo.summary()}); {len(present)} staged Secret(s) removed"
        )
        return todo

    async def _put(self, key: str, release: dict[str, Any], *, create: bool) -> None:
        """Create or update; each falls back to the other (a retried create meets its own 409)."""
        try:
            if create:
                await self._api.create_helm_release(self.chart, self.namespace, key, release)
            else:
                await self._api.update_helm_release(self.chart, self.namespace, key, release)
        except APIRequestFailed as exc:
            if exc.status not in (404, 409):
                raise
            if create:
                await self._api.update_helm_release(self.chart, self.namespace, key, release)
            else:
                await self._api.create_helm_release(self.chart, self.namespace, key, release)
