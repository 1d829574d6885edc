"""The wire form of a ``state-json`` body (docs/runner-api.md §6.3), for the runner and the
control plane alike.

The reference runner hands the bytes of ``terraform show -json`` to its generated Go client as
a ``[]byte`` body; the client's JSON producer (``json.Encoder.Encode``) writes a ``[]byte`` as a
quoted standard-base64 string followed by a newline. The real server stores that body as it
came and its readers trim quotes and whitespace, then base64-decode. A raw JSON document breaks
those readers, so the runner must send the encoded form; our control plane reads both, because
older runners of ours sent the raw document.
"""

from __future__ import annotations

import base64
import binascii

#: What the real server's readers trim before decoding (``strings.Trim(s, "\"' \n\r\t")``).
_TRIM = b"\"' \n\r\t"


def encode_state_json(document: bytes) -> bytes:
    """``document`` as the reference's Go client puts it on the wire: ``"<base64>"\\n``."""
    return b'"' + base64.b64encode(document) + b'"\n'


def decode_state_json(body: bytes) -> bytes:
    """The ``terraform show -json`` document in a stored body of either form.

    A body whose first significant byte opens a JSON object is the raw document; anything else
    is read as the real server reads it (trim, then standard base64). Raises ``ValueError`` when
    neither fits.
    """
    if body.lstrip().startswith(b"{"):
        return body
    try:
        return base64.b64decode(body.strip(_TRIM), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"a state-json body that is neither JSON nor base64: {exc}") from exc
