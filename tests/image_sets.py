"""Image sets made by hand for the boot tests, from a cached Debian root tarball.

`hotsauce build` makes real sets, and the tests that boot the default image use one;
these are for testing `hotsauce boot` alone: made in seconds without a loop device
or a mount, and able to be what a build never writes (a root under another
label, an empty root). A set here has the files build writes for a stripped
ext4 root: root.qcow2 (made with `mkfs.ext4 -d`), the kernel and ramdisk
copied out of /boot, a placeholder libvirt.xml, manifest.json and a checksum
per file.
"""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime
from pathlib import Path

from hotsauce import __version__
from hotsauce.output.imageset import (
    KERNEL_NAME,
    LIBVIRT_NAME,
    RAMDISK_NAME,
    ROOT_LABEL,
    Manifest,
    root_image_name,
    write_checksum,
)

ROOT_SIZE = "1G"
EMPTY_ROOT_SIZE = "32M"
FSTAB = f"LABEL={ROOT_LABEL} / ext4 defaults,errors=remount-ro 0 1\n"


def extract_root(tarball: Path, tree: Path) -> Path:
    """The root filesystem tree of a tar.zst, as root so owners and devices survive."""
    tree.mkdir(parents=True, exist_ok=True)
    subprocess.run(["tar", "--zstd", "-xpf", str(tarball), "-C", str(tree)], check=True)
    (tree / "etc" / "fstab").write_text(FSTAB)
    # A console on ttyS0 needs no getty set-up: console=ttyS0 makes systemd start one.
    return tree


def _only(tree: Path, pattern: str) -> Path:
    found = sorted((tree / "boot").glob(pattern))
    assert len(found) == 1, f"expected one {pattern} in {tree}/boot, found {found}"
    return found[0]


def make_image_set(
    tree: Path, folder: Path, *, fs_label: str = ROOT_LABEL, empty_root: bool = False
) -> Path:
    """An image set in `folder` from a root tree's files and its kernel.

    A `fs_label` other than root makes a set whose kernel cannot find its
    root; such a root can as well be `empty_root` (small and quick to make).
    """
    folder.mkdir(parents=True, exist_ok=True)
    raw = folder.parent / f"{folder.name}-root.raw"
    content = [] if empty_root else ["-d", str(tree)]
    size = EMPTY_ROOT_SIZE if empty_root else ROOT_SIZE
    subprocess.run(
        ["mkfs.ext4", "-q", "-F", "-L", fs_label, *content, str(raw), size],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    root = folder / root_image_name("qcow2")
    subprocess.run(["qemu-img", "convert", "-O", "qcow2", str(raw), str(root)], check=True)
    raw.unlink()
    (folder / KERNEL_NAME).write_bytes(_only(tree, "vmlinuz-*").read_bytes())
    (folder / RAMDISK_NAME).write_bytes(_only(tree, "initrd.img-*").read_bytes())
    write_description(folder, root.name, datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ"),
                      f"root=LABEL={ROOT_LABEL} ro")
    return folder


def write_description(folder: Path, root_name: str, build_id: str, kernel_cmdline: str) -> Manifest:
    """The rest of a hand-made set around its root, kernel and ramdisk: a placeholder
    libvirt.xml, the manifest, and a checksum per file, as `hotsauce build` writes them."""
    (folder / LIBVIRT_NAME).write_text("<domain type='qemu'><!-- placeholder --></domain>\n")
    manifest = Manifest(
        build_id=build_id,
        root=root_name,
        image_format="qcow2",
        fs_type="ext4",
        partitioned=False,
        kernel=KERNEL_NAME,
        ramdisk=RAMDISK_NAME,
        kernel_cmdline=kernel_cmdline,
        os_distro="debian",
        os_version="12",
        hotsauce_version=__version__,
        created=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    manifest.write(folder)
    for name in manifest.files():
        write_checksum(folder / name)
    return manifest
