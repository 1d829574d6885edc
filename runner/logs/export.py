"""One POST of framed records to a log stream, and what its answer means for them.

Why a module: the answer decides the records' fate, and that mapping is the part of the
contract that other agents get wrong (logs retried forever on a 413, or dropped on a 503). Here:

* 2xx: delivered;
* transport error, 408, 429, 5xx, or a 401 with the runner token: ``UNAVAILABLE``, keep the
  records (spooled) and retry later; a 5xx also counts in ``server_errors_in_row``, and after
  ``server_error_attempts`` of them in a row the stream sets the batch aside (the real server
  answers 500 to a body it cannot parse, so retrying that batch for ever would hold back every
  line behind it);
* 401 with the log stream's write token: fall back to the runner token, once, for good;
* bodies are gzip-compressed only when the settings announced it (the real endpoint does not
  decompress, docs/runner-api.md §5.2); 400 or 415 on a gzip body: stop compressing (for the
  whole pipeline) and resend;
* 404/410: ``DROP``, the stream does not exist, nothing sent to it can succeed;
* any other 4xx: ``REJECTED``, the stream splits the batch to isolate the refused records.

Each request carries ``X-Byoc-Log-Range: <writer>:<first>-<last>`` (ours, docs/runner-api.md
§5.7) when the stream knows its frames' numbers: our control plane stores a range once; the
real server ignores the header.

The request goes through ``RunnerClient.request`` (``post_logs`` cannot set
``Content-Encoding``), with no retries of its own: retrying is the stream's job.
"""

from __future__ import annotations

import enum
import gzip
import time
from collections.abc import Sequence
from pathlib import Path

import structlog

from runner.api.client import NO_RETRY, APIError, TransportError, Unauthorized
from runner.logs.otlp import export_request
from runner.logs.shared import Shared
from runner.logs.spool import SpoolFile, SpoolHeader, spool_path

#: The header naming a request's records, ``<writer>:<first>-<last>`` (ours, §5.7).
RANGE_HEADER = "X-Byoc-Log-Range"

#: The suffix of a batch set aside after ``server_error_attempts`` 5xx answers in a row.
REJECTED_SUFFIX = ".rejected"

log = structlog.get_logger("runner.logs")


class Status(enum.Enum):
    OK = "ok"
    UNAVAILABLE = "unavailable"  # retry later, from the spool
    REJECTED = "rejected"  # this content is refused: split it
    DROP = "drop"  # nothing sent to this stream can succeed (404): lose the batch


class Exporter:
    """Sends batches to one log stream and keeps the credential choice and failure streak."""

    def __init__(
        self,
        shared: Shared,
        log_stream_id: str,
        write_token: str | None,
        resource: bytes | None = None,
        *,
        writer: str = "",
    ) -> None:
        self._shared = shared
        self._path = f"/v1/log-streams/{log_stream_id}/logs"
        self.log_stream_id = log_stream_id
        self._write_token = write_token or None
        self.uses_write_token = self._write_token is not None
        self._resource = resource
        #: This stream's writer id in ``X-Byoc-Log-Range`` (unique per stream; "" sends no range).
        self.writer = writer
        #: Consecutive failed requests (0 while the server answers).
        self.failures_in_row = 0
        #: Consecutive requests answered with a 5xx (0 after any other answer).
        self.server_errors_in_row = 0

    async def post(self, frames: Sequence[bytes], first: int = 0) -> Status:
        """POST ``frames``; ``first`` is the stream's number of the first one (0: unknown)."""
        shared = self._shared
        settings = shared.settings
        metrics = shared.metrics
        body = export_request(self._resource or shared.resource, frames)
        for _ in range(3):  # at most one token fallback and one compression fallback
            headers = {"Content-Type": "application/x-protobuf"}
            if first and self.writer and frames:
                headers[RANGE_HEADER] = f"{self.writer}:{first}-{first + len(frames) - 1}"
            content = body
            compressed = False
            threshold = settings.compress_min_bytes
            if shared.gzip_ok and threshold is not None and len(body) >= threshold:
                content = gzip.compress(body, compresslevel=1)
                headers["Content-Encoding"] = "gzip"
                compressed = True
            token = self._write_token if self.uses_write_token else None
            if token:
                headers["Authorization"] = f"Bearer {token}"
            try:
                await shared.client.request(
                    "POST",
                    self._path,
                    content=content,
                    headers=headers,
                    timeout=settings.post_timeout,
                    retry=NO_RETRY,
                )
                self.server_errors_in_row = 0
                return Status.OK
            except Unauthorized:
                metrics.export_failures += 1
                if token:
                    self.uses_write_token = False
                    log.warning(
                        "log stream write token refused; falling back to the runner token",
                        log_stream_id=self.log_stream_id,
                    )
                    continue
                self._failed("unauthorized (401) with the runner token")
                return Status.UNAVAILABLE
            except APIError as exc:
                metrics.export_failures += 1
                if exc.status >= 500:
                    self.server_errors_in_row += 1
                    self._failed(f"HTTP {exc.status}")
                    return Status.UNAVAILABLE
                self.server_errors_in_row = 0
                if exc.status in (408, 429):
                    self._failed(f"HTTP {exc.status}")
                    return Status.UNAVAILABLE
                if compressed and exc.status in (400, 415):
                    shared.gzip_ok = False
                    shared.gzip_refused = True
                    log.warning("the control plane refused a gzip log body; sending uncompressed from now on")
                    continue
                if exc.status in (404, 410):
                    return Status.DROP
                log.debug("the control plane rejected log records", status=exc.status, records=len(frames))
                return Status.REJECTED
            except TransportError as exc:
                metrics.export_failures += 1
                self._failed(str(exc))
                return Status.UNAVAILABLE
            except Exception as exc:  # noqa: BLE001 - anything else: keep the records, retry later
                metrics.export_failures += 1
                self._failed(f"{type(exc).__name__}: {exc}")
                return Status.UNAVAILABLE
        return Status.UNAVAILABLE

    def set_aside(self, spool_key: str, frames: Sequence[bytes]) -> Path | None:
        """Write ``frames`` the server keeps failing on to ``<key>.<ns>.rejected`` beside the spool
        (the spool's format, so the usual tools read it; never adopted or resent) and log it.
        None when even that file cannot be written."""
        shared = self._shared
        created = time.time_ns()
        path = spool_path(shared.spool_dir, spool_key, created).with_suffix(REJECTED_SUFFIX)
        header = SpoolHeader(
            spool_key=spool_key,
            log_stream_id=self.log_stream_id,
            created_ns=created,
            resource=dict(shared.resource_attrs),
        )
        try:
            rejected = SpoolFile.create(path, header)
            try:
                rejected.append(frames)
            finally:
                rejected.close()
        except OSError as exc:
            log.error("cannot write a set-aside log batch", error=str(exc), spool_key=spool_key)
            return None
        log.error(
            "the control plane keeps failing on a log batch; set it aside and moving on",
            log_stream_id=self.log_stream_id,
            records=len(frames),
            attempts=self.server_errors_in_row,
            file=path.name,
        )
        self.server_errors_in_row = 0
        return path

    def _failed(self, reason: str) -> None:
        self.failures_in_row += 1
        if self.failures_in_row == 1:
            log.warning(
                "cannot deliver job logs; spooling to disk and retrying",
                log_stream_id=self.log_stream_id,
                reason=reason,
            )
