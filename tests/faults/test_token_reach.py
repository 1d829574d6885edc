"""Issue 11, finding 3b: a job's child must not read the runner's token from any /proc entry
of the runner, when the runner runs as an unprivileged user (as in our image).

The runner is started under ``setpriv`` the way the probe did; its job runs
``tests/faults/probe_proc.py``, which walks up its ancestors and dumps whatever it can read.
"""

from __future__ import annotations

import json
import shutil
import stat
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from controlplane.operator import OperatorClient
from tests.faults.helpers import PrefixedRunnerProcess, unprivileged_prefix, wait_job
from tests.support.controlplane import ControlPlaneProcess
from tests.support.handlers import HANDLER_TARGET, SCRIPT_TYPE

pytestmark = pytest.mark.faults

PROBE = Path(__file__).with_name("probe_proc.py")


@pytest.fixture
def reachable_tmp() -> Iterator[Path]:
    """A directory an unprivileged runner can reach: pytest's own tmp dirs are 0700 root."""
    path = Path(tempfile.mkdtemp(prefix="byoc-token-reach-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.parametrize("delivery", ["env", "file"])
def test_a_child_cannot_read_the_runner_token_from_proc(
    control_plane: ControlPlaneProcess, operator: OperatorClient, reachable_tmp: Path, delivery: str
) -> None:
    tmp_path = reachable_tmp
    prefix, identity = unprivileged_prefix()
    token = control_plane.runner_token
    env = {"RUNNER_HANDLERS": HANDLER_TARGET}
    if delivery == "file":
        token_file = tmp_path / "token"
        token_file.write_text(token + "\n")
        token_file.chmod(0o444)  # readable by the unprivileged runner in this test
        env.update({"RUNNER_API_TOKEN": "", "RUNNER_API_TOKEN_FILE": str(token_file)})
    out_dir = tmp_path / "probe"
    out_dir.mkdir()
    out_dir.chmod(0o777 | stat.S_ISVTX)
    out = out_dir / "found.bin"
    runner = PrefixedRunnerProcess(control_plane, tmp_path / "runner", env, prefix=prefix)
    try:
        runner.start()
        runner.wait_ready()
        job = operator.submit(SCRIPT_TYPE, plan={"argv": [sys.executable, str(PROBE), str(out)]})
        done = wait_job(operator, job["id"], 60)
        assert done["status"] == "finished", (done, runner.output()[-2000:])
    finally:
        runner.stop()
    blob, _, summary_json = out.read_bytes().partition(b"\n--summary--\n")
    summary = json.loads(summary_json)
    probed = {s["pid"] for s in summary}
    assert runner.pid in probed, f"the probe did not reach the runner ({identity})"
    runner_entries = {s["entry"]: s for s in summary if s["pid"] == runner.pid}
    assert token.encode() not in blob, (identity, runner_entries)
    for entry in ("environ", "mem(env)"):
        assert not runner_entries[entry]["readable"], (identity, runner_entries[entry])
    assert token not in json.dumps(operator.logs(job["log_stream_id"]))
