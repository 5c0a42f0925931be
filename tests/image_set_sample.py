"""A small but real image set, in the format `hotsauce build` writes.

The root image is a real qcow2 of an ext4 filesystem labelled `root` (so
Glance's format inspection sees what a build would produce); the kernel and
ramdisk are small stand-ins with distinct content, since the upload tests only
move bytes and links, they never boot.
"""

from __future__ import annotations

import os
import tarfile
from pathlib import Path
from tempfile import TemporaryDirectory

from hotsauce.host.proc import run
from hotsauce.output.imageset import (
    KERNEL_NAME,
    RAMDISK_NAME,
    ROOT_LABEL,
    Manifest,
    root_image_name,
)
from tests.image_sets import write_description

ROOT_FS_BYTES = 8 << 20


def make_image_set(folder: Path, build_id: str = "sample-0001") -> Manifest:
    """Write a complete, verifiable set into `folder` (created) and return its manifest."""
    folder.mkdir(parents=True, exist_ok=True)
    root_name = root_image_name("qcow2")
    _write_root_qcow2(folder / root_name, build_id)
    # Random bytes make each stand-in distinct, so a swapped link would show.
    (folder / KERNEL_NAME).write_bytes(b"hotsauce test kernel\n" + os.urandom(96 << 10))
    (folder / RAMDISK_NAME).write_bytes(b"hotsauce test ramdisk\n" + os.urandom(160 << 10))
    manifest = write_description(folder, root_name, build_id, f"root=LABEL={ROOT_LABEL} console=ttyS0")
    return manifest


def _write_root_qcow2(target: Path, build_id: str) -> None:
    with TemporaryDirectory(prefix="hotsauce-sample-") as temp:
        tree = Path(temp) / "tree"
        (tree / "etc").mkdir(parents=True)
        (tree / "etc/hotsauce-build").write_text(build_id + "\n")
        raw = Path(temp) / "root.raw"
        with raw.open("wb") as stream:
            stream.truncate(ROOT_FS_BYTES)
        run(["mkfs.ext4", "-q", "-F", "-L", ROOT_LABEL, "-d", tree, raw])
        run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, target])


def pack_image_set(folder: Path, archive: Path) -> Path:
    """The set as `build -x` writes it: a tar.gz with the files at its top level."""
    with tarfile.open(archive, "w:gz") as packed:
        for path in sorted(folder.iterdir()):
            packed.add(path, arcname=path.name)
    return archive
