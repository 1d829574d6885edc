"""Turning a job's raw records into OTLP frames: masking, attribute caches, the tee.

Kept apart from the stream because it is the pipeline's hot loop (every line of a job passes
here once) and has nothing to do with ordering or delivery.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import structlog

from runner.logs.otlp import SEVERITIES, attributes_blob, encode_record
from runner.logs.records import Bound, LogRecord, RawRecord
from runner.logs.shared import Shared
from runner.redact import Redactor

log = structlog.get_logger("runner.logs")

_ATTR_CACHE_MAX = 4096


class RecordEncoder:
    """Masks, tees and encodes the records of one stream; ``on_lost`` counts unencodable ones."""

    def __init__(self, shared: Shared, redactor: Redactor, on_lost: Callable[[int, str], None]) -> None:
        self._shared = shared
        self._redactor = redactor
        self._on_lost = on_lost
        self._cache: dict[tuple[Bound, str, str], bytes] = {}
        self._cache_generation = -1

    def encode(self, chunk: Sequence[RawRecord]) -> list[bytes]:
        """Frames for ``chunk``, in order (a record that cannot be encoded is counted lost).

        Attribute bytes come from caches: per logger (``Bound``), and per ``(logger, key,
        value)`` for the single string attribute a child process adds to each of its lines.
        """
        redactor = self._redactor
        bodies = redactor.mask_many([r[2] for r in chunk])
        generation = redactor.generation
        cache = self._cache
        if generation != self._cache_generation:
            cache.clear()
            self._cache_generation = generation
        encode = encode_record
        frames: list[bytes] = []
        append = frames.append
        for (ts, severity, _, attrs, bound), body in zip(chunk, bodies, strict=True):
            try:
                if not attrs:
                    blob = bound.blob(redactor, generation)
                else:
                    cached = None
                    if len(attrs) == 1:
                        ((key, value),) = attrs.items()
                        if value.__class__ is str:
                            cached = cache.get((bound, key, value))
                    blob = cached if cached is not None else self._attributes(attrs, bound, generation)
                append(encode(ts, severity, body, blob))
            except Exception as exc:  # noqa: BLE001 - one bad record must not stop the stream
                self._on_lost(1, f"unencodable record: {type(exc).__name__}")
        tee = self._shared.tee
        if tee is not None:
            for (ts, severity, _, attrs, bound), body in zip(chunk, bodies, strict=True):
                self._tee(tee, ts, severity, body, attrs, bound)
        return frames

    def tee_only(self, records: Sequence[RawRecord]) -> None:
        """Records that are not shipped (no log stream, or logging disabled): masked, to the tee."""
        tee = self._shared.tee
        if tee is None or not records:
            return
        bodies = self._redactor.mask_many([r[2] for r in records])
        for (ts, severity, _, attrs, bound), body in zip(records, bodies, strict=True):
            self._tee(tee, ts, severity, body, attrs, bound)

    def _attributes(self, attrs: dict[str, Any], bound: Bound, generation: int) -> bytes:
        mask = self._redactor.mask
        if not bound.keys.isdisjoint(attrs):
            blob = attributes_blob({**bound.attrs, **attrs}, mask)
        else:
            blob = bound.blob(self._redactor, generation) + attributes_blob(attrs, mask)
        if len(attrs) == 1 and len(self._cache) < _ATTR_CACHE_MAX:
            ((key, value),) = attrs.items()
            if value.__class__ is str:
                self._cache[(bound, key, value)] = blob
        return blob

    def _tee(
        self,
        tee: Callable[[LogRecord], None],
        ts: int,
        severity: int,
        body: str,
        attrs: dict[str, Any] | None,
        bound: Bound,
    ) -> None:
        number, text = SEVERITIES[severity]
        merged = {**bound.attrs, **attrs} if attrs else bound.attrs
        mask = self._redactor.mask
        shown = {k: (mask(v) if isinstance(v, str) else v) for k, v in merged.items() if v is not None}
        try:
            tee(LogRecord(ts, number, text, body, shown))
        except Exception as exc:  # noqa: BLE001 - a broken tee must not stop shipping
            if not self._shared.tee_failed:
                self._shared.tee_failed = True
                log.warning("job log tee failed", error=f"{type(exc).__name__}: {exc}")
