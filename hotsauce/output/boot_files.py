"""The kernel, ramdisk and OS identity of a finished root."""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from hotsauce.errors import StageFailed
from hotsauce.output.imageset import KERNEL_NAME, RAMDISK_NAME

_RAMDISK_PATTERNS = ("initrd.img-{version}", "initramfs-{version}.img", "initrd-{version}")


@dataclass(frozen=True)
class BootFiles:
    kernel: Path
    ramdisk: Path
    version: str


def _version_key(version: str) -> list[tuple[int, str]]:
    return [(int(part), "") if part.isdigit() else (0, part) for part in re.split(r"[.-]", version)]


def find_boot_files(root: Path) -> BootFiles:
    """The newest kernel in /boot and the ramdisk built for it."""
    boot = root / "boot"
    kernels = sorted(
        (p for p in boot.glob("vmlinuz-*") if p.is_file() and not p.is_symlink()),
        key=lambda p: _version_key(p.name.removeprefix("vmlinuz-")),
    )
    if not kernels:
        raise StageFailed("output", "the image has no kernel (/boot/vmlinuz-*); "
                          "install one, or set 'kernel: false' in build.yaml for a set without it")
    kernel = kernels[-1]
    version = kernel.name.removeprefix("vmlinuz-")
    for pattern in _RAMDISK_PATTERNS:
        ramdisk = boot / pattern.format(version=version)
        if ramdisk.is_file() and not ramdisk.is_symlink():
            return BootFiles(kernel, ramdisk, version)
    raise StageFailed("output", f"the image has kernel {kernel.name} but no ramdisk for it in /boot")


def copy_boot_files(files: BootFiles, folder: Path) -> tuple[Path, Path]:
    kernel = folder / KERNEL_NAME
    ramdisk = folder / RAMDISK_NAME
    shutil.copyfile(files.kernel, kernel)
    shutil.copyfile(files.ramdisk, ramdisk)
    return kernel, ramdisk


def read_os_release(root: Path) -> dict[str, str]:
    # Symlinks are not followed: an absolute one would lead to the host's file.
    for candidate in (root / "etc" / "os-release", root / "usr" / "lib" / "os-release"):
        if candidate.is_file() and not candidate.is_symlink():
            return _parse_os_release(candidate.read_text(errors="replace"))
    return {}


def _parse_os_release(text: str) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() and not key.startswith("#"):
            values[key.strip()] = value.strip().strip("'\"")
    return values
