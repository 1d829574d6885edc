"""state-json on the wire (docs/runner-api.md §6.3), issue 10 break 2.

The reference runner's Go client sends the ``terraform show -json`` bytes as a ``[]byte`` body,
which its JSON producer writes as a quoted standard-base64 string and a newline; the real
server's readers trim and base64-decode it. Our runner must send that form, and our control
plane must read it (and the raw JSON our older runners sent).
"""

from __future__ import annotations

import base64
import json

import anyio
import pytest

from runner.api.client import RunnerClient
from runner.api.statejson import decode_state_json, encode_state_json
from tests.support.controlplane import EmbeddedControlPlane

pytestmark = pytest.mark.integration

DOCUMENT = {
    "format_version": "1.0",
    "terraform_version": "1.11.4",
    "values": {
        "root_module": {
            "resources": [{"address": "terraform_data.b"}, {"address": "terraform_data.a"}],
            "child_modules": [
                {"address": "module.m", "resources": [{"address": "module.m.terraform_data.c"}]}
            ],
        }
    },
}
RAW = json.dumps(DOCUMENT, separators=(",", ":")).encode() + b"\n"


def test_the_encoding_is_what_the_go_client_writes() -> None:
    # json.Marshal([]byte) is a quoted std-base64 string; json.Encoder.Encode adds "\n".
    assert encode_state_json(b'{"a":1}\n') == b'"' + base64.b64encode(b'{"a":1}\n') + b'"\n'
    assert json.loads(encode_state_json(RAW)) == base64.b64encode(RAW).decode()
    assert decode_state_json(encode_state_json(RAW)) == RAW
    assert decode_state_json(RAW) == RAW
    with pytest.raises(ValueError, match="neither JSON nor base64"):
        decode_state_json(b"not base64 !")


def test_the_runner_client_posts_the_reference_form_and_the_control_plane_serves_it(
    embedded_control_plane: EmbeddedControlPlane,
) -> None:
    cp = embedded_control_plane
    with cp.operator() as operator:
        workspace = operator.create_workspace("tfwwire")["id"]

    async def post() -> None:
        async with RunnerClient(cp.url, cp.runner_token, cp.runner_id) as client:
            await client.post_state_json(workspace, "job1", RAW)

    anyio.run(post)
    base = f"/v1/terraform-workspaces/{workspace}"
    with cp.runner_http() as runner:
        latest = runner.get(base + "/state-json")
        assert latest.status_code == 200
        assert latest.json() == DOCUMENT
    store_row = _stored_row(cp, workspace)
    assert store_row["contents"] == b'"' + base64.b64encode(RAW) + b'"\n', "stored as posted"
    with cp.runner_http() as runner:
        by_id = runner.get(f"{base}/state-json/{store_row['id']}")
        assert by_id.status_code == 200
        assert by_id.json() == DOCUMENT
        resources = runner.get(f"{base}/state-json/{store_row['id']}/resources").json()
        assert resources == ["module.m.terraform_data.c", "terraform_data.a", "terraform_data.b"]
        assert runner.get(f"{base}/state-json/tfsnope").status_code == 404


def test_raw_json_is_still_read_and_garbage_is_refused(embedded_control_plane: EmbeddedControlPlane) -> None:
    cp = embedded_control_plane
    with cp.operator() as operator:
        workspace = operator.create_workspace("tfwraw")["id"]
    base = f"/v1/terraform-workspaces/{workspace}"
    with cp.runner_http() as runner:
        assert runner.post(base + "/state-json", content=RAW).status_code == 200
        assert runner.get(base + "/state-json").json() == DOCUMENT
        refused = runner.post(base + "/state-json", content=b"%% not a document")
        assert refused.status_code == 400
        assert "quoted base64" in refused.json()["description"]
        assert runner.get(base + "/state-json").json() == DOCUMENT, "a refused body changes nothing"


def _stored_row(cp: EmbeddedControlPlane, workspace: str) -> dict[str, object]:
    assert cp.running is not None
    assert cp.portal is not None
    with cp.runner_http() as runner:
        org_id = runner.get(f"/v1/terraform-workspaces/{workspace}").json()["org_id"]
    row = cp.portal.call(cp.running.store.get_state_json_row, workspace, org_id)
    assert row is not None
    return {"id": row["id"], "contents": bytes(row["contents"])}
