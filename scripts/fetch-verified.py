#!/usr/bin/env python3
"""Download a release archive, check its SHA256, and install one binary from it.

Used by the Dockerfile to put terraform and helm into the image: the build has no curl or unzip,
and a tool fetched without a pinned checksum is a supply-chain hole. Standard library only, so it
runs on a bare python base image.

    fetch-verified.py --url URL --sha256 HEX [--member PATH_IN_ARCHIVE] --out DEST

The archive kind (zip, tar.gz, or a bare binary when --member is absent) comes from the URL.
Exit code 1 with one line on stderr on a checksum mismatch or a missing member; nothing is
written to DEST unless the checksum matched.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import os
import shutil
import sys
import tarfile
import tempfile
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path

CHUNK = 1 << 20


class FetchError(Exception):
    """The download failed, or it is not the file the checksum names."""


def shown(url: str) -> str:
    """The URL without any user:password, for messages."""
    parts = urllib.parse.urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def download(url: str, dest: Path, timeout: float) -> str:
    """Stream ``url`` to ``dest``; return the SHA256 of what was written."""
    digest = hashlib.sha256()
    if not url.startswith(("https://", "http://", "file://")):
        raise FetchError(f"unsupported URL scheme: {shown(url)}")
    # urllib does not take user:password from the URL: send it as a Basic header instead.
    parts = urllib.parse.urlsplit(url)
    request = urllib.request.Request(shown(url))  # noqa: S310 - scheme checked above
    if parts.username is not None:
        user = urllib.parse.unquote(parts.username)
        password = urllib.parse.unquote(parts.password or "")
        basic = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
        request.add_unredirected_header("Authorization", f"Basic {basic}")
    with urllib.request.urlopen(request, timeout=timeout) as response, dest.open("wb") as out:  # noqa: S310
        while chunk := response.read(CHUNK):
            digest.update(chunk)
            out.write(chunk)
    return digest.hexdigest()


def extract(archive: Path, url: str, member: str | None, dest: Path) -> None:
    tmp = dest.with_name(dest.name + ".part")
    if member is None:
        shutil.copyfile(archive, tmp)
    elif url.endswith(".zip"):
        with zipfile.ZipFile(archive) as zf:
            try:
                src = zf.open(member)
            except KeyError:
                raise FetchError(f"{member} is not in the archive") from None
            with src, tmp.open("wb") as out:
                shutil.copyfileobj(src, out, CHUNK)
    elif url.endswith((".tar.gz", ".tgz")):
        with tarfile.open(archive, "r:gz") as tf:
            try:
                info = tf.getmember(member)
            except KeyError:
                raise FetchError(f"{member} is not in the archive") from None
            fileobj = tf.extractfile(info) if info.isfile() else None
            if fileobj is None:
                raise FetchError(f"{member} is not a regular file")
            with fileobj, tmp.open("wb") as out:
                shutil.copyfileobj(fileobj, out, CHUNK)
    else:
        raise FetchError(
            f"cannot tell the archive kind of {shown(url)} (want .zip, .tar.gz or --member absent)"
        )
    tmp.chmod(0o755)
    os.replace(tmp, dest)


def fetch(url: str, sha256: str, member: str | None, dest: Path, *, timeout: float = 300) -> None:
    expected = sha256.strip().lower()
    if len(expected) != 64 or any(c not in "0123456789abcdef" for c in expected):
        raise FetchError(f"--sha256 must be 64 hex digits, got {sha256!r}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmpdir:
        archive = Path(tmpdir) / "download"
        actual = download(url, archive, timeout)
        if actual != expected:
            raise FetchError(f"SHA256 mismatch for {shown(url)}: expected {expected}, got {actual}")
        extract(archive, url, member, dest)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--url", required=True)
    parser.add_argument("--sha256", required=True)
    parser.add_argument("--member", default=None, help="path of the binary inside the archive")
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args(argv)
    try:
        fetch(args.url, args.sha256, args.member, args.out)
    except (FetchError, OSError) as exc:
        print(f"fetch-verified: {exc}", file=sys.stderr)
        return 1
    print(f"fetch-verified: {args.out} from {shown(args.url)} (sha256 ok)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
