"""What an apply job is about to apply, checked before terraform is started.

``apply_plan_contents`` must decode to a terraform plan file: a zip holding a ``tfplan`` member
(terraform's protobuf plan). Anything else fails the job at once with a clear message, before a
single terraform command runs.

Whether the plan is a *destroy* plan decides which sandbox hooks run (``*-destroy.sh`` or
``*-apply.sh``). The JSON of ``terraform show`` does not say; the plan's protobuf does, in
``Plan.ui_mode`` (field 17: 0 normal, 1 destroy, 2 refresh-only). Reading one top-level varint
needs no generated code, so it is done here with a tiny wire-format scanner.

Whether the apply job must run ``terraform init`` is decided here too. Applying a saved plan
takes the configuration and the backend settings from the plan file itself; ``init`` is only
needed to install what the plan file does not carry: the providers in its dependency lock file,
and the remote modules (their non-``.tf`` files, scripts a provisioner runs, live in
``.terraform/modules``). A plan that locks no provider and calls only local modules is applied
without ``init``: one terraform start and the backend round trips it makes, saved.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from dataclasses import dataclass

from runner.api.models import ErrorCode
from runner.api.plans import PlanError, decode_apply_plan_contents
from runner.handler import HandlerError

_UI_MODE_FIELD = 17
_MODES = {0: "normal", 1: "destroy", 2: "refresh-only"}
_LOCKED_PROVIDER_RE = re.compile(r'^\s*provider\s+"([^"]+)"', re.MULTILINE)
_LOCAL_SOURCE = ("./", "../")


class BadPlanFile(HandlerError):
    code = ErrorCode.INVALID_PLAN


@dataclass(frozen=True)
class PlanFile:
    raw: bytes
    mode: str
    #: Why ``terraform init`` must run before this plan is applied ("" when it need not).
    init_reason: str = "the plan file does not say what it needs"

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


def init_reason(zf: zipfile.ZipFile) -> str:
    """Why applying this plan needs ``terraform init`` ("" if it does not); see the module doc."""
    names = set(zf.namelist())
    if ".terraform.lock.hcl" not in names or "tfconfig/modules.json" not in names:
        return "the plan file has no dependency lock file or module manifest"
    locked = _LOCKED_PROVIDER_RE.findall(zf.read(".terraform.lock.hcl").decode("utf-8", "replace"))
    if locked:
        return f"providers to install: {', '.join(sorted(locked))}"
    try:
        manifest = json.loads(zf.read("tfconfig/modules.json"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return "the plan file's module manifest is not JSON"
    if not isinstance(manifest, list):
        return "the plan file's module manifest is not a list"
    for entry in manifest:
        if not isinstance(entry, dict):
            return "the plan file's module manifest is malformed"
        source = str(entry.get("Source", ""))
        if entry.get("Key") and not source.startswith(_LOCAL_SOURCE):
            return f"a remote module to install: {source}"
    return ""


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
            reason = init_reason(zf)
    except zipfile.BadZipFile:
        raise BadPlanFile(
            "apply_plan_contents is not a terraform plan file (not a zip); "
            "it must be the plan job's contents_compressed, base64-encoded"
        ) from None
    try:
        mode = plan_mode(inner)
    except ValueError:
        mode = "normal"
    return PlanFile(raw=raw, mode=mode, init_reason=reason)


def decode_plan_file(apply_plan_contents: str) -> PlanFile:
    """``apply_plan_contents`` (base64 of the plan job's raw bytes) -> a validated PlanFile."""
    try:
        raw = decode_apply_plan_contents(apply_plan_contents)
    except PlanError as exc:
        raise BadPlanFile(str(exc)) from exc
    return parse_plan_file(raw)
