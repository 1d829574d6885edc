"""Management jobs (``mng-*``): what ``runner mng`` does to the runner workload on a VM.

The handlers reach the supervisor only through the SDK's ``WorkloadSupervisor`` port (the job's
``ctx.control`` under ``runner mng``); they never import the agent. ``mng-fetch-token`` is only
a name in the contract's enum, with no defined behaviour, and has no handler.
"""
