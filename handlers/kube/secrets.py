"""sandbox-sync-secrets decisions, pure: which Kubernetes Secrets a plan writes, and what it says.

The plan lists one entry per value (``secret_arn`` -> ``namespace/name`` key ``key_name``), and
several entries may fill keys of one Secret. Server-side apply owns a Secret's keys per field
manager, so one Secret is one apply carrying all its keys: applying key by key would drop the
key applied before (the runner's field manager stops listing it). The checks run before anything
is read, so a bad plan touches neither AWS nor the cluster.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from runner.sdk import HandlerError
from runner.sdk.plans import KubernetesSecret

#: A Secret's data key (``IsConfigMapKey``): letters, digits, ``-``, ``_`` and ``.``.
_DATA_KEY = re.compile(r"^[-._a-zA-Z0-9]{1,253}$")
#: A Secret's or namespace's name: a DNS-1123 subdomain (the namespace must also be a label).
_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_ARN = re.compile(r"^arn:aws[-a-z]*:secretsmanager:(?P<region>[a-z0-9-]+):\d{12}:secret:.+$")
FORMATS = frozenset({"", "string", "base64"})
#: Labels and annotations the runner puts on a Secret it writes (which source, which manager).
MANAGED_BY = "byoc-runner"
SOURCE_ANNOTATION = "byoc-runner.io/source-arns"


class SyncSecretsError(HandlerError):
    """The plan cannot be synced as written, or one secret could not be read or written."""


@dataclass(frozen=True)
class Entry:
    """One plan entry, checked, with the namespace defaulted."""

    index: int
    secret_name: str
    arn: str
    namespace: str
    name: str
    key: str
    format: str

    def label(self) -> str:
        """How messages name it: position, config name and target, never a value."""
        name = f" {self.secret_name!r}" if self.secret_name else ""
        return f"secret {self.index}{name} ({self.arn} -> {self.namespace}/{self.name}[{self.key}])"


@dataclass(frozen=True)
class Fetched:
    """A value read from Secrets Manager, already in the form it is stored in the cluster."""

    value: bytes
    version_id: str = ""
    created: datetime | None = None


@dataclass
class SecretObject:
    """One Kubernetes Secret to apply: its keys and the entries they come from."""

    namespace: str
    name: str
    entries: list[Entry] = field(default_factory=list)


def region_of(arn: str) -> str:
    """The region a Secrets Manager ARN names ("" for a name or partial ARN)."""
    found = _ARN.match(arn)
    return found.group("region") if found else ""


def check_entries(secrets: list[KubernetesSecret] | None, default_namespace: str = "default") -> list[Entry]:
    """Every entry checked (fields present, names Kubernetes accepts, a known format, no two
    entries for one key); every problem in one error, each naming its entry."""
    problems: list[str] = []
    out: list[Entry] = []
    targets: dict[tuple[str, str, str], int] = {}
    if not secrets:
        raise SyncSecretsError("the plan has no kubernetes_secrets: nothing to sync")
    for index, raw in enumerate(secrets, start=1):
        entry = Entry(
            index=index,
            secret_name=raw.secret_name,
            arn=raw.secret_arn.strip(),
            namespace=raw.namespace or default_namespace,
            name=raw.name,
            key=raw.key_name,
            format=raw.format.lower(),
        )
        what = entry.label()
        missing = [
            f for f, v in (("secret_arn", entry.arn), ("name", entry.name), ("key_name", entry.key)) if not v
        ]
        if missing:
            problems.append(f"{what}: no {', '.join(missing)}")
            continue
        if not _SUBDOMAIN.match(entry.name) or len(entry.name) > 253:
            problems.append(f"{what}: {entry.name!r} is not a valid Secret name")
        if not _LABEL.match(entry.namespace):
            problems.append(f"{what}: {entry.namespace!r} is not a valid namespace")
        if not _DATA_KEY.match(entry.key):
            problems.append(f"{what}: {entry.key!r} is not a valid Secret key (letters, digits, -, _, .)")
        if entry.format not in FORMATS:
            problems.append(f"{what}: unknown format {raw.format!r} (expected base64 or none)")
        target = (entry.namespace, entry.name, entry.key)
        if target in targets:
            problems.append(f"{what}: the same key as secret {targets[target]}")
        targets.setdefault(target, index)
        out.append(entry)
    if problems:
        raise SyncSecretsError("the plan's kubernetes_secrets cannot be synced: " + "; ".join(problems))
    return out


def stored_value(entry: Entry, string: str | None, binary: bytes | None) -> bytes:
    """The bytes the Secret's key holds: the secret as is, or with ``format: base64`` decoded
    and trimmed (the reference's behaviour). A secret with neither form is an error."""
    if string is None and binary is None:
        raise SyncSecretsError(f"{entry.label()}: Secrets Manager returned no value")
    if entry.format != "base64":
        return string.encode() if string is not None else (binary or b"")
    encoded = string if string is not None else (binary or b"").decode("ascii", "replace")
    try:
        return base64.b64decode(encoded.strip(), validate=True).strip()
    except (binascii.Error, ValueError):
        raise SyncSecretsError(f"{entry.label()}: format is base64 but the value is not base64") from None


def secret_objects(entries: list[Entry]) -> list[SecretObject]:
    """The Secrets to write, one per (namespace, name), in the plan's order of first mention."""
    by_target: dict[tuple[str, str], SecretObject] = {}
    for entry in entries:
        obj = by_target.setdefault((entry.namespace, entry.name), SecretObject(entry.namespace, entry.name))
        obj.entries.append(entry)
    return list(by_target.values())


def secret_body(obj: SecretObject, values: dict[int, Fetched]) -> dict[str, Any]:
    """The apply body: type Opaque, every key's value, and where the values came from."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": obj.name,
            "namespace": obj.namespace,
            "labels": {"app.kubernetes.io/managed-by": MANAGED_BY},
            "annotations": {SOURCE_ANNOTATION: ",".join(sorted({e.arn for e in obj.entries}))},
        },
        "type": "Opaque",
        "data": {e.key: base64.b64encode(values[e.index].value).decode() for e in obj.entries},
    }


def output_entry(entry: Entry, fetched: Fetched) -> dict[str, Any]:
    """What the outputs say of one synced secret: the reference's fields (no value), plus the
    version read."""
    out: dict[str, Any] = {
        "name": entry.secret_name or entry.name,
        "arn": entry.arn,
        "kubernetes_namespace": entry.namespace,
        "kubernetes_name": entry.name,
        "kubernetes_key": entry.key,
        "length": len(fetched.value),
        "exists": True,
    }
    if fetched.created is not None:
        out["timestamp"] = fetched.created.isoformat().replace("+00:00", "Z")
    if fetched.version_id:
        out["version_id"] = fetched.version_id
    return out


def outputs_for(entries: list[Entry], values: dict[int, Fetched]) -> dict[str, Any]:
    """The job's outputs: one entry per synced secret, keyed by its config name (``secret_name``),
    else by the Secret's name (the reference's key, under which two keys of one Secret overwrite
    each other; here a repeated key gets ``/<key_name>`` appended instead)."""
    out: dict[str, Any] = {}
    for entry in entries:
        key = entry.secret_name or entry.name
        if key in out:
            key = f"{key}/{entry.key}"
        out[key] = output_entry(entry, values[entry.index])
    return out
