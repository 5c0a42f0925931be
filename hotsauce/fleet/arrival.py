"""A set fetched from a builder, checked on arrival before it takes its place in OUTDIR."""

from __future__ import annotations

import re
from pathlib import Path

from hotsauce.output.imageset import CHECKSUM_SUFFIX, sha256_of

# One line of `sha256sum` output: the digest, a space, a space or '*' (binary mode), the name.
CHECKSUM_LINE = re.compile(r"^([0-9a-f]{64}) [ *](.+)$")


def set_problem(folder: Path) -> str | None:
    """None when every file of the set has a checksum file and every checksum file
    verifies as `sha256sum -c` would; otherwise the first problem, in one line."""
    if not folder.is_dir():
        return f"{folder}: no such folder"
    files = {path.name for path in folder.iterdir() if path.is_file()}
    checksums = sorted(name for name in files if name.endswith(CHECKSUM_SUFFIX))
    if not checksums:
        return f"{folder}: no {CHECKSUM_SUFFIX} files"
    for name in sorted(files - set(checksums)):
        if name + CHECKSUM_SUFFIX not in files:
            return f"{folder / name}: has no {CHECKSUM_SUFFIX} file"
    for name in checksums:
        for line in (folder / name).read_text().splitlines():
            match = CHECKSUM_LINE.match(line)
            if match is None:
                return f"{folder / name}: not a sha256sum line: {line[:80]!r}"
            digest, target = match.groups()
            if target not in files:
                return f"{folder / name}: names {target}, which did not arrive"
            if sha256_of(folder / target) != digest:
                return f"{folder / target}: does not match {name}"
    return None


def set_size(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.iterdir() if path.is_file())
