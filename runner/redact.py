"""Secret masking for every log line the runner writes or ships.

Why a class of its own: the reference runner has no redaction at all, and the failures seen in
other agents (GitHub runner issues #291, #2232, #326) are about *encoded* secrets slipping
through (base64 with a shifted offset, JSON or URL escaping) or about tiny secrets masking the
whole log. So a registered value is expanded once, at registration, into every form it is likely
to take in output, and values shorter than ``MIN_SECRET_LENGTH`` are refused.

Masking is on the hot path of the job log pipeline (a million lines per job), so:

* nothing registered -> ``mask`` returns its argument after one attribute check;
* a cheap prefilter (``str in str`` for a minimal set of "detector" substrings, C speed) decides
  whether the regex runs at all; most lines never reach it;
* ``mask_many`` runs the prefilter once over a whole batch joined together, which is about ten
  times cheaper per line than checking line by line;
* the regex is one alternation, longest form first (so the full padded base64 form wins over
  its unpadded prefix), rebuilt only when a value is registered.

A ``child()`` registry (one per job) masks its own values and its parent's (the runner token):
it notices the parent's changes through a generation counter instead of copying them.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import urllib.parse
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

MASK = "***"
#: Shorter values would over-mask ordinary text (GitHub runner #326).
MIN_SECRET_LENGTH = 4
#: Lines of a multi-line secret (a PEM key, a JSON credential file) are registered one by one,
#: because the job log is line-based; short lines such as "{" or "}," are not worth masking.
MIN_LINE_LENGTH = 8


def _b64_fragments(raw: bytes) -> set[str]:
    """Base64 substrings that appear whenever ``raw`` is encoded inside a larger blob.

    Base64 packs 3 bytes into 4 characters, so the encoding of ``raw`` depends on its offset
    modulo 3 within the blob. For each of the 3 alignments, keep only the characters whose 6 bits
    come entirely from ``raw`` (the neighbours decide the first and last ones).
    """
    out: set[str] = set()
    for shift in range(3):
        encoded = base64.b64encode(b"\0" * shift + raw).decode("ascii")
        start = -(-8 * shift // 6)  # ceil
        end = (8 * (shift + len(raw))) // 6
        fragment = encoded[start:end]
        if len(fragment) >= MIN_SECRET_LENGTH:
            out.add(fragment)
            out.add(fragment.replace("+", "-").replace("/", "_"))
    return out


def forms_of(value: str) -> set[str]:
    """Every form of ``value`` the masker looks for (the value itself included)."""
    forms = {value}
    raw = value.encode("utf-8")
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        padded = encode(raw).decode("ascii")
        forms.add(padded)
        forms.add(padded.rstrip("="))
    forms |= _b64_fragments(raw)
    quote = urllib.parse.quote
    for quoted in (quote(value, safe=""), quote(value), urllib.parse.quote_plus(value)):
        forms.add(quoted)
        forms.add(_PERCENT.sub(lambda m: m.group(0).lower(), quoted))  # %2f as some clients write it
    forms |= _json_escaped_forms(value)
    return {form for form in forms if len(form) >= MIN_SECRET_LENGTH}


_PERCENT = re.compile(r"%[0-9A-F]{2}")
#: Go's encoding/json (terraform, kubectl, every Go tool's ``-json`` output) escapes these for
#: HTML safety; JavaScript-style encoders escape "/" too.
_GO_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def _json_escaped_forms(value: str) -> set[str]:
    """The value as it appears inside a JSON string: Python's and Go's escaping, "/" escaped,
    and escaped twice (a JSON document carried as a string inside another one, as in a log
    line whose body is JSON). Each is the full escaped text, so a secret split by escapes
    (``p\\"ss``) is still one form."""
    out: set[str] = set()
    for ascii_only in (True, False):
        once = json.dumps(value, ensure_ascii=ascii_only)[1:-1]
        go = once
        for char, escape in _GO_ESCAPES.items():
            go = go.replace(char, escape)
        for form in (once, go, once.replace("/", "\\/")):
            out.add(form)
            out.add(json.dumps(form, ensure_ascii=ascii_only)[1:-1])
    return out


def _values_to_register(value: str) -> list[str]:
    candidates = [value, value.strip()]
    if "\n" in value:
        candidates += [line.strip() for line in value.splitlines() if len(line.strip()) >= MIN_LINE_LENGTH]
    return [c for c in dict.fromkeys(candidates) if len(c) >= MIN_SECRET_LENGTH]


def _detectors(forms: Iterable[str]) -> tuple[str, ...]:
    """The smallest set of substrings such that every form contains one of them.

    A form that contains another form is found by looking for the shorter one, so it need not be
    searched for separately; the prefilter then does fewer ``in`` tests.
    """
    ordered = sorted(set(forms), key=len)
    kept: list[str] = []
    for form in ordered:
        if not any(k in form for k in kept):
            kept.append(form)
    return tuple(kept)


@dataclass(frozen=True)
class _Compiled:
    """Everything ``mask`` needs, swapped in one assignment so readers never see half a rebuild."""

    key: tuple[int, int]
    forms: frozenset[str]
    detectors: tuple[str, ...]
    pattern: re.Pattern[str] | None


_EMPTY = _Compiled(key=(0, 0), forms=frozenset(), detectors=(), pattern=None)


class Redactor:
    """A registry of secret values; ``mask`` replaces every known form of them with ``***``.

    Implements ``runner.handler.SecretRegistry``. Thread-safe: registration takes a lock, masking
    reads an immutable snapshot.
    """

    def __init__(self, *values: str | None, parent: Redactor | None = None) -> None:
        self._parent = parent
        self._lock = threading.Lock()
        self._own: frozenset[str] = frozenset()
        self._own_generation = 0
        self._compiled = _EMPTY
        self.register(*values)

    # ------------------------------------------------------------------ registration
    def register(self, *values: str | None) -> None:
        """Add values; ``None``, empty and too-short values are ignored (never an error)."""
        new: set[str] = set()
        for value in values:
            if not value or not isinstance(value, str):
                continue
            for candidate in _values_to_register(value):
                new |= forms_of(candidate)
        if not new:
            return
        with self._lock:
            if new <= self._own:
                return
            self._own = self._own | new
            self._own_generation += 1

    def child(self) -> Redactor:
        """A per-job registry that also masks everything registered here, now or later."""
        return Redactor(parent=self)

    @property
    def generation(self) -> int:
        """Changes whenever this registry or an ancestor gains a value (for caches of masked text)."""
        parent = self._parent.generation if self._parent is not None else 0
        return self._own_generation + parent

    def forms(self) -> frozenset[str]:
        """All forms masked by this registry, its ancestors' included."""
        return self._current().forms

    def __bool__(self) -> bool:
        return bool(self._current().detectors)

    # ------------------------------------------------------------------ masking
    def mask(self, text: str) -> str:
        """``text`` with every registered form replaced by ``***``; the same object if none occurs."""
        compiled = self._current()
        if compiled.pattern is None:
            return text
        for detector in compiled.detectors:
            if detector in text:
                return compiled.pattern.sub(MASK, text)
        return text

    def mask_many(self, texts: Sequence[str]) -> list[str]:
        """``mask`` applied to each text; the prefilter runs once over the whole batch."""
        compiled = self._current()
        if compiled.pattern is None:
            return list(texts)
        joined = "\n".join(texts)
        for detector in compiled.detectors:
            if detector in joined:
                return [self.mask(text) for text in texts]
        return list(texts)

    # ------------------------------------------------------------------ internals
    def _current(self) -> _Compiled:
        parent_generation = self._parent.generation if self._parent is not None else 0
        compiled = self._compiled
        key = (self._own_generation, parent_generation)
        if compiled.key == key:
            return compiled
        with self._lock:
            key = (self._own_generation, parent_generation)
            if self._compiled.key != key:
                forms = self._own | (self._parent.forms() if self._parent is not None else frozenset())
                self._compiled = _compile(key, forms)
            return self._compiled


def _compile(key: tuple[int, int], forms: frozenset[str]) -> _Compiled:
    if not forms:
        return _Compiled(key=key, forms=forms, detectors=(), pattern=None)
    ordered = sorted(forms, key=lambda f: (-len(f), f))
    pattern = re.compile("|".join(re.escape(f) for f in ordered))
    return _Compiled(key=key, forms=forms, detectors=_detectors(forms), pattern=pattern)


#: Runner-wide secrets (the runner's API token): masked in the runner's own logs and, through
#: ``RUNNER_SECRETS.child()``, in every job's log.
RUNNER_SECRETS = Redactor()
