"""Per-family handler settings, each parsed from its own environment prefix.

A handler family owns its settings: ``RUNNER_TERRAFORM_*`` belong to ``TerraformSettings``, and
``RUNNER_HELM_*``, ``RUNNER_DOCKER_*``, ``RUNNER_KUBE_*`` will each be one more small class
here, so the agent's configuration (``runner/config.py``) does not grow with every handler.

A family is a frozen dataclass deriving from ``HandlerSettings`` with a ``prefix``; its fields
are the lower-case rest of the variable name (``RUNNER_TERRAFORM_MIRROR_URL`` -> ``mirror_url``).
The same keys work in the ``--config`` file, in lower case without ``RUNNER_``
(``terraform_mirror_url``). A bad value raises ``SettingsError`` naming the variable; the agent
checks the built-in families at start-up (one line, exit code 2), and a handler reads its
family with ``ctx.handler_settings(TerraformSettings)``.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, TypeVar

S = TypeVar("S", bound="HandlerSettings")


class SettingsError(ValueError):
    """One handler setting is invalid; the message names the variable."""


@dataclasses.dataclass(frozen=True)
class HandlerSettings:
    """Base of a family's settings: subclass it as a frozen dataclass and set ``prefix``."""

    #: The environment prefix of the family, e.g. ``RUNNER_TERRAFORM_``.
    prefix: ClassVar[str] = ""

    @classmethod
    def env_names(cls) -> dict[str, str]:
        """Field name -> environment variable."""
        return {f.name: cls.prefix + f.name.upper() for f in dataclasses.fields(cls)}

    @classmethod
    def file_key(cls, field_name: str) -> str:
        """The ``--config`` file key of a field: the variable without ``RUNNER_``, lower case."""
        return (cls.prefix + field_name).lower().removeprefix("runner_")

    @classmethod
    def from_source(cls: type[S], source: Mapping[str, Any]) -> S:
        """Parse from ``{variable name: raw value}``; unset and empty values keep the default."""
        hints = typing.get_type_hints(cls)
        values: dict[str, Any] = {}
        for name, env_name in cls.env_names().items():
            raw = source.get(env_name)
            if raw is None or raw == "":
                continue
            values[name] = _coerce(env_name, raw, hints[name])
        return cls(**values)


def _coerce(env_name: str, raw: Any, annotation: Any) -> Any:
    target = annotation
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        options = [a for a in typing.get_args(annotation) if a is not type(None)]
        target = options[0] if len(options) == 1 else str
    if target is bool:
        return parse_bool(env_name, raw)
    if target is int:
        try:
            return int(raw)
        except (TypeError, ValueError):
            raise SettingsError(f"{env_name}: {raw!r} is not an integer") from None
    if target is float:
        try:
            return float(raw)
        except (TypeError, ValueError):
            raise SettingsError(f"{env_name}: {raw!r} is not a number") from None
    if target is Path:
        return Path(str(raw)).expanduser()
    if typing.get_origin(target) is tuple:
        items = raw if isinstance(raw, list | tuple) else str(raw).split(",")
        return tuple(str(x).strip() for x in items if str(x).strip())
    return str(raw).strip()


def parse_bool(env_name: str, raw: Any) -> bool:
    """The one spelling of a boolean setting, for the agent's config and every family's."""
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{env_name}: {raw!r} is not true or false")


@dataclasses.dataclass(frozen=True)
class TerraformSettings(HandlerSettings):
    """``RUNNER_TERRAFORM_*``: binary and provider resolution, and the apply shortcuts."""

    prefix: ClassVar[str] = "RUNNER_TERRAFORM_"

    #: The default terraform version when neither the app config nor the plan names one.
    version: str | None = None
    #: A mirror of releases.hashicorp.com to download binaries from (SHA256-checked, cached).
    mirror_url: str | None = None
    #: An offline provider mirror directory (``terraform providers mirror``).
    provider_mirror: Path | None = None
    #: Apply jobs skip an init with nothing to install and render state-json themselves
    #: (handlers/terraform/install.py, apply_state.py); false runs terraform for both.
    shortcuts: bool = True


@dataclasses.dataclass(frozen=True)
class KubeSettings(HandlerSettings):
    """``RUNNER_KUBE_*``: how kubernetes-manifest-deploy talks to a cluster (handlers/kube)."""

    prefix: ClassVar[str] = "RUNNER_KUBE_"

    #: The server-side apply field manager: the owner of every field the runner applies.
    field_manager: str = "byoc-runner"
    #: Seconds between readiness checks of Deployments, StatefulSets, DaemonSets and Jobs.
    poll_interval: float = 2.0


#: The families the runner ships: checked at start-up, their variables documented and known to
#: the deployment templates. A family of a third-party package is parsed when its handler asks.
BUILTIN_FAMILIES: tuple[type[HandlerSettings], ...] = (TerraformSettings, KubeSettings)


class SettingsSource:
    """The raw ``RUNNER_<FAMILY>_*`` values of the agent, parsed per family on first use."""

    def __init__(self, values: Mapping[str, Any] | None = None) -> None:
        self._values = dict(values or {})
        self._parsed: dict[type[HandlerSettings], HandlerSettings] = {}

    @property
    def values(self) -> Mapping[str, Any]:
        return self._values

    def get(self, model: type[S]) -> S:
        found = self._parsed.get(model)
        if found is None:
            found = self._parsed[model] = model.from_source(self._values)
        assert isinstance(found, model)
        return found
