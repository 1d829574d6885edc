"""Runner configuration: defaults < config file < environment < flags, into one frozen Config.

Environment names are the reference runner's (``RUNNER_ID``, ``RUNNER_API_URL``,
``RUNNER_API_TOKEN``) plus ours, all ``RUNNER_*``. A config file (``--config`` or
``RUNNER_CONFIG``) may be TOML, YAML or JSON with the same keys in lower case without the
prefix (``api_url``, ``groups``...). A missing or invalid value raises ``ConfigError`` naming
the key; the CLI prints that one line and exits with code 2.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from runner import __version__
from runner.api.models import JobGroup
from runner.api.statedir import default_state_dir
from runner.sdk.settings import BUILTIN_FAMILIES, HandlerSettings, SettingsError, SettingsSource

H = TypeVar("H", bound=HandlerSettings)


class ConfigError(ValueError):
    """One configuration value is missing or invalid; the message names it."""


KNOWN_GROUPS = frozenset(g.value for g in JobGroup if g.value not in ("", "any"))


@dataclass(frozen=True)
class Config:
    runner_id: str
    api_url: str
    api_token: str = field(repr=False)
    state_dir: Path = field(default_factory=default_state_dir)
    #: Groups to poll; None means "from settings" (and a default set if settings name none).
    groups: tuple[str, ...] | None = None
    #: Jobs at once per group (default 1, like the reference) and over all groups.
    concurrency: Mapping[str, int] = field(default_factory=dict)
    default_concurrency: int = 1
    max_concurrency: int = 8
    drain_grace: float = 60.0
    health_addr: str | None = "127.0.0.1:9090"
    log_format: str = "json"
    log_level: str | None = None
    process: str = ""
    #: Plain polling: pause after an empty answer; long-poll: how long the server may hold a poll.
    poll_interval: float = 1.0
    #: Idle polling backs off from ``poll_interval`` to this (the reference's 5 s).
    idle_poll_interval: float = 5.0
    long_poll_wait: float = 20.0
    #: How often a running job's status is read for cancellation (when not long-polled).
    cancel_poll_interval: float = 1.0
    #: SIGINT -> SIGKILL grace for child processes.
    child_grace: float = 10.0
    settings_refresh_interval: float = 30.0
    request_timeout: float = 10.0
    sandbox_job_duration: float = 5.0
    sandbox_faults: float = 0.0
    tools_dir: Path | None = None
    insecure_registries: tuple[str, ...] = ()
    #: The handler families' own settings, raw: ``RUNNER_TERRAFORM_*`` and the like, by variable
    #: name (``runner.sdk.settings``); each family parses its prefix.
    handler_env: Mapping[str, str] = field(default_factory=dict)
    #: A job is refused with a clear error when the state dir has less free space than this.
    min_free_mb: int = 100
    #: Extra or replacement handlers without packaging: job type -> "module:Class".
    handlers: Mapping[str, str] = field(default_factory=dict)
    version: str = __version__

    # derived locations ----------------------------------------------------
    @property
    def workspaces_dir(self) -> Path:
        return self.state_dir / "workspaces"

    @property
    def journal_dir(self) -> Path:
        return self.state_dir / "journal"

    @property
    def spool_dir(self) -> Path:
        return self.state_dir / "spool"

    @property
    def resolved_tools_dir(self) -> Path:
        return self.tools_dir or (self.state_dir / "tools")

    def concurrency_for(self, group: str) -> int:
        return max(1, int(self.concurrency.get(group, self.default_concurrency)))

    def with_overrides(self, **changes: Any) -> Config:
        return replace(self, **changes)

    def family_settings(self) -> SettingsSource:
        """The handler families' settings, for the jobs' contexts."""
        return SettingsSource(self.handler_env)

    def handler_settings(self, model: type[H]) -> H:
        return model.from_source(self.handler_env)

    @property
    def terraform_shortcuts(self) -> bool:
        """Compatibility: ``RUNNER_TERRAFORM_SHORTCUTS`` now belongs to ``TerraformSettings``."""
        from runner.sdk.settings import TerraformSettings

        return self.handler_settings(TerraformSettings).shortcuts


# --------------------------------------------------------------------------- parsing

_ENV_PREFIX = "RUNNER_"
#: config key -> environment variable (the first three are the reference runner's names).
ENV_NAMES: dict[str, str] = {
    "runner_id": "RUNNER_ID",
    "api_url": "RUNNER_API_URL",
    "api_token": "RUNNER_API_TOKEN",
    "state_dir": "RUNNER_STATE_DIR",
    "groups": "RUNNER_GROUPS",
    "concurrency": "RUNNER_CONCURRENCY",
    "default_concurrency": "RUNNER_DEFAULT_CONCURRENCY",
    "max_concurrency": "RUNNER_MAX_CONCURRENCY",
    "drain_grace": "RUNNER_DRAIN_GRACE",
    "health_addr": "RUNNER_HEALTH_ADDR",
    "log_format": "RUNNER_LOG_FORMAT",
    "log_level": "RUNNER_LOG_LEVEL",
    "process": "RUNNER_PROCESS",
    "poll_interval": "RUNNER_POLL_INTERVAL",
    "idle_poll_interval": "RUNNER_IDLE_POLL_INTERVAL",
    "long_poll_wait": "RUNNER_LONG_POLL_WAIT",
    "cancel_poll_interval": "RUNNER_CANCEL_POLL_INTERVAL",
    "child_grace": "RUNNER_CHILD_GRACE",
    "settings_refresh_interval": "RUNNER_SETTINGS_REFRESH_INTERVAL",
    "request_timeout": "RUNNER_REQUEST_TIMEOUT",
    "sandbox_job_duration": "RUNNER_SANDBOX_JOB_DURATION",
    "sandbox_faults": "RUNNER_SANDBOX_FAULTS",
    "tools_dir": "RUNNER_TOOLS_DIR",
    "insecure_registries": "RUNNER_INSECURE_REGISTRIES",
    "handlers": "RUNNER_HANDLERS",
    "min_free_mb": "RUNNER_MIN_FREE_MB",
}
#: The built-in handler families' settings: config file key -> environment variable. They are
#: not Config fields: each family parses its own (``runner.sdk.settings``).
FAMILY_ENV_NAMES: dict[str, str] = {
    model.file_key(name): env_name
    for model in BUILTIN_FAMILIES
    for name, env_name in model.env_names().items()
}
ENV_NAMES.update(FAMILY_ENV_NAMES)
#: Compatibility with the reference runner's sandbox variables.
LEGACY_ENV = {"SANDBOX_JOB_DURATION": "sandbox_job_duration", "LOG_LEVEL": "log_level"}

_FIELD_TYPES = {f.name: f.type for f in fields(Config) if f.name != "handler_env"}


def _env_name(key: str) -> str:
    return ENV_NAMES.get(key, _ENV_PREFIX + key.upper())


def _parse_duration_seconds(key: str, raw: Any) -> float:
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        value = float(raw)
    else:
        text = str(raw).strip().lower()
        units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
        parsed: float | None = None
        for suffix in ("ms", "s", "m", "h"):
            if text.endswith(suffix) and text[: -len(suffix)].replace(".", "", 1).isdigit():
                parsed = float(text[: -len(suffix)]) * units[suffix]
                break
        if parsed is None:
            try:
                parsed = float(text)
            except ValueError:
                raise ConfigError(f"{_env_name(key)}: {raw!r} is not a duration (e.g. 30, 30s, 5m)") from None
        value = parsed
    if value < 0:
        raise ConfigError(f"{_env_name(key)}: must not be negative")
    return value


def _parse_list(raw: Any) -> tuple[str, ...]:
    if isinstance(raw, list | tuple):
        return tuple(str(x).strip() for x in raw if str(x).strip())
    return tuple(x.strip() for x in str(raw).split(",") if x.strip())


def _parse_concurrency(raw: Any) -> dict[str, int]:
    """``build=2,deploy=1`` or a mapping."""
    items: dict[str, Any]
    if isinstance(raw, Mapping):
        items = dict(raw)
    else:
        items = {}
        for part in _parse_list(raw):
            name, sep, num = part.partition("=")
            if not sep:
                raise ConfigError(f"{_env_name('concurrency')}: {part!r} is not GROUP=N")
            items[name.strip()] = num.strip()
    out: dict[str, int] = {}
    for name, num in items.items():
        if name not in KNOWN_GROUPS:
            raise ConfigError(f"{_env_name('concurrency')}: unknown group {name!r}")
        try:
            out[name] = int(num)
        except (TypeError, ValueError):
            raise ConfigError(f"{_env_name('concurrency')}: {name}={num!r} is not an integer") from None
        if out[name] < 1:
            raise ConfigError(f"{_env_name('concurrency')}: {name} must be at least 1")
    return out


def _parse_handlers(raw: Any) -> dict[str, str]:
    """``type=module:Class,...`` or a mapping."""
    items = dict(raw) if isinstance(raw, Mapping) else dict(p.partition("=")[::2] for p in _parse_list(raw))
    out: dict[str, str] = {}
    for job_type, target in items.items():
        target = str(target).strip()
        module, sep, attr = target.partition(":")
        if not job_type.strip() or not sep or not module or not attr:
            raise ConfigError(f"{_env_name('handlers')}: {job_type}={target!r} is not TYPE=module:Class")
        out[job_type.strip()] = target
    return out


def _coerce(key: str, raw: Any) -> Any:
    if key == "groups":
        groups = _parse_list(raw)
        unknown = [g for g in groups if g not in KNOWN_GROUPS]
        if unknown:
            known = ", ".join(sorted(KNOWN_GROUPS))
            raise ConfigError(f"{_env_name(key)}: unknown group(s) {', '.join(unknown)} (known: {known})")
        return groups or None
    if key == "concurrency":
        return _parse_concurrency(raw)
    if key == "handlers":
        return _parse_handlers(raw)
    if key == "insecure_registries":
        return _parse_list(raw)
    if key in ("state_dir", "tools_dir"):
        return Path(str(raw)).expanduser()
    if key == "min_free_mb":
        return _parse_int(key, raw, minimum=0)
    if key in ("default_concurrency", "max_concurrency"):
        return _parse_int(key, raw, minimum=1)
    if key in (
        "drain_grace",
        "poll_interval",
        "idle_poll_interval",
        "long_poll_wait",
        "cancel_poll_interval",
        "child_grace",
        "settings_refresh_interval",
        "request_timeout",
        "sandbox_job_duration",
    ):
        return _parse_duration_seconds(key, raw)
    if key == "sandbox_faults":
        try:
            probability = float(raw)
        except (TypeError, ValueError):
            raise ConfigError(f"{_env_name(key)}: {raw!r} is not a probability") from None
        if not 0.0 <= probability <= 1.0:
            raise ConfigError(f"{_env_name(key)}: must be between 0 and 1")
        return probability
    if key == "log_format":
        fmt = str(raw).strip().lower()
        if fmt not in ("json", "console"):
            raise ConfigError(f"{_env_name(key)}: must be json or console, not {raw!r}")
        return fmt
    if key == "log_level":
        level = str(raw).strip().upper()
        if level == "WARNING":
            level = "WARN"
        if level not in ("DEBUG", "INFO", "WARN", "ERROR"):
            raise ConfigError(f"{_env_name(key)}: must be DEBUG, INFO, WARN or ERROR, not {raw!r}")
        return level
    if key == "health_addr":
        text = str(raw).strip()
        if text.lower() in ("", "off", "none", "false"):
            return None
        _host, sep, port = text.rpartition(":")
        if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ConfigError(f"{_env_name(key)}: {raw!r} is not HOST:PORT (or 'off')")
        return text
    return str(raw)


def _parse_int(key: str, raw: Any, *, minimum: int) -> int:
    try:
        value = int(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"{_env_name(key)}: {raw!r} is not an integer") from None
    if value < minimum:
        raise ConfigError(
            f"{_env_name(key)}: "
            + ("must not be negative" if minimum == 0 else f"must be at least {minimum}")
        )
    return value


#: Never handed to handler families: credentials of the operator CLI and the like.
_SECRET_NAME = re.compile(r"TOKEN|PASSWORD|SECRET|CREDENTIAL|PRIVATE", re.IGNORECASE)


def _handler_env(merged: Mapping[str, Any], env: Mapping[str, str]) -> dict[str, str]:
    """The families' raw settings: file keys of the built-in families, then every ``RUNNER_*``
    variable that is not the agent's own (a third-party family reads its prefix from these).
    The built-in families are parsed here, so a bad value stops start-up like any other."""
    own = set(ENV_NAMES.values()) - set(FAMILY_ENV_NAMES.values())
    out = {
        FAMILY_ENV_NAMES[k]: v if isinstance(v, str) else _file_text(v)
        for k, v in merged.items()
        if k in FAMILY_ENV_NAMES
    }
    out.update(
        {
            k: v
            for k, v in env.items()
            if k.startswith(_ENV_PREFIX) and k not in own and v != "" and not _SECRET_NAME.search(k)
        }
    )
    source = SettingsSource(out)
    for model in BUILTIN_FAMILIES:
        try:
            source.get(model)
        except SettingsError as exc:
            raise ConfigError(str(exc)) from None
    return out


def _file_text(value: Any) -> str:
    """A file value (TOML and YAML give booleans, numbers, lists) as the variable would be."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value)
    return str(value)


