"""What an apply job is about to apply, checked before terraform is started.

``apply_plan_contents`` must decode to a terraform plan file: a zip holding a ``tfplan`` member
(terraform's protobuf plan). Anything else fails the job at once with a clear message, before a
single terraform command runs.

Whether the plan is a *destroy* plan decides which sandbox hooks run (``*-destroy.sh`` or
``*-apply.sh``). The JSON of ``terraform show`` does not say; the plan's protobuf does, in
``Plan.ui_mode`` (field 17: 0 normal, 1 destroy, 2 refresh-only). Reading one top-level varint
needs no generated code, so it is done here with a tiny wire-format scanner.

What applying the plan needs installed is read here too (``PlanNeeds``): the plan file carries
the configuration and the backend settings, but not the providers of its dependency lock file
nor the remote modules (whose non-``.tf`` files, scripts a provisioner runs, live in
``.terraform/modules``). ``handlers.terraform.install`` decides from it whether ``init`` can be
skipped.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from dataclasses import dataclass, field

from runner.sdk import ErrorCode, HandlerError
from runner.sdk.plans import PlanError, decode_apply_plan_contents

_UI_MODE_FIELD = 17
_MODES = {0: "normal", 1: "destroy", 2: "refresh-only"}
_LOCK_BLOCK_RE = re.compile(r'^provider\s+"([^"]+)"\s*\{(.*?)^\}', re.DOTALL | re.MULTILINE)
_LOCK_VERSION_RE = re.compile(r'^\s*version\s*=\s*"([^"]+)"', re.MULTILINE)
_LOCAL_SOURCE = ("./", "../")
LOCK_FILE = ".terraform.lock.hcl"
MODULE_MANIFEST = "tfconfig/modules.json"


@dataclass(frozen=True)
class PlanNeeds:
    """What must be installed in a working directory before this plan can be applied."""

    #: Provider source address -> version, from the plan's dependency lock file.
    providers: dict[str, str] = field(default_factory=dict)
    #: The plan's dependency lock file, as terraform wrote it.
    lock_file: bytes = b""
    #: Sources of the module calls that are not local paths.
    remote_modules: tuple[str, ...] = ()
    #: Why the plan file cannot tell ("" when it can).
    unknown: str = ""


def locked_providers(lock_file: str) -> dict[str, str]:
    """``provider "ADDR" { version = "V" ... }`` blocks of a dependency lock file -> {ADDR: V}."""
    found: dict[str, str] = {}
    for match in _LOCK_BLOCK_RE.finditer(lock_file):
        version = _LOCK_VERSION_RE.search(match.group(2))
        found[match.group(1)] = version.group(1) if version else ""
    return found


class BadPlanFile(HandlerError):
    code = ErrorCode.INVALID_PLAN


@dataclass(frozen=True)
class PlanFile:
    raw: bytes
    mode: str
    needs: PlanNeeds = field(default_factory=lambda: PlanNeeds(unknown="not read"))

    @property
    def is_destroy(self) -> bool:
        return self.mode == "destroy"


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise ValueError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return result, pos


def plan_mode(tfplan: bytes) -> str:
    """The ``ui_mode`` of a ``tfplan`` protobuf message ("normal" when absent: proto3 default)."""
    pos = 0
    while pos < len(tfplan):
        key, pos = _varint(tfplan, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(tfplan, pos)
            if number == _UI_MODE_FIELD:
                return _MODES.get(value, f"unknown({value})")
        elif wire == 1:
            pos += 8
        elif wire == 2:
            length, pos = _varint(tfplan, pos)
            pos += length
        elif wire == 5:
            pos += 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
    return "normal"


def plan_needs(zf: zipfile.ZipFile) -> PlanNeeds:
    """What applying the plan in ``zf`` needs installed; see ``PlanNeeds``."""
    names = set(zf.namelist())
    if LOCK_FILE not in names or MODULE_MANIFEST not in names:
        return PlanNeeds(unknown="the plan file has no dependency lock file or module manifest")
    lock_file = zf.read(LOCK_FILE)
    try:
        manifest = json.loads(zf.read(MODULE_MANIFEST))
        providers = locked_providers(lock_file.decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return PlanNeeds(unknown="the plan file's lock file or module manifest cannot be read")
    if not isinstance(manifest, list) or not all(isinstance(entry, dict) for entry in manifest):
        return PlanNeeds(unknown="the plan file's module manifest is malformed")
    remote = tuple(
        str(entry.get("Source", ""))
        for entry in manifest
        if entry.get("Key") and not str(entry.get("Source", "")).startswith(_LOCAL_SOURCE)
    )
    return PlanNeeds(providers=providers, lock_file=lock_file, remote_modules=remote)


def parse_plan_file(raw: bytes) -> PlanFile:
    """Validate a plan file's bytes and read its mode; BadPlanFile if it is not a plan."""
    try:
        with zipfile.ZipFile(io.BytesIO(raw)) as zf:
            try:
                inner = zf.read("tfplan")
            except KeyError:
                raise BadPlanFile(
                    "apply_plan_contents is a zip but not a terraform plan (no tfplan member)"
                ) from None
            needs = plan_needs(zf)
    except zipfile.BadZipFile:
        raise BadPlanFile(
            "apply_plan_contents is not a terraform plan file (not a zip); "
            "it must be the plan job's contents_compressed, base64-encoded"
        ) from None
    try:
        mode = plan_mode(inner)
    except ValueError:
        mode = "normal"
    return PlanFile(raw=raw, mode=mode, needs=needs)


def decode_plan_file(apply_plan_contents: str) -> PlanFile:
    """``apply_plan_contents`` (base64 of the plan job's raw bytes) -> a validated PlanFile."""
    try:
        raw = decode_apply_plan_contents(apply_plan_contents)
    except PlanError as exc:
        raise BadPlanFile(str(exc)) from exc
    return parse_plan_file(raw)
