"""One backoff formula for every retry loop of the runner (API calls, polls, settings, log
shipping, registry calls), so that a fleet of runners recovering from one outage spreads out
instead of retrying in step.

``full`` jitter (uniform in ``[0, ceiling]``) spreads retries the most and suits calls many
runners make at once; ``equal`` jitter (``[ceiling/2, ceiling]``) keeps a floor under the pause,
for loops that must not spin (log shipping); ``none`` is the plain exponential, for the few
pauses only one process takes (the start-up settings fetch).
"""

from __future__ import annotations

import random
from typing import Literal

Jitter = Literal["full", "equal", "none"]

#: 2**32 times any base is past every cap; bounding the exponent keeps the float finite.
_MAX_EXPONENT = 32


def backoff_ceiling(attempt: int, *, base: float, cap: float) -> float:
    """``min(cap, base * 2**attempt)``: the longest pause after ``attempt`` failures (0-based)."""
    return min(cap, base * (2.0 ** min(max(attempt, 0), _MAX_EXPONENT)))


def backoff_delay(attempt: int, *, base: float, cap: float, jitter: Jitter = "full") -> float:
    """The pause before retry number ``attempt + 1`` (``attempt`` counts failures, from 0)."""
    ceiling = backoff_ceiling(attempt, base=base, cap=cap)
    if jitter == "none":
        return ceiling
    if jitter == "equal":
        return random.uniform(ceiling / 2, ceiling)
    return random.uniform(0, ceiling)
