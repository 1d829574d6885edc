"""``python -m controlplane --host … --port … --state-dir …``: the control plane alone."""

from __future__ import annotations

from controlplane.cli import controlplane_command

if __name__ == "__main__":
    controlplane_command(prog_name="python -m controlplane")
