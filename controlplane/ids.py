"""Ids in the contract's shape: a 3-letter prefix and 23 characters of [0-9a-z] (docs/runner-api.md §1.2).

Tokens use the same shape (``tok…``); 23 base-36 characters carry about 119 random bits, which is
plenty for a bearer token that never leaves loopback by default.
"""

from __future__ import annotations

import secrets

ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"
ID_LENGTH = 26


_SPACE = 36 ** (ID_LENGTH - 3)


def new_id(prefix: str) -> str:
    if len(prefix) != 3:
        raise ValueError(f"id prefix must have 3 characters, got {prefix!r}")
    # One draw of the whole number, then base 36: a job costs several ids, keep it cheap.
    n = secrets.randbelow(_SPACE)
    digits = []
    for _ in range(ID_LENGTH - 3):
        n, d = divmod(n, 36)
        digits.append(ALPHABET[d])
    return prefix + "".join(digits)


def looks_like_id(value: str) -> bool:
    return len(value) == ID_LENGTH and all(c in ALPHABET for c in value)
