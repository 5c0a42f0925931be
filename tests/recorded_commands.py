"""A stand-in for the host's device tools, so the pipeline's orchestration is tested without root.

As diskimage-builder's block-device tests do, the commands the build would
run (losetup, mkfs, mount, qemu-img, ...) are recorded and answered as the
tools would answer, and nothing touches a device. Tools that only read and
write files (sfdisk on the image file, tar, compressors) really run, without
the options only root may use, so the image's root is a plain folder that
the base and the modules really fill.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from tests.faults.projects import TINY_ROOT_FILES

FAKE_DEVICE = "/dev/loop-recorded"

# Answered with success and no output: they would act on devices and mounts.
ANSWERED = frozenset({"mount", "umount", "sync", "fstrim", "losetup", "mkfs.ext4", "mkfs.xfs", "mkfs.btrfs",
                      "partx", "debugfs", "unshare"})
# Only files in the build's own folders: they really run.
REALLY_RUN = frozenset({"sfdisk", "tar", "zstd", "pigz", "gzip", "xz", "bzip2", "fallocate", "dd"})
# What dumpe2fs says of a filesystem with no inode in use (the recorded mkfs made none).
EMPTY_DUMPE2FS = b"Inode count:              16\nInodes per group:         16\n  Free inodes: 1-16\n"
# What tar may only do as root: keep owners, ACLs and extended attributes.
ROOT_ONLY_TAR_OPTIONS = frozenset({"--same-owner", "--acls", "--xattrs", "--xattrs-include=*"})


@dataclass
class CommandRecorder:
    """Records every command, in order; the command that starts with `failing` fails as a broken tool would.

    `run` is what `proc.run` would have run to completion; `start` is what
    `proc.child_process` would have started. A command it does not know is
    an error of the test: the pipeline ran something nobody expected.
    """

    failing: str | None = None
    commands: list[list[str]] = field(default_factory=list)
    started: list[list[str]] = field(default_factory=list)

    def run(self, argv: list[str], input_bytes: bytes | None) -> subprocess.CompletedProcess[bytes]:
        self.commands.append(argv)
        program = Path(argv[0]).name
        if self.failing is not None and " ".join(argv).startswith(self.failing):
            return subprocess.CompletedProcess(argv, 1, b"", f"{program}: injected failure\n".encode())
        if program in REALLY_RUN:
            return subprocess.run(_rootless(argv), input=input_bytes, capture_output=True, check=False)
        if program == "losetup" and "--find" in argv:
            return subprocess.CompletedProcess(argv, 0, f"{FAKE_DEVICE}\n".encode(), b"")
        if program == "mmdebstrap":
            _bootstrap_tiny_root(argv)
            return subprocess.CompletedProcess(argv, 0, b"", b"")
        if program == "qemu-img" and argv[1] == "convert":
            Path(argv[-1]).write_bytes(b"what qemu-img would have converted\n")
            return subprocess.CompletedProcess(argv, 0, b"", b"")
        if program in ANSWERED:
            return subprocess.CompletedProcess(argv, 0, b"", b"")
        if program == "dumpe2fs":
            return subprocess.CompletedProcess(argv, 0, EMPTY_DUMPE2FS, b"")
        raise AssertionError(f"the pipeline ran a command the recorder does not know: {argv}")

    def start(self, argv: list[str]) -> list[str]:
        self.started.append(argv)
        program = Path(argv[0]).name
        if program in REALLY_RUN or argv[0] == sys.executable:
            return _rootless(argv)
        if is_qemu(argv):
            return ["true"]  # the KVM probe's guest shows nothing: KVM counts as unusable, TCG is chosen
        raise AssertionError(f"the pipeline started a command the recorder does not know: {argv}")

    def transcript(self, **places: Path) -> list[str]:
        """The recorded commands as lines, with the build's folders named by `places`
        (longest first, so a folder inside another is named as itself)."""
        ordered = sorted(places.items(), key=lambda item: len(str(item[1])), reverse=True)
        lines = []
        for argv in self.commands:
            line = " ".join(argv)
            for name, path in ordered:
                line = line.replace(str(path), name)
            lines.append(line)
        return lines


def is_qemu(argv: list[str]) -> bool:
    """QEMU, started directly or niced (the KVM probe runs at the lowest priority)."""
    if Path(argv[0]).name == "nice" and argv[1:2] == ["-n"]:
        argv = argv[3:]
    return Path(argv[0]).name.startswith("qemu-system-")


def _bootstrap_tiny_root(argv: list[str]) -> None:
    """What mmdebstrap would have made, in small: the tiny root of the fault tests. Its
    positional arguments are the suite, the target and the sources."""
    _suite, target, *_sources = [arg for arg in argv[1:] if not arg.startswith("-")]
    for name, data in TINY_ROOT_FILES.items():
        path = Path(target) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def _rootless(argv: list[str]) -> list[str]:
    if Path(argv[0]).name != "tar" or not any(a in ("--extract", "-x") for a in argv):
        return argv
    return [a for a in argv if a not in ROOT_ONLY_TAR_OPTIONS] + ["--no-same-owner"]
