"""What kind of image a build writes, and which firmware boots a whole disk."""

from __future__ import annotations

from enum import StrEnum
from typing import TypeVar

from hotsauce.errors import ConfigError

Choice = TypeVar("Choice", bound=StrEnum)


class Layout(StrEnum):
    EC2 = "ec2"  # a root filesystem, a kernel and a ramdisk, booted directly by the hypervisor
    DISK = "disk"  # one partitioned disk that firmware boots through GRUB


class BootMode(StrEnum):
    BIOS = "bios"
    UEFI = "uefi"
    HYBRID = "hybrid"  # both: a BIOS boot partition and an EFI system partition

    @property
    def bios(self) -> bool:
        return self in (BootMode.BIOS, BootMode.HYBRID)

    @property
    def uefi(self) -> bool:
        return self in (BootMode.UEFI, BootMode.HYBRID)

    @property
    def firmware(self) -> tuple[str, ...]:
        """The manifest's `boot_modes`: the firmware kinds that boot the disk."""
        return tuple(mode for mode, supported in (("bios", self.bios), ("uefi", self.uefi)) if supported)


def parse_layout(value: object, where: str) -> Layout:
    return _parse_choice(Layout, value, where, "layout")


def parse_boot_mode(value: object, where: str) -> BootMode:
    return _parse_choice(BootMode, value, where, "boot mode")


def _parse_choice(kind: type[Choice], value: object, where: str, what: str) -> Choice:
    try:
        return kind(str(value))
    except ValueError:
        raise ConfigError(f"{where}: unknown {what} {value!r}; choose one of "
                          + ", ".join(member.value for member in kind)) from None
