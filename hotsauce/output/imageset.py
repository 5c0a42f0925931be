"""The EC2-style image set: what `build` writes and `boot` and `upload` read.

A set is a folder (or a tar.gz of the same files at its top level) holding:

    root.qcow2 | root.raw   the root filesystem image, labelled `root`
                            (with --no-strip: the whole partitioned disk)
    vmlinuz                 the kernel          (absent when built with kernel: false)
    initrd.img              the ramdisk         (absent when built with kernel: false)
    libvirt.xml             a domain that boots the set where its files are (see output/libvirt.py)
    sbom.spdx.json          what the image holds and was made from, SPDX 2.3 (see output/sbom.py)
    manifest.json           what the set is: see Manifest
    NAME.sha256             one per file above, in `sha256sum` format
"""

from __future__ import annotations

import hashlib
import json
import tarfile
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from tempfile import TemporaryDirectory

from hotsauce.errors import ChecksumMismatch, ConfigError

KERNEL_NAME = "vmlinuz"
RAMDISK_NAME = "initrd.img"
LIBVIRT_NAME = "libvirt.xml"
MANIFEST_NAME = "manifest.json"
CHECKSUM_SUFFIX = ".sha256"
ROOT_LABEL = "root"
SET_FILE_MODE = 0o644  # every file of a set: readable by the hypervisor's user, as qemu-img leaves none
EC2_LAYOUT = "ec2"  # a root filesystem booted with the set's kernel and ramdisk
DISK_LAYOUT = "disk"  # a whole partitioned disk that boots through its firmware and bootloader


def root_image_name(image_format: str) -> str:
    return f"root.{image_format}"


@dataclass(frozen=True)
class Manifest:
    build_id: str  # the epoch's time and a digest of the inputs: the same for the same inputs
    root: str  # file name of the root image in the set
    image_format: str  # qcow2 | raw
    fs_type: str  # ext4 | xfs | btrfs
    partitioned: bool  # True when the partition table was kept (--no-strip)
    kernel: str | None
    ramdisk: str | None
    kernel_cmdline: str  # what the kernel needs to find and mount the root
    os_distro: str | None  # os-release ID, e.g. debian
    os_version: str | None  # os-release VERSION_ID, e.g. 12
    hotsauce_version: str
    created: str  # ISO 8601, UTC: the epoch (SOURCE_DATE_EPOCH), not the clock
    # Sets written before these fields existed lack them; the defaults say what those sets are.
    hostname: str | None = None  # the image's /etc/hostname
    layout: str = EC2_LAYOUT  # ec2 | disk
    boot_modes: tuple[str, ...] = ()  # for the disk layout: bios, uefi (one or both)
    # A whole disk also says what a cloud needs to register it.
    architecture: str | None = None  # x86_64, as clouds name it
    root_device: str | None = None  # the device name clouds attach the disk as (/dev/xvda, /dev/vda)
    root_found_by: str | None = None  # UUID: how fstab and the kernel command line find the root
    drivers: dict[str, bool] | None = None  # ena, nvme, ...: present in the image's kernel
    disk_files: tuple[dict[str, object], ...] = ()  # each file: name, format, subformat, virtual_size
    # Each module in order: name, kind, digest of its files, and the version ansible-galaxy installed
    # a role as (from requirements.yml), where there is one.
    modules: tuple[dict[str, object], ...] = ()
    sbom: str | None = None  # the SPDX SBOM's file name (sbom.spdx.json); None: built without one
    source_date_epoch: int | None = None  # SOURCE_DATE_EPOCH: no file time of the image or set is later

    def files(self) -> list[str]:
        disks = [str(entry["name"]) for entry in self.disk_files if entry["name"] != self.root]
        extras = (self.kernel, self.ramdisk)
        names = [self.root, *disks, *(n for n in extras if n), LIBVIRT_NAME, *([self.sbom] if self.sbom else []),
                 MANIFEST_NAME]
        return names

    def write(self, folder: Path) -> Path:
        path = folder / MANIFEST_NAME
        path.write_text(json.dumps(asdict(self), indent=2, sort_keys=True) + "\n")
        return path

    @classmethod
    def read(cls, folder: Path) -> Manifest:
        path = folder / MANIFEST_NAME
        try:
            data = json.loads(path.read_text())
            if isinstance(data, dict):
                for name in ("boot_modes", "disk_files", "modules"):
                    if isinstance(data.get(name), list):
                        data[name] = tuple(data[name])  # JSON has no tuples
            return cls(**data)
        except FileNotFoundError:
            raise ConfigError(f"{folder}: not an image set (no {MANIFEST_NAME})") from None
        except (ValueError, TypeError) as error:
            raise ConfigError(f"{path}: unreadable manifest: {error}") from None


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def write_checksum(path: Path) -> Path:
    """NAME.sha256 beside NAME, in the format `sha256sum -c` reads."""
    checksum_path = path.with_name(path.name + CHECKSUM_SUFFIX)
    checksum_path.write_text(f"{sha256_of(path)}  {path.name}\n")
    return checksum_path


def verify_set(folder: Path, *, skipping: Collection[str] = ()) -> Manifest:
    """Check every file of the set (but those named in `skipping`) against its checksum file;
    name the first bad one."""
    manifest = Manifest.read(folder)
    for name in manifest.files():
        if name in skipping:
            continue
        path = folder / name
        checksum_path = folder / (name + CHECKSUM_SUFFIX)
        if not path.is_file():
            raise ChecksumMismatch(f"{path}: missing from the image set")
        if not checksum_path.is_file():
            raise ChecksumMismatch(f"{checksum_path}: missing from the image set")
        expected = checksum_path.read_text().split()[0]
        if sha256_of(path) != expected:
            raise ChecksumMismatch(f"{path}: checksum does not match {checksum_path.name}")
    return manifest


@contextmanager
def opened_set(path: Path) -> Iterator[Path]:
    """The set's folder: `path` itself, or a temporary unpacking of a tar.gz."""
    if path.is_dir():
        yield path
        return
    if not path.is_file():
        raise ConfigError(f"{path}: no such image set (a folder or tar.gz that `hotsauce build` wrote)")
    with TemporaryDirectory(prefix="hotsauce-set-") as temp:
        extract_set(path, Path(temp))
        yield Path(temp)


def extract_set(archive: Path, folder: Path) -> None:
    """The files of a tar.gz set into `folder`; nothing outside it, whatever the archive says."""
    try:
        with tarfile.open(archive) as tar:
            tar.extractall(folder, filter="data")
    except (tarfile.TarError, OSError) as error:
        raise ConfigError(f"{archive}: not a readable image set archive: {error}") from None
