"""Making a whole disk bootable with the image's own GRUB, for BIOS, UEFI or both.

Everything that goes into the image comes from its own packages and is made
by its own tools, run in the build chroot: `grub-install` for BIOS (core.img
in the BIOS boot partition), `grub-mkimage` or the signed shim and GRUB for
UEFI, `update-initramfs` and `update-grub`. Only the ESP is written from the
host, with mtools, because nothing can mount it here. UEFI uses the
removable path EFI/BOOT/BOOTX64.EFI, so the disk boots without an NVRAM entry.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from hotsauce.config import FsType
from hotsauce.errors import CommandFailed, StageFailed
from hotsauce.host import proc
from hotsauce.image.esp import copy_into_esp
from hotsauce.image.layout import BootMode
from hotsauce.image.partitions import DiskDevices
from hotsauce.modules.chroot import build_chroot
from hotsauce.output.imageset import sha256_of
from hotsauce.rootpath import inside
from hotsauce.store.cache import Cache

SERIAL_CONSOLE = "console=tty0 console=ttyS0,115200n8"
# What clouds attach disks and NICs with: virtio (KVM, GCP, OpenStack), NVMe and ENA (Amazon Nitro),
# Xen (older Amazon), Hyper-V (Azure). In the initramfs, so the root is found on any of them.
CLOUD_DRIVERS = ("virtio_pci", "virtio_blk", "virtio_scsi", "virtio_net", "nvme", "ena", "xen_blkfront",
                 "xen_netfront", "hv_vmbus", "hv_storvsc", "hv_netvsc")
GRUB_EFI_MODULES = ("part_gpt", "part_msdos", "fat", "ext2", "xfs", "btrfs", "search", "search_fs_uuid",
                    "normal", "configfile", "linux", "echo", "test", "all_video", "gzio", "serial",
                    "terminal", "efi_gop", "reboot", "halt")
SIGNED_SHIM = "usr/lib/shim/shimx64.efi.signed"
SIGNED_MOKMANAGER = "usr/lib/shim/mmx64.efi.signed"
SIGNED_GRUB = "usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed"
GRUB_BIOS_MODULES = "usr/lib/grub/i386-pc"
GRUB_EFI_MODULES_DIR = "usr/lib/grub/x86_64-efi"
CHROOT_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C.UTF-8",
              "DEBIAN_FRONTEND": "noninteractive", "HOME": "/root"}

GRUB_DEFAULTS = f"""# written by hotsauce: a serial console beside tty0, for clouds' console logs
GRUB_TIMEOUT=1
GRUB_CMDLINE_LINUX_DEFAULT=""
GRUB_CMDLINE_LINUX="{SERIAL_CONSOLE}"
GRUB_TERMINAL="console serial"
GRUB_SERIAL_COMMAND="serial --speed=115200 --unit=0 --word=8 --parity=no --stop=1"
GRUB_DISABLE_OS_PROBER=true
"""

# The root partition and its filesystem grow into whatever volume the disk is given, at every boot
# (nothing to do when it already fills it).
GROWROOT_SCRIPT = """#!/bin/sh
# written by hotsauce: grow the root partition and filesystem to fill the disk
set -u
source=$(findmnt -n -o SOURCE /) || exit 0
partition=$(readlink -f "$source")
name=${partition##*/}
[ -r "/sys/class/block/$name/partition" ] || exit 0
number=$(cat "/sys/class/block/$name/partition")
disk=/dev/$(lsblk -n -d -o PKNAME "$partition")
growpart "$disk" "$number"
case $? in 0|1) ;; *) echo "growroot: growpart $disk $number failed" >&2 ;; esac
case $(findmnt -n -o FSTYPE /) in
    ext4) resize2fs "$partition" ;;
    xfs) xfs_growfs / ;;
    btrfs) btrfs filesystem resize max / ;;
esac
exit 0
"""
GROWROOT_UNIT = """# written by hotsauce
[Unit]
Description=Grow the root partition and filesystem to fill the disk
# growpart waits for udev to settle: early in the boot that can wait for ever.
After=local-fs.target systemd-udevd.service

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/hotsauce-growroot
RemainAfterExit=yes
TimeoutStartSec=5min

