"""A whole-disk image (--layout disk): one hybrid bookworm build in all five formats, looked at from
outside (partitions, ESP, GRUB, fstab, initramfs, qemu-img, manifest) and booted through SeaBIOS
with a larger disk and through OVMF, with checks inside the guest.

The two TCG boots, each with several checks, run at once: each keeps about one core busy for a minute.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from hotsauce.image.bootloader import CLOUD_DRIVERS
from hotsauce.image.partitions import BIOS_BOOT_TYPE, ESP_TYPE, read_gpt
from tests.disk_boots import BootRun, boots_at_once
from tests.images import run_hotsauce

pytestmark = pytest.mark.integration

FORMATS = ("qcow2", "raw", "vmdk", "vhdx", "vhd")
# qemu-img's name for each format and the subformat it reports.
QEMU_NAMES = {"qcow2": ("qcow2", None), "raw": ("raw", None), "vmdk": ("vmdk", "streamOptimized"),
              "vhdx": ("vhdx", None), "vhd": ("vpc", None)}
DISK_SIZE = 2 << 30


@pytest.fixture(scope="module")
def disk_set(session_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    project = tmp_path_factory.mktemp("disk-project")
    (project / "build.yaml").write_text("add_users: [alice]\nmodules: [add_user]\n")
    output = project / "out"
    # The qcow2 compressed as diskimage-builder's is: the boots below boot it.
    result = run_hotsauce("build", "-s", "2G", "-o", output, "--layout", "disk", "--format", ",".join(FORMATS),
                          "--qcow2-compression", "zlib", cwd=project, timeout=1800)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return output


@pytest.fixture(scope="module")
def manifest(disk_set: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((disk_set / "manifest.json").read_text())
    return data


@contextmanager
def mounted_partition(image: Path, offset: int, size: int, mountpoint: Path) -> Iterator[Path]:
    device = subprocess.run(["losetup", "--find", "--show", "--read-only", "--offset", str(offset),
                             "--sizelimit", str(size), image], capture_output=True, text=True,
                            check=True).stdout.strip()
    try:
        mountpoint.mkdir(exist_ok=True)
        subprocess.run(["mount", "-o", "ro", device, mountpoint], check=True)
        try:
            yield mountpoint
        finally:
            subprocess.run(["umount", mountpoint], check=True)
    finally:
        subprocess.run(["losetup", "--detach", device], check=True)


@pytest.fixture(scope="module")
def root_facts(disk_set: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """What the root partition holds that the tests look at, read once with it mounted read-only."""
    raw = disk_set / "disk.raw"
    root = read_gpt(raw).root
    with mounted_partition(raw, root.offset, root.size, tmp_path_factory.mktemp("root") / "m") as mounted:
        initrd = sorted((mounted / "boot").glob("initrd.img-*"))[-1]
        # The image's own lsinitramfs (the host need not have initramfs-tools).
        listing = subprocess.run(["chroot", mounted, "lsinitramfs", f"/boot/{initrd.name}"], capture_output=True,
                                 text=True, check=True).stdout
        builtin = next((mounted / "lib/modules").glob("*/modules.builtin")).read_text()
        return {
            "grub.cfg": (mounted / "boot/grub/grub.cfg").read_text(),
            "fstab": (mounted / "etc/fstab").read_text(),
            "initramfs": listing,
            "initramfs_sha256": hashlib.sha256(initrd.read_bytes()).hexdigest(),
            "builtin": builtin,
            "uuid": subprocess.run(["blkid", "-s", "UUID", "-o", "value", raw, "-p", "-O", str(root.offset)],
                                   capture_output=True, text=True).stdout.strip(),
        }


def test_the_disk_is_gpt_with_bios_boot_esp_and_the_root_last(disk_set: Path) -> None:
    table = json.loads(subprocess.run(["sfdisk", "--json", disk_set / "disk.raw"], capture_output=True,
                                      check=True).stdout)["partitiontable"]
    assert table["label"] == "gpt"
    types = sorted(entry["type"] for entry in table["partitions"])
    assert BIOS_BOOT_TYPE in types and ESP_TYPE in types and len(types) == 3
    root = read_gpt(disk_set / "disk.raw").root
    assert all(entry["start"] * 512 <= root.offset for entry in table["partitions"])


def test_the_esp_is_fat_and_holds_the_signed_shim_and_grub_on_the_removable_path(disk_set: Path) -> None:
    esp = read_gpt(disk_set / "disk.raw").esp
    image = f"{disk_set / 'disk.raw'}@@{esp.offset}"
    listing = subprocess.run(["mdir", "-/", "-b", "-i", image, "::/"], capture_output=True, text=True,
                             env={**os.environ, "MTOOLS_SKIP_CHECK": "1"}, check=True).stdout
    files = {line.strip().removeprefix("::/") for line in listing.splitlines()}
    assert {"EFI/BOOT/BOOTX64.EFI", "EFI/BOOT/grubx64.efi", "EFI/BOOT/grub.cfg"} <= files
    stub = subprocess.run(["mtype", "-i", image, "::/EFI/BOOT/grub.cfg"], capture_output=True, text=True,
                          env={**os.environ, "MTOOLS_SKIP_CHECK": "1"}, check=True).stdout
    assert "--fs-uuid" in stub and "/boot/grub" in stub


def test_grub_for_bios_is_in_the_mbr_and_the_bios_boot_partition(disk_set: Path) -> None:
    with (disk_set / "disk.raw").open("rb") as disk:
        mbr = disk.read(512)
        bios = read_gpt(disk_set / "disk.raw").bios_boot
        disk.seek(bios.offset)
        core = disk.read(bios.size)
    assert b"GRUB" in mbr and mbr[510:] == b"\x55\xaa"
    assert core.count(0) < len(core) - 20000  # core.img: tens of KiB of GRUB


def test_root_is_found_by_uuid_with_a_serial_console_beside_tty0(root_facts: dict[str, str]) -> None:
    uuid = root_facts["uuid"]
    assert uuid
    linux = [line for line in root_facts["grub.cfg"].splitlines() if line.strip().startswith("linux")]
    assert linux and all(f"root=UUID={uuid}" in line and "console=tty0 console=ttyS0" in line for line in linux)
    assert "/dev/loop" not in root_facts["grub.cfg"]
    assert "terminal_output console serial" in root_facts["grub.cfg"]
    assert f"UUID={uuid}\t/\t" in root_facts["fstab"] and "/dev/" not in root_facts["fstab"]


def test_the_initramfs_carries_the_drivers_clouds_attach_disks_and_nics_with(root_facts: dict[str, str]) -> None:
    modules = {Path(line).name.split(".ko")[0] for line in root_facts["initramfs"].splitlines() if ".ko" in line}
    # Built into the kernel is as good as in the initramfs (Debian's cloud kernel builds nvme in).
    modules |= {Path(line).name.split(".ko")[0] for line in root_facts["builtin"].splitlines()}
    wanted = {"virtio_blk", "virtio_scsi", "virtio_net", "nvme", "ena", "xen-blkfront", "hv_storvsc", "hv_netvsc"}
    assert wanted <= modules, sorted(wanted - modules)
    assert "ena" not in {Path(line).name.split(".ko")[0] for line in root_facts["builtin"].splitlines()}
    assert {"virtio_blk", "ena"} <= set(CLOUD_DRIVERS)


def test_the_build_kept_what_its_initramfs_holds_for_the_next_build(root_facts: dict[str, str],
                                                                     session_cache: Path) -> None:
    kept = session_cache / "initramfs-listings" / f"{root_facts['initramfs_sha256']}.json"
    listed = {Path(line).name.split(".ko")[0].replace("-", "_")
              for line in root_facts["initramfs"].splitlines() if ".ko" in line}
    assert set(json.loads(kept.read_text())) == listed and "virtio_blk" in listed


@pytest.mark.parametrize("disk_format", FORMATS)
def test_each_format_passes_qemu_img_check_and_info_names_its_format(
        disk_set: Path, manifest: dict[str, Any], disk_format: str) -> None:
    path = disk_set / f"disk.{disk_format}"
    qemu_name, subformat = QEMU_NAMES[disk_format]
    if disk_format in ("qcow2", "vmdk", "vhdx"):
        check = subprocess.run(["qemu-img", "check", "-f", qemu_name, path], capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", "-f", qemu_name, path],
                                     capture_output=True, check=True).stdout)
    assert info["format"] == qemu_name and info["virtual-size"] == DISK_SIZE
    if subformat:
        assert info["format-specific"]["data"]["create-type"] == subformat
    if disk_format == "vhd":  # fixed: the data, then a 512-byte footer; whole MiB
        assert path.stat().st_size == DISK_SIZE + 512 and DISK_SIZE % (1 << 20) == 0
    entry = next(e for e in manifest["disk_files"] if e["name"] == path.name)
    assert entry["format"] == disk_format and entry["virtual_size"] == DISK_SIZE
    if disk_format == "qcow2":  # compressed by hotsauce's own writer, as diskimage-builder compresses by default
        assert entry["compression"] == info["format-specific"]["data"]["compression-type"] == "zlib"
    assert (disk_set / f"{path.name}.sha256").read_text().split()[1] == path.name


def test_the_manifest_says_what_a_cloud_needs_to_register_the_disk(manifest: dict[str, Any]) -> None:
    assert manifest["layout"] == "disk" and manifest["boot_modes"] == ["bios", "uefi"]
    assert manifest["architecture"] == "x86_64" and manifest["root_device"] == "/dev/xvda"
    assert manifest["root_found_by"] == "UUID" and manifest["kernel_cmdline"].startswith("root=UUID=")
    assert manifest["drivers"] == {"ena": True, "nvme": True}
    assert [e["format"] for e in manifest["disk_files"]] == list(FORMATS)
    assert manifest["kernel"] is None and manifest["root"] == "disk.qcow2"


@pytest.fixture(scope="module")
def firmware_boots(disk_set: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, BootRun]:
    """The disk booted through SeaBIOS on a larger volume and through OVMF, at once."""
    return boots_at_once(disk_set, tmp_path_factory.mktemp("disk-boots"), {
        "seabios": ("--firmware", "bios", "--disk-size", "3G",
                    "--check", "test ! -d /sys/firmware/efi",
                    "--check", "systemctl is-active hotsauce-growroot.service",
                    "--check", "df -B1 --output=size / | tail -1",
                    "--check", "id alice"),
        "ovmf": ("--firmware", "uefi",
                 "--check", "test -d /sys/firmware/efi",
                 "--check", "df -B1 --output=size / | tail -1"),
    })


@pytest.mark.boot
def test_seabios_boots_the_disk_and_a_larger_volume_grows_the_root(firmware_boots: dict[str, BootRun]) -> None:
    verdict = firmware_boots["seabios"].booted()
    statuses = [check["status"] for check in verdict["checks"]]
    assert statuses == [0, 0, 0, 0], verdict["checks"]
    root_bytes = int(verdict["checks"][2]["output"].strip())
    assert root_bytes > 2.6 * (1 << 30), f"/ has {root_bytes} bytes on a 3 GiB disk: not grown"


@pytest.mark.boot
def test_ovmf_boots_the_disk_through_the_removable_path(firmware_boots: dict[str, BootRun]) -> None:
    verdict = firmware_boots["ovmf"].booted()
    assert [check["status"] for check in verdict["checks"]] == [0, 0], verdict["checks"]
    assert int(verdict["checks"][1]["output"].strip()) < 2 * (1 << 30)
