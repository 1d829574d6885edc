"""deploy/ecs through the real terraform binary, offline.

`terraform validate` and `plan` need the AWS provider, which cannot be downloaded here, so these
are the checks terraform can make without it.
"""

from __future__ import annotations

import pytest

from tests.deploy.conftest import ECS_MODULE, Tool

pytestmark = pytest.mark.terraform


def test_terraform_fmt_check(terraform: Tool) -> None:
    proc = terraform.run(["fmt", "-check", "-diff", "-recursive", str(ECS_MODULE)])
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_terraform_loads_the_configuration(terraform: Tool) -> None:
    """`terraform providers` parses every file and checks block structure, types and validations."""
    proc = terraform.run(["providers"], cwd=ECS_MODULE)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "registry.terraform.io/hashicorp/aws" in proc.stdout
    assert not (ECS_MODULE / ".terraform").exists()
