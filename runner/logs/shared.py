"""Settings and state the log pipeline shares with its streams (and may change while they run)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from runner.api.client import RunnerClient
from runner.logs.otlp import resource_bytes
from runner.logs.records import LogMetrics, LogRecord

if TYPE_CHECKING:
    from runner.logs.stream import JobLogStream


@dataclass
class ShipperSettings:
    batch_max_records: int = 1000
    batch_max_bytes: int = 1_000_000
    flush_interval: float = 0.2
    memory_max_records: int = 20_000
    #: Bodies at least this large are sent gzip-compressed (None: never), and only once the
    #: control plane has said it accepts gzip (``Shared.gzip_ok``).
    compress_min_bytes: int | None = 8 * 1024
    #: Requests of one batch answered with a 5xx before the batch is set aside (written to a
    #: ``.rejected`` file next to the spool and counted lost) so the lines behind it move on.
    server_error_attempts: int = 6
    post_timeout: float = 30.0
    backoff_base: float = 0.1
    backoff_max: float = 5.0


@dataclass
class Shared:
    client: RunnerClient
    spool_dir: Path
    settings: ShipperSettings
    metrics: LogMetrics
    tee: Callable[[LogRecord], None] | None
    resource_attrs: dict[str, str]
    enabled: bool = True
    #: Set from settings ``log_accept_encodings`` (ours; docs/runner-api.md §5.2): the real log
    #: endpoint reads the body as protobuf with no decompression, so gzip only where announced.
    #: Cleared for good when the server refuses a gzip body anyway.
    gzip_ok: bool = False
    gzip_refused: bool = False
    resource: bytes = b""
    streams: set[JobLogStream] = field(default_factory=set)
    tee_failed: bool = False

    def __post_init__(self) -> None:
        self.resource = resource_bytes(self.resource_attrs)