[Install]
WantedBy=multi-user.target
"""
GROWROOT_SCRIPT_PATH = "/usr/local/sbin/hotsauce-growroot"
GROWROOT_UNIT_NAME = "hotsauce-growroot.service"


@dataclass(frozen=True)
class BootFacts:
    """What a made-bootable disk is, for its manifest."""

    kernel_cmdline: str
    drivers: dict[str, bool]  # ena, nvme, ...: whether the image's kernel has each


@dataclass(frozen=True)
class Filesystems:
    root_uuid: str
    esp_uuid: str


def filesystem_uuid(device: Path) -> str:
    return proc.output_of(["blkid", "-s", "UUID", "-o", "value", device])


def kernel_cmdline(root_uuid: str) -> str:
    """What update-grub writes for the image's kernel, as the manifest records it."""
    return f"root=UUID={root_uuid} ro {SERIAL_CONSOLE}"


def write_fstab(root: Path, filesystems: Filesystems, fs_type: FsType) -> None:
    """The root and the ESP by UUID, never by device name: clouds name disks as they like."""
    fstab = inside(root, "/etc/fstab")
    fstab.parent.mkdir(parents=True, exist_ok=True)
    fstab.write_text(
        "# written by hotsauce\n"
        f"UUID={filesystems.root_uuid}\t/\t{fs_type.value}\tdefaults\t0\t1\n"
        f"UUID={filesystems.esp_uuid}\t/boot/efi\tvfat\tumask=0077,nofail\t0\t2\n"
    )
    inside(root, "/boot/efi").mkdir(parents=True, exist_ok=True)


def missing_tools(root: Path, boot: BootMode) -> list[str]:
    """What the image lacks to be made bootable as `boot` says, as package names."""
    return missing_packages(lambda relative: (root / relative).exists(), boot)


def missing_packages(holds: Callable[[str], bool], boot: BootMode) -> list[str]:
    """What a root lacks to be made bootable as `boot` says, as package names, asking `holds(path)`
    (a path relative to the root) of a mounted root or of a base archive's member list."""
    missing = []
    if not holds("usr/sbin/update-grub") and not holds("usr/sbin/grub-mkconfig"):
        missing.append("grub2-common")
    if boot.bios and not holds(GRUB_BIOS_MODULES):
        missing.append("grub-pc-bin")
    if boot.uefi and not holds(GRUB_EFI_MODULES_DIR) and not holds(SIGNED_GRUB):
        missing.append("grub-efi-amd64-bin")
    if not holds("usr/sbin/update-initramfs"):
        missing.append("initramfs-tools")
    if not holds("usr/bin/growpart"):
        missing.append("cloud-guest-utils")
    return missing


def make_bootable(root: Path, devices: DiskDevices, boot: BootMode, fs_type: FsType,
                  listings: Path | None = None) -> BootFacts:
    """Install GRUB as `boot` says, the cloud drivers into the initramfs, and root growing.
    `listings`, a cache folder, keeps what each initramfs seen holds (initramfs_lacks)."""
    if missing := missing_tools(root, boot):
        raise StageFailed("bootloader", f"the image lacks what a {boot.value} disk needs: "
                          f"install {', '.join(missing)} (a Debian base with layout: disk brings them)")
    filesystems = Filesystems(filesystem_uuid(devices.root), filesystem_uuid(devices.esp))
    write_fstab(root, filesystems, fs_type)
    _write_image_config(root)
    with build_chroot(root, sandboxed=False):
        if initramfs_lacks(root, listings):
            _in_image(root, ["update-initramfs", "-u", "-k", "all"])
        with _sysfs_udevadm(root) as udevadm_folder:
            if boot.bios:
                _in_image(root, ["grub-install", "--target=i386-pc", "--no-floppy", "--modules=part_gpt",
                                 str(devices.disk)], path_first=udevadm_folder)
            _update_grub(root, filesystems.root_uuid, udevadm_folder)
        if boot.uefi:
            work = Path(tempfile.mkdtemp(prefix="hotsauce-esp-", dir=inside(root, "/tmp")))
            try:
                copy_into_esp(devices.esp, _efi_files(root, work, filesystems.root_uuid))
            finally:
                shutil.rmtree(work)
    _remove_unused_grub_state(root)
    return BootFacts(kernel_cmdline(filesystems.root_uuid), drivers_present(root))


