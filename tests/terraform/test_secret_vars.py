"""Issue 11, finding 3a: terraform input variables that are secret are masked in every form.

A plan var ``db_password`` (secret by its name) and a var ``dbpw`` declared ``sensitive = true``
are echoed by a ``local-exec`` in plain, base64 and URL-encoded form; terraform also prints the
command in its "Executing:" line. None of it may reach the job log in a readable form.
"""

from __future__ import annotations

import base64
import json
import urllib.parse
from pathlib import Path

import pytest

from tests.support.terraform import write_module
from tests.terraform.test_runner_exec import runner_exec

pytestmark = [pytest.mark.terraform, pytest.mark.usefixtures("terraform_bin")]

DB_PASSWORD = "Hunter2-db/pw&x"
DBPW = "sensitive-by-declaration-77"

MODULE = r"""
variable "db_password" {
  type = string
}

variable "dbpw" {
  type      = string
  sensitive = true
}

resource "terraform_data" "echo" {
  provisioner "local-exec" {
    command = <<-EOT
      echo "plain ${var.db_password}"
      printf '%s' '${var.db_password}' | base64
      python3 -c 'import sys, urllib.parse as u; print("url", u.quote(sys.argv[1], safe=""))' \
        '${var.db_password}'
      echo "declared ${nonsensitive(var.dbpw)}"
      printf '%s' '${nonsensitive(var.dbpw)}' | base64
    EOT
  }
}
"""


def test_secret_and_sensitive_variables_are_masked_in_every_form(tmp_path: Path) -> None:
    module = write_module(tmp_path / "module", {"main.tf": MODULE})
    plan = tmp_path / "p.json"
    plan.write_text(
        json.dumps(
            {
                "local_archive": {"local_archive": str(module)},
                "terraform_backend": {"WorkspaceID": "tfw-secret-vars"},
                "vars": {"db_password": DB_PASSWORD, "dbpw": DBPW},
            }
        )
    )
    state = tmp_path / "state"
    sandbox = ["--type", "sandbox-terraform", "--plan", str(plan)]
    code, _, err = runner_exec(
        state, *sandbox, "--operation", "create-apply-plan", "--result-out", str(tmp_path / "r.json")
    )
    assert code == 0, err[-3000:]
    code, _, err = runner_exec(
        state, *sandbox, "--operation", "apply-plan", "--apply-plan", str(tmp_path / "r.json")
    )
    assert code == 0, err[-3000:]
    assert "Executing:" in err, err[-3000:]
    assert "plain ***" in err
    assert "declared ***" in err
    for value in (DB_PASSWORD, DBPW):
        for form in (
            value,
            base64.b64encode(value.encode()).decode(),
            urllib.parse.quote(value, safe=""),
            json.dumps(value)[1:-1],
        ):
            assert form not in err, f"{form!r} is in the job log"
