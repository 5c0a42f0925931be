"""Booting a whole-disk set through firmware: SeaBIOS for BIOS, OVMF for UEFI.

The disk boots as a cloud would boot it: the firmware loads the image's own
GRUB, which reads the image's own grub.cfg. The probe (hotsauce.boot.probe)
still needs its arguments on the kernel command line, and GRUB takes that
from grub.cfg, so the guest boots a scratch copy of the disk whose grub.cfg
carries them, with a one-line loader for the probe beside it; the set's
files are never changed. The copy may be larger than the disk, as when a
cloud gives a bigger volume than the image.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from hotsauce.boot.probe import PROBE_DEVICE, PROBE_SERIAL, probe_cmdline, write_probe_disk
from hotsauce.boot.qemu import GUEST_MEMORY_MB, Accel, Drive, guest_cpus, qemu_binary
from hotsauce.errors import ConfigError, FirmwareMissing
from hotsauce.host import proc
from hotsauce.image import disk
from hotsauce.image.partitions import read_gpt
from hotsauce.output.imageset import Manifest
from hotsauce.rootpath import inside

# Debian's `ovmf`: the 4 MiB build first, the older 2 MiB one where only it is installed.
OVMF_PAIRS = (
    (Path("/usr/share/OVMF/OVMF_CODE_4M.fd"), Path("/usr/share/OVMF/OVMF_VARS_4M.fd")),
    (Path("/usr/share/OVMF/OVMF_CODE.fd"), Path("/usr/share/OVMF/OVMF_VARS.fd")),
)
PROBE_LOADER = "/usr/local/lib/hotsauce-probe-loader"
_LINUX_LINE = re.compile(r"^(\s*linux(?:efi)?\s.*?)\s*$")


class Firmware(StrEnum):
    BIOS = "bios"  # SeaBIOS, QEMU's own
    UEFI = "uefi"  # OVMF, from Debian's ovmf package


def parse_firmware(value: str) -> Firmware:
    try:
        return Firmware(value)
    except ValueError:
        raise ConfigError(f"--firmware {value!r}: expected one of "
                          + ", ".join(f.value for f in Firmware)) from None


def choose_firmware(manifest: Manifest, requested: Firmware | None, folder: Path) -> Firmware:
    """The requested firmware if the disk supports it; by default the first it supports."""
    supported = [Firmware(mode) for mode in manifest.boot_modes]
    if not supported:
        raise ConfigError(f"{folder}: the manifest names no boot modes for this disk")
    if requested is None:
        return supported[0]
    if requested not in supported:
        raise ConfigError(f"--firmware {requested.value}: {folder} boots only with "
                          + ", ".join(f.value for f in supported))
    return requested


def ovmf_files() -> tuple[Path, Path]:
    for code, variables in OVMF_PAIRS:
        if code.is_file() and variables.is_file():
            return code, variables
    raise FirmwareMissing("OVMF is not installed (Debian: apt-get install ovmf); UEFI boots need it")


@dataclass(frozen=True)
class FirmwareMachine:
    """A guest that firmware boots from its first disk; otherwise as hotsauce.boot.qemu.Machine."""

    firmware: Firmware
    drives: tuple[Drive, ...]
    serial_files: tuple[Path, ...]
    uefi_vars: Path | None = None  # a writable copy of OVMF's variable store
    accel: Accel = Accel.TCG

    def argv(self) -> list[str]:
        argv = [qemu_binary(), "-accel", self.accel.value, "-m", str(GUEST_MEMORY_MB),
                "-smp", str(guest_cpus(self.accel)), "-no-reboot"]
        if self.firmware is Firmware.UEFI:
            code, _ = ovmf_files()
            assert self.uefi_vars is not None
            # q35, as clouds boot UEFI guests (OpenStack's hw_machine_type=q35).
            argv += ["-machine", "q35",
                     "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={code}",
                     "-drive", f"if=pflash,format=raw,unit=1,file={self.uefi_vars}"]
        for number, drive in enumerate(self.drives):
            argv += drive.arguments(f"disk{number}")
        argv += ["-nic", "user,model=virtio-net-pci,restrict=on", "-display", "none", "-monitor", "none"]
        for path in self.serial_files:
            argv += ["-serial", f"file:{path}"]
        return argv


def firmware_machine(folder: Path, manifest: Manifest, firmware: Firmware, checks: list[str], work: Path,
                     serial_log: Path, extra_cmdline: str, disk_size: int | None = None) -> FirmwareMachine:
    """The guest for one boot: a scratch copy of the disk armed for the probe, the probe disk, the firmware."""
    scratch = scratch_disk(folder, manifest, work, extra_cmdline, disk_size)
    uefi_vars = None
    if firmware is Firmware.UEFI:
        uefi_vars = work / "OVMF_VARS.fd"
        shutil.copyfile(ovmf_files()[1], uefi_vars)
    return FirmwareMachine(
        firmware=firmware,
        drives=(
            Drive(scratch, "raw", snapshot=False),
            Drive(write_probe_disk(work / "probe.raw", checks), "raw", snapshot=False, read_only=True,
                  serial=PROBE_SERIAL),
        ),
        serial_files=(serial_log, work / "probe-report.log"),
        uefi_vars=uefi_vars,
    )


def scratch_disk(folder: Path, manifest: Manifest, work: Path, extra_cmdline: str,
                 disk_size: int | None) -> Path:
    """A raw copy of the set's disk whose GRUB entries boot with the probe armed."""
    entry = next(file for file in manifest.disk_files if file["name"] == manifest.root)
    scratch = work / "disk.raw"
    proc.run(["qemu-img", "convert", "-f", str(entry["qemu_format"]), "-O", "raw", folder / manifest.root,
              scratch])
    virtual_size = int(str(entry["virtual_size"]))
    if disk_size is not None:
        if disk_size < virtual_size:
            raise ConfigError(f"--disk-size: {disk_size} bytes is smaller than the disk ({virtual_size} bytes)")
        with scratch.open("r+b") as file:
            file.truncate(disk_size)
    root_partition = read_gpt(scratch).root
    with disk.attached(scratch, root_partition) as device, disk.root_filesystem_mounted(device, work / "root") as root:
        arm_probe(root, extra_cmdline)
    return scratch


def arm_probe(root: Path, extra_cmdline: str) -> None:
    """Every `linux` line of grub.cfg gets the probe's arguments; the loader they name goes beside."""
    grub_cfg = inside(root, "/boot/grub/grub.cfg")
    if grub_cfg.is_symlink() or not grub_cfg.is_file():
        raise ConfigError("the disk has no /boot/grub/grub.cfg to boot from")
    loader = f"udevadm wait --timeout=120 {PROBE_DEVICE}; exec /bin/sh {PROBE_DEVICE}"
    arguments = f"{extra_cmdline} {probe_cmdline(run_command=PROBE_LOADER)}"
    lines = [_LINUX_LINE.sub(lambda match: f"{match.group(1)} {arguments}", line)
             for line in grub_cfg.read_text().splitlines()]
    grub_cfg.write_text("\n".join(lines) + "\n")
    script = inside(root, PROBE_LOADER)
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text(f"#!/bin/sh\n{loader}\n")
    script.chmod(0o755)

