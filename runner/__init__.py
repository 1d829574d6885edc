"""byoc-runner: a runner agent for bring-your-own-cloud deployments."""

import time as _time

__version__ = "0.1.0"

#: Monotonic clock reading when the process imported the runner: heartbeats send the uptime
#: since then as ``alive_time``, which the control plane uses to detect restarts.
PROCESS_STARTED = _time.monotonic()