def _yaml_load(text: str) -> Any:
    """PyYAML is imported only for a YAML config file: 11 ms of every start-up otherwise
    (``runner exec``, ``runner run``); its errors come back as ValueError."""
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(str(exc)) from None


def read_config_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"config file {path}: {exc.strerror}") from None
    try:
        if path.suffix == ".toml":
            data: Any = tomllib.loads(text)
        elif path.suffix == ".json":
            data = json.loads(text)
        else:
            data = _yaml_load(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, ValueError) as exc:
        raise ConfigError(f"config file {path}: cannot parse: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: must hold a mapping of keys")
    unknown = [k for k in data if k not in _FIELD_TYPES and k not in FAMILY_ENV_NAMES]
    if unknown:
        raise ConfigError(f"config file {path}: unknown key(s) {', '.join(sorted(unknown))}")
    return data


def load_config(
    *,
    env: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
    config_file: Path | None = None,
    require_remote: bool = True,
    defaults: Mapping[str, Any] | None = None,
) -> Config:
    """Build the Config. ``flags`` holds only the flags the user actually gave; ``defaults``
    (below the file) are a mode's own defaults (``runner exec`` polls faster, for one)."""
    env = os.environ if env is None else env
    merged: dict[str, Any] = dict(defaults or {})
    file_path = config_file or (Path(env["RUNNER_CONFIG"]) if env.get("RUNNER_CONFIG") else None)
    if file_path is not None:
        merged.update(read_config_file(file_path))
    for legacy, key in LEGACY_ENV.items():
        if env.get(legacy):
            merged[key] = env[legacy]
    for key in _FIELD_TYPES:
        name = _env_name(key)
        if name in env and env[name] != "":
            merged[key] = env[name]
    for key, value in (flags or {}).items():
        if value is not None:
            merged[key] = value

    values: dict[str, Any] = {"handler_env": _handler_env(merged, env)}
    for key, raw in merged.items():
        if key == "version" or key in FAMILY_ENV_NAMES:
            continue
        is_plain = key in ("runner_id", "api_url", "api_token")
        values[key] = str(raw).strip() if is_plain else _coerce(key, raw)

    if require_remote:
        for key in ("runner_id", "api_url", "api_token"):
            if not values.get(key):
                raise ConfigError(f"{_env_name(key)} is required")
    api_url = values.get("api_url", "")
    if api_url:
        parts = urlsplit(api_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(f"RUNNER_API_URL: {api_url!r} is not an http(s) URL")
        if parts.username or parts.password:
            raise ConfigError("RUNNER_API_URL: must not carry credentials; use RUNNER_API_TOKEN")
        values["api_url"] = api_url.rstrip("/")
    values.setdefault("runner_id", "")
    values.setdefault("api_url", "")
    values.setdefault("api_token", "")
    return Config(**values)
