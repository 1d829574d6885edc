"""The runner-owned terraform CLI configuration and the environment every terraform child gets.

Terraform otherwise reads ``~/.terraformrc`` (or whatever ``TF_CLI_CONFIG_FILE`` the runner's own
environment names), which the runner does not control. Each job gets its own file that sets one
plugin cache shared by all jobs (under the tools dir; ``init`` holds a file lock on it because
terraform's cache is not safe for concurrent writers) and, when a provider mirror directory is
configured, installs the providers found there from that mirror and never from the network.
"""

from __future__ import annotations

import json
from pathlib import Path

#: Set for every terraform child: no prompts, no update checks, automation-friendly output.
AUTOMATION_ENV = {
    "TF_IN_AUTOMATION": "1",
    "CHECKPOINT_DISABLE": "1",
    "TF_INPUT": "0",
}


def hcl_string(value: str) -> str:
    """A quoted HCL string literal (JSON escapes, plus ``${``/``%{`` kept literal)."""
    return json.dumps(value).replace("${", "$${").replace("%{", "%%{")


def plugin_cache_dir(tools_dir: Path) -> Path:
    return tools_dir / "terraform" / "plugin-cache"


def plugin_cache_lock(tools_dir: Path) -> Path:
    return tools_dir / "terraform" / "plugin-cache.lock"


def mirrored_providers(mirror: Path) -> list[str]:
    """``HOST/NAMESPACE/TYPE`` of every provider laid out in a filesystem mirror."""
    found: list[str] = []
    if not mirror.is_dir():
        return found
    for host in sorted(p for p in mirror.iterdir() if p.is_dir()):
        for namespace in sorted(p for p in host.iterdir() if p.is_dir()):
            for kind in sorted(p for p in namespace.iterdir() if p.is_dir()):
                found.append(f"{host.name}/{namespace.name}/{kind.name}")
    return found


def render_cli_config(plugin_cache: Path, provider_mirror: Path | None) -> str:
    # Every job starts from a fresh working directory without .terraform.lock.hcl (unless the
    # module ships one); without this flag terraform 1.4+ would then ignore the cache entirely.
    lines = [
        f"plugin_cache_dir = {hcl_string(str(plugin_cache))}",
        "plugin_cache_may_break_dependency_lock_file = true",
    ]
    providers = mirrored_providers(provider_mirror) if provider_mirror else []
    if provider_mirror is not None and providers:
        listed = ", ".join(hcl_string(p) for p in providers)
        lines += [
            "provider_installation {",
            "  filesystem_mirror {",
            f"    path    = {hcl_string(str(provider_mirror))}",
            f"    include = [{listed}]",
            "  }",
            "  direct {",
            f"    exclude = [{listed}]",
            "  }",
            "}",
        ]
    return "\n".join(lines) + "\n"


def write_cli_config(path: Path, *, tools_dir: Path, provider_mirror: Path | None) -> Path:
    """Write the job's CLI config file (0600) and make sure the plugin cache exists."""
    cache = plugin_cache_dir(tools_dir)
    cache.mkdir(parents=True, exist_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_cli_config(cache, provider_mirror))
    path.chmod(0o600)
    return path
