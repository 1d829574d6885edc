"""Terraform's output as log records, and its errors as a summary a failure result can carry.

With ``-json`` terraform writes one JSON object per line (``@level``, ``@message``, ``type``,
and for problems a ``diagnostic`` with ``severity``, ``summary`` and ``detail``). Each becomes a
job log record at terraform's own level. Commands without ``-json`` (``init`` on older
versions) print boxed ``Error: ...`` blocks; those are recognised too. Either way the error
diagnostics are kept, so a failed job reports *why* terraform failed rather than "exit code 1".
"""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from runner.sdk import JobLog

_LEVELS = {"trace": "debug", "debug": "debug", "info": "info", "warn": "warning", "error": "error"}
_BOX_PREFIXES = ("│ ", "│")
_BOX_EDGES = ("╷", "╵")
_MAX_DETAIL = 600


def _emit(log: JobLog, level: str, message: str, **attrs: Any) -> None:
    if level == "debug":
        log.debug(message, **attrs)
    elif level == "warning":
        log.warning(message, **attrs)
    elif level == "error":
        log.error(message, **attrs)
    else:
        log.info(message, **attrs)


@dataclass
class Diagnostic:
    severity: str
    summary: str
    detail: str = ""
    address: str = ""
    filename: str = ""

    def render(self) -> str:
        text = self.summary
        if self.address:
            text = f"{self.address}: {text}"
        detail = " ".join(self.detail.split())
        if detail:
            if len(detail) > _MAX_DETAIL:
                detail = detail[: _MAX_DETAIL - 3] + "..."
            text = f"{text}: {detail}"
        if self.filename:
            text += f" (in {self.filename})"
        return text


@dataclass
class TerraformOutput:
    """A ``LineHandler`` for one terraform command; see the module docstring."""

    command: str
    diagnostics: list[Diagnostic] = field(default_factory=list)
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=40))
    #: The ``type`` of each JSON message seen, in order (tests and callers use it).
    message_types: list[str] = field(default_factory=list)
    _open_error: Diagnostic | None = None

    def __call__(self, log: JobLog, stream: str, line: str) -> None:
        text = line.rstrip("\r\n")
        if not text.strip():
            return
        if text.lstrip().startswith("{"):
            try:
                message = json.loads(text)
            except json.JSONDecodeError:
                message = None
            if isinstance(message, dict) and "@message" in message:
                self._json_line(log, message)
                return
        self._text_line(log, stream, text)

    # ------------------------------------------------------------------ -json lines
    def _json_line(self, log: JobLog, message: dict[str, Any]) -> None:
        level = _LEVELS.get(str(message.get("@level", "info")).lower(), "info")
        kind = str(message.get("type") or "")
        self.message_types.append(kind)
        text = str(message.get("@message") or "")
        attrs: dict[str, Any] = {"tf_command": self.command}
        if kind:
            attrs["tf_type"] = kind
        diag = message.get("diagnostic")
        if kind == "diagnostic" and isinstance(diag, dict):
            rng = diag.get("range") if isinstance(diag.get("range"), dict) else {}
            item = Diagnostic(
                severity=str(diag.get("severity") or level),
                summary=str(diag.get("summary") or text),
                detail=str(diag.get("detail") or ""),
                address=str(diag.get("address") or ""),
                filename=str((rng or {}).get("filename") or ""),
            )
            if item.detail:
                attrs["detail"] = item.detail
            if item.severity == "error":
                self.diagnostics.append(item)
        self.tail.append(text)
        _emit(log, level, text, **attrs)

    # ------------------------------------------------------------------ plain lines
    def _text_line(self, log: JobLog, stream: str, text: str) -> None:
        stripped = text.strip()
        if stripped in _BOX_EDGES:
            self._open_error = None
            return
        body = text
        for prefix in _BOX_PREFIXES:
            if body.startswith(prefix):
                body = body[len(prefix) :]
                break
        content = body.strip()
        if not content:
            return
        level = "info" if stream == "stdout" else "warning"
        if content.startswith("Error: "):
            self._open_error = Diagnostic("error", content[len("Error: ") :])
            self.diagnostics.append(self._open_error)
            level = "error"
        elif self._open_error is not None:
            sep = "\n" if self._open_error.detail else ""
            self._open_error.detail += sep + content
            level = "error"
        elif content.startswith("Warning: "):
            level = "warning"
        self.tail.append(content)
        _emit(log, level, body, tf_command=self.command)

    # ------------------------------------------------------------------ summary
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity == "error"]

    def error_summary(self, *, limit: int = 3) -> str:
        """One line per error diagnostic (at most ``limit``), else the last lines seen."""
        errors = self.errors()
        if errors:
            parts = [d.render() for d in errors[:limit]]
            if len(errors) > limit:
                parts.append(f"(and {len(errors) - limit} more)")
            return "; ".join(parts)
        lines = [line for line in self.tail if line]
        return " / ".join(lines[-3:])