def initramfs_lacks(root: Path, listings: Path | None = None) -> list[str]:
    """The cloud drivers that are modules of the newest kernel but missing from its initramfs.

    Debian's MODULES=most brings most of them already; rebuilding the initramfs costs the build
    tens of seconds, so it is rebuilt only when one is missing.
    """
    kernel = _newest_kernel_modules(root)
    if kernel is None:
        return []
    initrd = f"/boot/initrd.img-{kernel.name}"
    if not inside(root, initrd).is_file():
        return list(CLOUD_DRIVERS)
    modules = {_module_name(line) for line in (kernel / "modules.dep").read_text(errors="replace").splitlines()}
    present = modules_in_initramfs(root, initrd, listings)
    return [driver for driver in CLOUD_DRIVERS if driver in modules and driver not in present]


def modules_in_initramfs(root: Path, initrd: str, listings: Path | None = None) -> set[str]:
    """The kernel modules the image's initramfs `initrd` holds, by name.

    lsinitramfs decompresses the whole archive to list it (0.19 s for the reference image's);
    with `listings`, a folder of the cache, the names are kept there under the archive's SHA-256
    (0.03 s to compute), so a build whose initramfs an earlier one listed does not list it again.
    """
    kept = listings / f"{sha256_of(inside(root, initrd))}.json" if listings else None
    if kept is not None and kept.is_file():
        return set(json.loads(kept.read_text()))
    listing = proc.output_of(["chroot", root, "lsinitramfs", initrd], env=CHROOT_ENV)
    present = {_module_name(line) for line in listing.splitlines() if ".ko" in line}
    if kept is not None:
        partial = Cache.temporary_name(kept)
        partial.write_text(json.dumps(sorted(present)))
        Cache.publish(partial, kept)
    return present


def _module_name(line: str) -> str:
    """`kernel/drivers/block/xen-blkfront.ko.xz: deps` -> `xen_blkfront`, as modprobe names it."""
    return line.split(":", 1)[0].rsplit("/", 1)[-1].split(".ko", 1)[0].replace("-", "_")


def _newest_kernel_modules(root: Path) -> Path | None:
    folders = sorted(path.parent for path in (root / "lib/modules").glob("*/modules.dep"))
    return folders[-1] if folders else None


def drivers_present(root: Path) -> dict[str, bool]:
    """Whether the image's newest kernel has the drivers Amazon's instances need (as a module or built in)."""
    folder = _newest_kernel_modules(root)
    if folder is None:
        return {"ena": False, "nvme": False}
    listed = (folder / "modules.dep").read_text(errors="replace")
    builtin = folder / "modules.builtin"
    if builtin.is_file():
        listed += builtin.read_text(errors="replace")
    return {driver: f"/{driver}.ko" in listed for driver in ("ena", "nvme")}


def _write_image_config(root: Path) -> None:
    defaults = inside(root, "/etc/default/grub.d/hotsauce.cfg")
    defaults.parent.mkdir(parents=True, exist_ok=True)
    defaults.write_text(GRUB_DEFAULTS)
    modules = inside(root, "/etc/initramfs-tools/modules")
    modules.parent.mkdir(parents=True, exist_ok=True)
    existing = modules.read_text() if modules.exists() else ""
    wanted = [driver for driver in CLOUD_DRIVERS if driver not in existing.split()]
    if wanted:
        modules.write_text(existing + "# cloud drivers, added by hotsauce\n" + "\n".join(wanted) + "\n")
    script = inside(root, GROWROOT_SCRIPT_PATH)
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text(GROWROOT_SCRIPT)
    script.chmod(0o755)
    unit = inside(root, f"/etc/systemd/system/{GROWROOT_UNIT_NAME}")
    unit.write_text(GROWROOT_UNIT)
    wants = inside(root, "/etc/systemd/system/multi-user.target.wants")
    wants.mkdir(parents=True, exist_ok=True)
    link = wants / GROWROOT_UNIT_NAME
    if not link.is_symlink():
        link.symlink_to(f"/etc/systemd/system/{GROWROOT_UNIT_NAME}")


