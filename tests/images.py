"""Test helpers: run the hotsauce CLI as a user would, and look inside what it wrote."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def run_hotsauce(*args: str | Path, cwd: Path, env: dict[str, str] | None = None,
                 timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """`python -m hotsauce ARGS` from this checkout, as root, output captured."""
    environment = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run([sys.executable, "-m", "hotsauce", *map(str, args)], cwd=cwd, env=environment,
                          capture_output=True, text=True, timeout=timeout, check=False)


def unpack_set(archive: Path, target: Path) -> Path:
    target.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive) as tar:
        tar.extractall(target, filter="data")
    return target


@contextmanager
def mounted_root_image(image: Path, scratch: Path) -> Iterator[Path]:
    """The root image of a set, converted to raw and mounted read-only."""
    raw = scratch / f"{image.stem}.raw"
    subprocess.run(["qemu-img", "convert", "-O", "raw", image, raw], check=True)
    mountpoint = scratch / f"{image.stem}.mnt"
    mountpoint.mkdir()
    subprocess.run(["mount", "-o", "ro,loop", raw, mountpoint], check=True)
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", mountpoint], check=True)
        raw.unlink()


def filesystem_label(image: Path, scratch: Path) -> str:
    raw = scratch / f"{image.stem}.label.raw"
    subprocess.run(["qemu-img", "convert", "-O", "raw", image, raw], check=True)
    try:
        return subprocess.run(["blkid", "-o", "value", "-s", "LABEL", raw], capture_output=True, text=True,
                              check=True).stdout.strip()
    finally:
        raw.unlink()
