"""``actions-workflow``: a vendor's own scripts (health checks, migrations, deploy hooks) run as
the steps of an action workflow, in the customer's account.

The reference runner runs them with its whole environment (its API token included), logs every
variable's value, pairs steps by index and ignores the plan's interpolated commands
(docs/runner-api.md §3.13, reference-runner §4.14). Here:

- ``steps``: the run, its config and the plan's steps matched by id, before anything runs;
- ``command``: which command a step runs (interpolated inline script > interpolated command >
  the config's) and how it is resolved;
- ``env``: the step environment, layered in one documented order, from a minimal base;
- ``outputs``: the per-step outputs files and the job outputs built from them;
- ``repos``: each git source cloned once per job;
- ``workflow``: the handler, which PUTs every step's status and enforces the timeouts.
"""
