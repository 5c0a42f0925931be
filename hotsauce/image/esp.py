"""The EFI system partition: made with mkfs.vfat and filled with mtools, never mounted.

This kernel has no vfat driver (NOTES.md), and a FAT filesystem needs none
to be written: mtools reads and writes it on the partition's device.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path, PurePosixPath

from hotsauce.host import proc
from hotsauce.image.reproducible import Reproducible

ESP_LABEL = "EFI"


def make_esp(device: Path, repro: Reproducible | None = None) -> None:
    # FAT32 as the UEFI specification asks of a system partition; 512-byte clusters keep a 60 MiB one valid.
    argv: list[str | Path] = ["mkfs.vfat", "-F", "32", "-s", "1", "-n", ESP_LABEL]
    if repro is None:
        proc.run([*argv, device])
        return
    # The volume id from the inputs; dosfstools takes the label's time from SOURCE_DATE_EPOCH.
    proc.run([*argv, "-i", repro.fat_volume_id(), "--invariant", device], env={**os.environ, **repro.env()})


def copy_into_esp(device: Path, files: Mapping[str, Path]) -> None:
    """Each host file to its path on the ESP (`EFI/BOOT/BOOTX64.EFI`), folders made as needed."""
    folders = sorted({str(parent) for name in files for parent in PurePosixPath(name).parents
                      if str(parent) != "."}, key=lambda folder: folder.count("/"))
    for folder in folders:
        # -D s: an existing folder is skipped, not an error.
        proc.run(["mmd", "-D", "s", "-i", device, f"::/{folder}"], check=False, env=_mtools_env())
    for name, source in files.items():
        proc.run(["mcopy", "-o", "-i", device, source, f"::/{name}"], env=_mtools_env())


def list_esp(device: Path) -> list[str]:
    """Every file on the ESP, as paths from its root."""
    listing = proc.output_of(["mdir", "-/", "-b", "-i", device, "::/"], env=_mtools_env())
    return sorted(line.removeprefix("::/") for line in listing.splitlines() if line and not line.endswith("/"))


def _mtools_env() -> dict[str, str]:
    # mtools refuses a filesystem whose geometry looks odd to it unless told not to check.
    return {**os.environ, "MTOOLS_SKIP_CHECK": "1"}
