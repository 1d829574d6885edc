"""Secret masking: every form a secret takes in output, and no over-masking of short values."""

from __future__ import annotations

import base64
import json
import threading
import urllib.parse

import pytest

from runner.redact import MASK, Redactor, forms_of

pytestmark = pytest.mark.unit

SECRET = 's3cr3t "Pa55"/w+rd?&='


def test_plain_secret_is_masked_inside_longer_text() -> None:
    r = Redactor(SECRET)
    assert r.mask(f"login with {SECRET} now") == f"login with {MASK} now"
    assert r.mask(f"{SECRET}{SECRET}") == MASK + MASK


def test_text_without_secrets_is_returned_unchanged() -> None:
    r = Redactor(SECRET)
    text = "nothing to see here"
    assert r.mask(text) is text
    assert Redactor().mask(text) is text


@pytest.mark.parametrize(
    "encoded",
    [
        base64.b64encode(SECRET.encode()).decode(),
        base64.b64encode(SECRET.encode()).decode().rstrip("="),
        base64.urlsafe_b64encode(SECRET.encode()).decode(),
        base64.urlsafe_b64encode(SECRET.encode()).decode().rstrip("="),
        urllib.parse.quote(SECRET, safe=""),
        urllib.parse.quote(SECRET),
        urllib.parse.quote_plus(SECRET),
        json.dumps(SECRET)[1:-1],
    ],
)
def test_encoded_forms_are_masked(encoded: str) -> None:
    assert encoded != SECRET
    masked = Redactor(SECRET).mask(f"value={encoded};")
    assert encoded not in masked
    assert MASK in masked


@pytest.mark.parametrize("prefix", ["", "u", "us", "user:", "user:x", "admin-account:"])
def test_secret_inside_a_larger_base64_blob_is_caught_at_every_alignment(prefix: str) -> None:
    """docker config ``auth`` = base64("user:password"): the password sits at any offset mod 3."""
    password = "correct-horse-battery-staple"
    blob = base64.b64encode(f"{prefix}{password}:trailing".encode()).decode()
    masked = Redactor(password).mask(f'{{"auth": "{blob}"}}')
    assert MASK in masked
    # What is left of the blob no longer decodes to anything containing the password.
    for piece in masked.split(MASK):
        for start in range(4):
            chunk = piece[start:]
            chunk = chunk[: len(chunk) - len(chunk) % 4]
            try:
                decoded = base64.b64decode(chunk, validate=False)
            except ValueError:
                continue
            assert password.encode() not in decoded


def test_longest_form_wins_so_padding_is_not_left_behind() -> None:
    padded = base64.b64encode(b"abcd-secret").decode()
    assert padded.endswith("=")
    assert Redactor("abcd-secret").mask(f"[{padded}]") == f"[{MASK}]"


def test_short_and_empty_values_are_ignored() -> None:
    r = Redactor(None, "", "abc", "   ")
    assert not r
    assert r.mask("abc abc") == "abc abc"


def test_surrounding_whitespace_and_lines_of_multiline_secrets() -> None:
    pem = "-----BEGIN KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\nshort\n-----END KEY-----\n"
    r = Redactor(pem, "token-with-newline\n")
    assert r.mask("got token-with-newline here") == f"got {MASK} here"
    # Logs are line based: each long line of a multi-line secret is masked on its own.
    assert r.mask("MIIEvQIBADANBgkqhkiG9w0BAQEFAASC") == MASK
    assert r.mask("short") == "short"


def test_many_secrets() -> None:
    secrets = [f"secret-value-{i:03d}-xyz" for i in range(200)]
    r = Redactor(*secrets)
    line = " | ".join(secrets[::7])
    masked = r.mask(line)
    assert all(s not in masked for s in secrets)
    assert masked.count(MASK) == len(secrets[::7])


def test_mask_many_matches_mask() -> None:
    r = Redactor(SECRET, "another-secret")
    texts = ["plain", f"a {SECRET} b", "x another-secret", "", urllib.parse.quote_plus(SECRET)]
    assert r.mask_many(texts) == [r.mask(t) for t in texts]
    assert r.mask_many(["a", "b"]) == ["a", "b"]


def test_mask_many_does_not_mask_across_line_boundaries() -> None:
    r = Redactor("abcd\nefgh")
    # Joined with a newline, these two records would contain the secret; separately they do not.
    assert r.mask_many(["xxabcd", "efghyy"]) == ["xxabcd", "efghyy"]


def test_child_masks_parent_secrets_including_later_ones() -> None:
    parent = Redactor("runner-token-1234")
    child = parent.child()
    child.register("job-secret-5678")
    assert child.mask("runner-token-1234 job-secret-5678") == f"{MASK} {MASK}"
    assert parent.mask("job-secret-5678") == "job-secret-5678"
    before = child.generation
    parent.register("rotated-token-9999")
    assert child.generation != before
    assert child.mask("rotated-token-9999") == MASK


def test_generation_changes_only_when_something_new_is_registered() -> None:
    r = Redactor("first-secret")
    g = r.generation
    r.register("first-secret", None, "ab")
    assert r.generation == g
    r.register("second-secret")
    assert r.generation > g


def test_forms_of_includes_the_value_and_nothing_too_short() -> None:
    forms = forms_of("abcd")
    assert "abcd" in forms
    assert all(len(f) >= 4 for f in forms)


def test_concurrent_registration_and_masking() -> None:
    r = Redactor()
    errors: list[BaseException] = []

    def register() -> None:
        for i in range(200):
            r.register(f"secret-number-{i}")

    def mask() -> None:
        try:
            for i in range(2000):
                r.mask(f"line {i} secret-number-5")
        except BaseException as exc:  # pragma: no cover - the assertion below reports it
            errors.append(exc)

    threads = [threading.Thread(target=register), threading.Thread(target=mask)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert r.mask("secret-number-199") == MASK


# ------------------------------------------------------------------ issue 11: more forms

TF_SECRET = 'p@ss<w>&rd/"9'


@pytest.mark.parametrize(
    "shown",
    [
        TF_SECRET,
        base64.b64encode(TF_SECRET.encode()).decode(),
        urllib.parse.quote(TF_SECRET, safe=""),
        urllib.parse.quote(TF_SECRET, safe="").lower(),
        # Go's encoding/json (terraform -json, kubectl): <, > and & as \u003c \u003e \u0026.
        json.dumps(TF_SECRET)[1:-1].replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026"),
        json.dumps(TF_SECRET)[1:-1].replace("/", "\\/"),
        # JSON inside a JSON string (a log body that is itself a JSON document).
        json.dumps(json.dumps({"password": TF_SECRET}))[1:-1],
        # terraform local-exec: Executing: ["/bin/sh" "-c" "echo <secret>"] (Go %q quoting).
        'Executing: ["/bin/sh" "-c" "echo ' + TF_SECRET.replace("\\", "\\\\").replace('"', '\\"') + '"]',
    ],
)
def test_json_escaped_and_split_forms_are_masked(shown: str) -> None:
    masked = Redactor(TF_SECRET).mask(f"out: {shown} end")
    assert MASK in masked
    for piece in ("p@ss", "rd/", "w>", "w\\u003e"):
        assert piece not in masked, masked
