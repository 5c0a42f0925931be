"""The whole-disk layout: a GPT with a BIOS boot partition, an EFI system partition and the root.

The root is partition 1 and the last on the disk, so that it can grow into
a larger volume at first boot; the two boot partitions sit before it (14 and
15, as Debian's and Ubuntu's cloud images number them). This kernel parses
no partition table by itself (NOTES.md): the whole disk is attached as one
loop device and `partx -a` adds its partitions, `partx -d` removes them
before the device is detached.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from hotsauce.errors import ConfigError, StageFailed
from hotsauce.host import ledger, proc
from hotsauce.host.sizes import human_size
from hotsauce.image.disk import Partition, detach_loop
from hotsauce.image.reproducible import Reproducible

MIB = 1 << 20
SECTOR = 512
ROOT_NUMBER = 1
BIOS_BOOT_NUMBER = 14
ESP_NUMBER = 15
BIOS_BOOT_TYPE = "21686148-6449-6E6F-744E-656564454649"
ESP_TYPE = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
LINUX_TYPE = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
BIOS_BOOT_START, BIOS_BOOT_SIZE = 1 * MIB, 3 * MIB
ESP_START, ESP_SIZE = 4 * MIB, 60 * MIB
ROOT_START = 64 * MIB
# The backup GPT takes the disk's last 33 sectors; a root smaller than this holds no bootable system.
MINIMUM_ROOT_SIZE = 256 * MIB
MINIMUM_DISK_SIZE = ROOT_START + MINIMUM_ROOT_SIZE + MIB


@dataclass(frozen=True)
class DiskPartitions:
    """Where each partition of the whole-disk layout lies in the image."""

    root: Partition
    esp: Partition
    bios_boot: Partition


@dataclass(frozen=True)
class DiskDevices:
    """The attached disk and the partition devices `partx` made for it."""

    disk: Path
    root: Path
    esp: Path


def check_disk_size(size: int) -> None:
    if size < MINIMUM_DISK_SIZE:
        raise ConfigError(f"--size: {human_size(size)} is too small for a whole disk: the boot partitions "
                          f"take {ROOT_START // MIB} MiB and the root at least {MINIMUM_ROOT_SIZE // MIB} MiB "
                          f"(give at least {MINIMUM_DISK_SIZE // MIB}M)")


def gpt_script(image: Path, repro: Reproducible | None = None) -> str:
    """sfdisk's input: a partition's number is read from the end of its node name. With `repro`,
    the disk's and each partition's GUID come from the inputs (sfdisk picks random ones otherwise)."""

    def guid(purpose: str) -> str:
        return f", uuid={repro.uuid(purpose)}" if repro else ""

    return (
        "label: gpt\n"
        + (f"label-id: {repro.uuid('gpt-disk')}\n" if repro else "")
        + f'{image}{BIOS_BOOT_NUMBER} : start={BIOS_BOOT_START // SECTOR}, size={BIOS_BOOT_SIZE // SECTOR}, '
        f'type={BIOS_BOOT_TYPE}, name="BIOS boot"{guid("gpt-bios-boot")}\n'
        f'{image}{ESP_NUMBER} : start={ESP_START // SECTOR}, size={ESP_SIZE // SECTOR}, '
        f'type={ESP_TYPE}, name="EFI system"{guid("gpt-esp")}\n'
        f'{image}{ROOT_NUMBER} : start={ROOT_START // SECTOR}, type={LINUX_TYPE}, name="root"{guid("gpt-root")}\n'
    )


def write_gpt(image: Path, repro: Reproducible | None = None) -> DiskPartitions:
    proc.run(["sfdisk", "--quiet", "--no-reread", "--no-tell-kernel", image],
             input_bytes=gpt_script(image, repro).encode())
    return read_gpt(image)


def read_gpt(image: Path) -> DiskPartitions:
    table = json.loads(proc.output_of(["sfdisk", "--json", image]))["partitiontable"]
    sector_size = table.get("sectorsize", SECTOR)
    by_number: dict[int, Partition] = {}
    for entry in table["partitions"]:
        number = int(str(entry["node"]).removeprefix(str(image)))
        by_number[number] = Partition(offset=entry["start"] * sector_size, size=entry["size"] * sector_size)
    return DiskPartitions(root=by_number[ROOT_NUMBER], esp=by_number[ESP_NUMBER],
                          bios_boot=by_number[BIOS_BOOT_NUMBER])


def partition_device(disk: Path, number: int) -> Path:
    return disk.with_name(f"{disk.name}p{number}")


@contextmanager
def attached_disk(image: Path) -> Iterator[DiskDevices]:
    """The whole image as a loop device with its partitions; all gone on the way out."""
    disk = Path(proc.output_of(["losetup", "--find", "--show", image]))
    with ledger.held(ledger.Kind.LOOP, disk, backing=image.absolute()):
        try:
            # Partitions a previous user of the device left behind would make --add fail.
            proc.run(["partx", "--delete", disk], check=False)
            proc.run(["partx", "--add", disk])
            devices = DiskDevices(disk, partition_device(disk, ROOT_NUMBER), partition_device(disk, ESP_NUMBER))
            _wait_for(devices.root, devices.esp)
            yield devices
        finally:
            proc.run(["partx", "--delete", disk], check=False)
            detach_loop(disk)


def _wait_for(*devices: Path) -> None:
    # partx returns once the kernel knows the partitions; the device nodes come from devtmpfs.
    for _ in range(50):
        if all(device.exists() for device in devices):
            return
        time.sleep(0.1)
    missing = ", ".join(str(device) for device in devices if not device.exists())
    raise StageFailed("disk", f"partx added the partitions, but {missing} did not appear within 5 s")