def _update_grub(root: Path, root_uuid: str, udevadm_folder: str) -> None:
    """grub.cfg by the image's update-grub, with root=UUID=.

    update-grub names the root by UUID only when udev has made /dev/disk/by-uuid for it, which the
    build host's udev does not for a loop partition; for this one run it is told the UUID instead
    (in the booted image, udev has made the link).
    """
    override = inside(root, "/etc/default/grub.d/zz-hotsauce-build-root.cfg")
    override.write_text(f'GRUB_DEVICE="UUID={root_uuid}"\n')
    try:
        _in_image(root, ["update-grub"], path_first=udevadm_folder)
    finally:
        override.unlink()


# update-grub's grub-probe asks `udevadm info --query path --name DEVICE` for the partition's sysfs
# path about a hundred times (0.2-0.3 s of udevadm starts), grub-install a few times; this answers
# that one question from /sys, as udevadm does, and hands every other to the image's own udevadm.
SYSFS_UDEVADM = """#!/bin/sh
# written by hotsauce for GRUB's tools during the build; gone with the build's /run
if [ "$#" -eq 5 ] && [ "$1" = info ] && [ "$2" = --query ] && [ "$3" = path ] && [ "$4" = --name ] \\
        && cd -P "/sys/class/block/${5#/dev/}" 2>/dev/null; then
    case $PWD in /sys/devices/*) echo "${PWD#/sys}"; exit 0 ;; esac
fi
PATH=${PATH#*:} exec udevadm "$@"
"""
SYSFS_UDEVADM_FOLDER = "/run/hotsauce-sysfs-udevadm"


@contextmanager
def _sysfs_udevadm(root: Path) -> Iterator[str]:
    """SYSFS_UDEVADM in the build chroot's /run (a tmpfs of the build's); yields the folder to put
    first on PATH, as the image sees it."""
    folder = inside(root, SYSFS_UDEVADM_FOLDER)
    folder.mkdir()
    try:
        (folder / "udevadm").write_text(SYSFS_UDEVADM)
        (folder / "udevadm").chmod(0o755)
        yield SYSFS_UDEVADM_FOLDER
    finally:
        shutil.rmtree(folder)


def _in_image(root: Path, argv: list[str], path_first: str | None = None) -> None:
    env = CHROOT_ENV if path_first is None else {**CHROOT_ENV, "PATH": f"{path_first}:{CHROOT_ENV['PATH']}"}
    try:
        proc.run(["chroot", root, *argv], env=env)
    except CommandFailed as error:
        raise StageFailed("bootloader", f"{argv[0]} in the image failed: {error}") from None


def _efi_files(root: Path, work: Path, root_uuid: str) -> Mapping[str, Path]:
    """ESP path -> file: the signed shim and GRUB when the image has them, else a GRUB image made
    by the image's grub-mkimage. Both find the root by UUID and read its /boot/grub/grub.cfg."""
    stub = work / "grub.cfg"
    stub.write_text(f"search --no-floppy --fs-uuid --set=root {root_uuid}\n"
                    "set prefix=($root)/boot/grub\n"
                    "configfile $prefix/grub.cfg\n")
    if (root / SIGNED_SHIM).is_file() and (root / SIGNED_GRUB).is_file():
        files = {"EFI/BOOT/BOOTX64.EFI": root / SIGNED_SHIM, "EFI/BOOT/grubx64.efi": root / SIGNED_GRUB,
                 # Debian's signed GRUB reads its configuration beside itself or from EFI/debian.
                 "EFI/BOOT/grub.cfg": stub, "EFI/debian/grub.cfg": stub}
        if (root / SIGNED_MOKMANAGER).is_file():
            files["EFI/BOOT/mmx64.efi"] = root / SIGNED_MOKMANAGER
        return files
    image = work / "BOOTX64.EFI"
    _in_image(root, ["grub-mkimage", "--format=x86_64-efi", f"--output=/{image.relative_to(root)}",
                     f"--config=/{stub.relative_to(root)}", "--prefix=/boot/grub", *GRUB_EFI_MODULES])
    return {"EFI/BOOT/BOOTX64.EFI": image, "EFI/BOOT/grub.cfg": stub}


def _remove_unused_grub_state(root: Path) -> None:
    # grub-install leaves a device map naming the build host's loop device.
    inside(root, "/boot/grub/device.map").unlink(missing_ok=True)
