"""A builder's output in the job log, and what a failed build says.

Every line goes to the job log as it comes, tagged with what it is: a build ``step``, a
``cache-hit``, a layer ``push``, an ``error``, or plain output of a RUN step. The three output
dialects (BuildKit's ``--progress plain``, the legacy builder's ``Step 1/3 :``, buildah's
``STEP 1/3:``) and the two push dialects differ, so the classification is a table of patterns.

A failed build ends with the builder's own message; ``build_failure`` finds it and the exit code
of the failed RUN step, so the job fails with what the Dockerfile author needs to read.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterable

from runner.sdk import JobLog

_EVENTS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("cache-hit", re.compile(r"^#\d+ CACHED\b|^ ---> Using cache\b|^(\[\d+/\d+\] )?--> Using cache\b")),
    ("step", re.compile(r"^#\d+ \[[^\]]+\] |^Step \d+/\d+ : |^(\[\d+/\d+\] )?STEP \d+/\d+: ")),
    (
        "push",
        re.compile(
            r": (Pushed|Layer already exists|Mounted from \S+)$|^Copying (blob|config) |"
            r"^Writing manifest|^\S+: digest: sha256:[0-9a-f]+ size: \d+$"
        ),
    ),
    ("error", re.compile(r"^(#\d+ )?ERROR\b|^error\b|^Error\b|^The command .* returned a non-zero code")),
)
_EXIT_CODE = (
    re.compile(r"exit code: (\d+)"),
    re.compile(r"returned a non-zero code: (\d+)"),
    re.compile(r"exit status (\d+)"),
)
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def classify(line: str) -> str:
    """The kind of one line of builder output: step, cache-hit, push, error or output."""
    for event, pattern in _EVENTS:
        if pattern.search(line):
            return event
    return "output"


def build_failure(lines: Iterable[str]) -> tuple[str, int | None]:
    """The builder's failure message (its last error line) and the failed step's exit code."""
    errors = [line for line in lines if classify(line) == "error"]
    if not errors:
        return "", None
    message = errors[-1]
    for candidate in reversed(errors):
        for pattern in _EXIT_CODE:
            match = pattern.search(candidate)
            if match:
                return message, int(match.group(1))
    return message, None


class BuildOutput:
    """The line handler of a build or push: logs each line with its kind, keeps the last ones."""

    def __init__(self, phase: str, keep: int = 200) -> None:
        self.phase = phase
        self.lines: deque[str] = deque(maxlen=keep)
        self.counts: dict[str, int] = {}

    def __call__(self, log: JobLog, stream: str, line: str) -> None:
        text = _ANSI.sub("", line).rstrip()
        if not text:
            return
        self.lines.append(text)
        event = classify(text)
        self.counts[event] = self.counts.get(event, 0) + 1
        level = "error" if event == "error" else "info"
        log.log(level, text, stream=stream, phase=self.phase, event=event)
