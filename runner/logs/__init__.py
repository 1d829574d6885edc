"""Job log pipeline: redaction -> bounded queue -> OTLP/HTTP protobuf export -> disk spool on failure.

Import from here: ``LogPipeline`` (one per runner process), ``JobLogStream`` (one per job),
``JobLogger`` (what handlers log to), ``LogRecord`` (what the tee sees), ``DeliveryReport`` and
``LogMetrics``.
"""

from runner.logs.otlp import DecodedRecord, decode_request
from runner.logs.pipeline import LogPipeline
from runner.logs.records import DeliveryReport, JobLogger, LogMetrics, LogRecord
from runner.logs.stream import JobLogStream

__all__ = [
    "DecodedRecord",
    "DeliveryReport",
    "JobLogStream",
    "JobLogger",
    "LogMetrics",
    "LogPipeline",
    "LogRecord",
    "decode_request",
]
