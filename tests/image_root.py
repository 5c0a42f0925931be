"""A real Debian root in a plain folder, extracted from the test rootfs tarball."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from hotsauce.modules.sandbox import sandbox_processes


def require_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: mounts and chroot")


@contextmanager
def extracted_root(tarball: Path, parent: Path) -> Iterator[Path]:
    """The tarball's root in parent/root, removed afterwards (it is some 400 MB)."""
    require_root()
    root = parent / "root"
    root.mkdir()
    subprocess.run(
        [
            "tar",
            "--zstd",
            "-xpf",
            str(tarball),
            "--numeric-owner",
            "--xattrs",
            "--xattrs-include=*",
            "--acls",
            "-C",
            str(root),
        ],
        check=True,
    )
    try:
        yield root
    finally:
        # Never across a mount: a build chroot left mounted (a test that failed) binds the
        # host's /dev into the root, and removing through it deletes the host's devices.
        subprocess.run(["rm", "-rf", "--one-file-system", str(root)], check=False)


def in_root(root: Path, *command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["chroot", str(root), *command], capture_output=True, text=True, check=False
    )


def mounts_under(root: Path) -> list[str]:
    prefix = str(root.resolve())
    with open("/proc/self/mountinfo") as mountinfo:
        targets = [line.split()[4] for line in mountinfo]
    return [t for t in targets if t == prefix or t.startswith(prefix + "/")]


def processes_in(root: Path) -> list[str]:
    """Processes whose root folder is the image root (a daemon started by the build), and the
    processes of the image's sandboxes, which see the root as `/`: bwrap and what it runs."""
    found = []
    parents: dict[int, int] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            parents[int(proc.name)] = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if os.readlink(proc / "root") == str(root.resolve()):
                found.append(int(proc.name))
        except (OSError, IndexError, ValueError):
            continue
    sandboxed = set(sandbox_processes(root))
    while more := {pid for pid, parent in parents.items() if parent in sandboxed} - sandboxed:
        sandboxed |= more
    described = []
    for pid in sorted({*found, *sandboxed}):
        try:
            described.append(f"{pid} {Path(f'/proc/{pid}/comm').read_text().strip()}")
        except OSError:
            continue  # ended meanwhile
    return described
