"""The stand-in power-off command of the vm-shut-down test: writes the newest mng-vm-shut-down
job's id, its status and its execution's status as the control plane has them right now."""

import json
import sys
from pathlib import Path

import httpx

creds = json.loads(Path(sys.argv[1]).read_text())
headers = {"Authorization": f"Bearer {creds['admin_token']}"}
url = creds["api_url"].rstrip("/")
with httpx.Client(base_url=url, headers=headers, timeout=10, trust_env=False) as client:
    runners = client.get("/v1/runners").json()
    jobs = [
        job
        for runner in runners
        for job in client.get(
            f"/v1/runners/{runner['id']}/jobs", params={"status": "any", "limit": 100}
        ).json()
        if job["type"] == "mng-vm-shut-down"
    ]
    job = jobs[-1]
    executions = client.get(f"/v1/runner-jobs/{job['id']}/executions").json()
    Path(sys.argv[2]).write_text(f"{job['id']} {job['status']} {executions[-1]['status']}\n")
