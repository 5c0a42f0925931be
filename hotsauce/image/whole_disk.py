"""The whole-disk layout in the pipeline: its settings, checked before anything is allocated,
and the disk itself from allocation to a mounted root.

The settings come from the flags first, then build.yaml (`layout`, `boot`,
`format`, `qcow2_compression`), then the defaults their declarations in
hotsauce.config give: the EC2-style set, and for a disk a hybrid boot and a
qcow2 file.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from hotsauce.config import BuildConfig, BuildOptions, DebianBase, DownloadBase, FsType, ImageFormat
from hotsauce.errors import ConfigError
from hotsauce.image import disk
from hotsauce.image.bootloader import missing_packages
from hotsauce.image.esp import make_esp
from hotsauce.image.layout import BootMode, Layout, parse_boot_mode, parse_layout
from hotsauce.image.partitions import DiskDevices, check_disk_size, write_gpt
from hotsauce.output.formats import DiskFormat, Qcow2Compression, parse_compression, parse_formats

MIB = 1 << 20
# What a Debian base needs for a disk: GRUB for both firmware kinds (the signed shim and GRUB where
# the suite has them, for Secure Boot), update-grub, growpart and the filesystem tools that grow the root.
DISK_PACKAGES = ("grub2-common", "grub-pc-bin", "grub-efi-amd64-bin", "shim-signed", "grub-efi-amd64-signed",
                 "cloud-guest-utils", "fdisk")
FS_PACKAGES = {FsType.EXT4: "e2fsprogs", FsType.XFS: "xfsprogs", FsType.BTRFS: "btrfs-progs"}
# Debian architectures whose GRUB boots an x86_64 PC through BIOS and UEFI.
PC_ARCHITECTURES = {"amd64": "x86_64"}
EC2_FORMATS = (DiskFormat.QCOW2, DiskFormat.RAW)


@dataclass(frozen=True)
class DiskSettings:
    """How a whole disk is made and written."""

    boot: BootMode
    formats: tuple[DiskFormat, ...]
    compression: Qcow2Compression
    architecture: str  # as clouds name it: x86_64


def layout_of(config: BuildConfig, options: BuildOptions) -> Layout:
    if options.layout is not None:
        return options.layout
    return parse_layout(config.value("layout"), f"{config.name}: layout")


def plan_disk(config: BuildConfig, options: BuildOptions) -> DiskSettings | None:
    """The disk's settings, or None for the EC2-style set; every bad combination refused here,
    before anything is allocated."""
    layout = layout_of(config, options)
    formats = _formats(config, options)
    compression = _compression(config, options)
    if layout is Layout.EC2:
        if len(formats) != 1 or formats[0] not in EC2_FORMATS:
            raise ConfigError(f"--format: the ec2 layout writes one root image, qcow2 or raw, not "
                              f"{','.join(f.value for f in formats)} (whole-disk formats need --layout disk)")
        if "boot" in config.data or options.boot is not None:
            raise ConfigError(f"{config.name}: boot: only a whole disk (layout: disk) is booted through firmware")
        if compression is not Qcow2Compression.NONE:
            raise ConfigError("--qcow2-compression: only for a whole disk (layout: disk)")
        return None
    boot = options.boot or parse_boot_mode(config.value("boot"), f"{config.name}: boot")
    if not config.kernel:
        raise ConfigError(f"{config.name}: kernel: a whole disk (layout: disk) boots the image's own kernel; "
                          "remove 'kernel: false' or use layout: ec2")
    check_disk_size(options.size)
    architecture = _architecture(config, boot)
    return DiskSettings(boot, formats, compression, architecture)


def _formats(config: BuildConfig, options: BuildOptions) -> tuple[DiskFormat, ...]:
    if options.formats is not None:
        return options.formats
    value = config.value("format")
    if isinstance(value, list):
        value = ",".join(str(item) for item in value)
    return parse_formats(str(value), f"{config.name}: format")


def _compression(config: BuildConfig, options: BuildOptions) -> Qcow2Compression:
    if options.qcow2_compression is not None:
        return options.qcow2_compression
    value = config.value("qcow2_compression")
    return parse_compression(str(value), f"{config.name}: qcow2_compression")


def _architecture(config: BuildConfig, boot: BootMode) -> str:
    """The disk's architecture; a base whose GRUB cannot boot it as asked is refused."""
    if isinstance(config.base, DownloadBase):
        return "x86_64"  # what the download holds shows when the bootloader is installed
    architecture = PC_ARCHITECTURES.get(config.base.architecture)
    if architecture is None:
        what = "EFI GRUB for x86_64 (grub-efi-amd64-bin)" if boot.uefi else "GRUB for a PC BIOS (grub-pc-bin)"
        raise ConfigError(f"{config.name}: base.debian.architecture: a {config.base.architecture} base has no "
                          f"{what}; boot {boot.value} needs an amd64 base")
    return architecture


def check_base_boots(paths: set[str], settings: DiskSettings | None, name: str) -> None:
    """Refuse, before allocating, a downloaded base that lacks what its disk's boot needs: the
    bootloader is installed from the image's own packages, after the modules, so finding out there
    would cost the whole build. A Debian base is given them (disk_base)."""
    if settings is None:
        return
    if missing := missing_packages(paths.__contains__, settings.boot):
        raise ConfigError(f"{name}: the base has no {', '.join(missing)}, which a {settings.boot.value} disk "
                          "boots with; install them in the base archive, or use a Debian base")


def plan_layout(config: BuildConfig, options: BuildOptions) -> tuple[BuildConfig, BuildOptions, DiskSettings | None]:
    """The configuration and options as the chosen layout builds them, and the disk's settings (None: ec2)."""
    settings = plan_disk(config, options)
    if settings is None:
        if options.formats is None and "format" not in config.data:
            return config, options, None  # the library caller's image_format stands
        return config, replace(options, image_format=ImageFormat(_formats(config, options)[0].value)), None
    return disk_base(config, settings, options.fs_type), options, settings


def disk_base(config: BuildConfig, settings: DiskSettings | None, fs_type: FsType) -> BuildConfig:
    """For a disk, a Debian base brings the bootloader and root-growing tools with it (and so is a
    base of its own in the cache)."""
    if settings is None or not isinstance(config.base, DebianBase):
        return config
    extra = (*DISK_PACKAGES, FS_PACKAGES[fs_type])
    include = tuple(dict.fromkeys((*config.base.include, *extra)))
    return replace(config, base=replace(config.base, include=include))


def disk_size(size: int) -> int:
    """Whole MiB: what a fixed VHD for Azure must be, and harmless for every other format."""
    return -(-size // MIB) * MIB


def allocate_disk(image: Path, size: int) -> None:
    """A sparse file of `size` (in whole MiB) with the GPT of the whole-disk layout."""
    disk.allocate(image, disk_size(size))
    write_gpt(image)


def format_disk(devices: DiskDevices, fs_type: FsType) -> None:
    disk.make_filesystem(devices.root, fs_type)
    make_esp(devices.esp)
