"""The whole-disk layout without root devices: the partition table, the settings and their bad input,
the manifest, and how a firmware boot arms the probe."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from hotsauce.boot.firmware import Firmware, FirmwareMachine, arm_probe, choose_firmware
from hotsauce.boot.qemu import Drive
from hotsauce.config import BuildOptions, config_from_mapping
from hotsauce.errors import CommandFailed, ConfigError
from hotsauce.image.bootloader import SYSFS_UDEVADM, modules_in_initramfs
from hotsauce.image.layout import BootMode, Layout
from hotsauce.image.partitions import (
    BIOS_BOOT_TYPE,
    ESP_TYPE,
    MINIMUM_DISK_SIZE,
    ROOT_START,
    read_gpt,
    write_gpt,
)
from hotsauce.image.whole_disk import DISK_PACKAGES, disk_size, plan_layout
from hotsauce.output.formats import DiskFormat, Qcow2Compression, parse_formats
from hotsauce.output.imageset import Manifest

GIB = 1 << 30


def options(**changes: object) -> BuildOptions:
    return BuildOptions(**{"size": 2 * GIB, "output": Path("out"), **changes})  # type: ignore[arg-type]


def config(**data: object) -> object:
    return config_from_mapping(dict(data), source=Path("/p/build.yaml"), directory=Path("/p"))


def test_gpt_has_bios_boot_and_esp_before_a_root_that_is_partition_1_and_last(tmp_path: Path) -> None:
    image = tmp_path / "disk.raw"
    with image.open("xb") as file:
        file.truncate(GIB)
    parts = write_gpt(image)
    table = json.loads(subprocess.run(["sfdisk", "--json", image], capture_output=True, check=True).stdout)
    types = {entry["node"].removeprefix(str(image)): entry["type"] for entry in table["partitiontable"]["partitions"]}
    assert types == {"1": "0FC63DAF-8483-4772-8E79-3D69D8477DE4", "14": BIOS_BOOT_TYPE, "15": ESP_TYPE}
    assert parts.bios_boot.offset < parts.esp.offset < parts.root.offset == ROOT_START
    # The root runs to the end (aligned to 1 MiB, before the backup GPT): nothing after it stops it growing.
    assert parts.root.offset + parts.root.size >= GIB - (2 << 20)
    assert read_gpt(image) == parts


def test_formats_are_read_in_order_once_each() -> None:
    assert parse_formats("vmdk,qcow2,vmdk,vhd", "--format") == (DiskFormat.VMDK, DiskFormat.QCOW2, DiskFormat.VHD)


@pytest.mark.parametrize("text", ["qcow3", "qcow2,,raw", "", "iso"])
def test_an_unknown_or_empty_format_is_one_line_naming_the_flag(text: str) -> None:
    with pytest.raises(ConfigError, match=r"^--format: ") as raised:
        parse_formats(text, "--format")
    assert "\n" not in str(raised.value)


def test_a_disk_defaults_to_hybrid_boot_and_one_qcow2_and_brings_grub_into_a_debian_base() -> None:
    cfg, _, settings = plan_layout(config(layout="disk"), options())  # type: ignore[arg-type]
    assert settings is not None
    assert settings.boot is BootMode.HYBRID and settings.boot.firmware == ("bios", "uefi")
    assert settings.formats == (DiskFormat.QCOW2,) and settings.compression is Qcow2Compression.NONE
    assert set(DISK_PACKAGES) <= set(cfg.base.include)  # type: ignore[union-attr]


def test_flags_win_over_build_yaml() -> None:
    _, _, settings = plan_layout(config(layout="ec2", boot="bios", format=["raw"]),  # type: ignore[arg-type]
                                 options(layout=Layout.DISK, boot=BootMode.UEFI,
                                         formats=(DiskFormat.VMDK, DiskFormat.VHD)))
    assert settings is not None
    assert settings.boot is BootMode.UEFI and settings.formats == (DiskFormat.VMDK, DiskFormat.VHD)


def test_an_ec2_image_format_comes_from_the_flag_then_build_yaml_then_the_library_caller() -> None:
    from hotsauce.config import ImageFormat

    raw = options(image_format=ImageFormat.RAW)
    assert plan_layout(config(), raw)[1].image_format is ImageFormat.RAW  # type: ignore[arg-type]
    assert plan_layout(config(format="qcow2"), raw)[1].image_format is ImageFormat.QCOW2  # type: ignore[arg-type]
    flagged = options(formats=(DiskFormat.RAW,))
    assert plan_layout(config(format="qcow2"), flagged)[1].image_format is ImageFormat.RAW  # type: ignore[arg-type]


def test_the_ec2_set_is_unchanged_by_default() -> None:
    cfg, opts, settings = plan_layout(config(), options())  # type: ignore[arg-type]
    assert settings is None and opts == options() and "grub-pc-bin" not in cfg.base.include  # type: ignore[union-attr]


@pytest.mark.parametrize(("data", "changes", "expected"), [
    ({"layout": "disk", "kernel": False}, {}, r"kernel: a whole disk"),
    ({"layout": "disk"}, {"size": MINIMUM_DISK_SIZE - 1}, r"^--size: .* too small for a whole disk"),
    ({"layout": "disk", "boot": "coreboot"}, {}, r"boot: expected one of bios, uefi, hybrid, got 'coreboot'"),
    ({"layout": "floppy"}, {}, r"layout: expected one of ec2, disk, got 'floppy'"),
    ({"layout": "disk", "base": {"debian": {"architecture": "arm64"}}}, {},
     r"architecture: expected amd64"),
    ({}, {"formats": (DiskFormat.VMDK,)}, r"^--format: the ec2 layout writes one root image"),
    ({"boot": "uefi"}, {}, r"boot: only a whole disk"),
    ({}, {"qcow2_compression": Qcow2Compression.ZSTD}, r"^--qcow2-compression: only for a whole disk"),
    ({"layout": "disk", "format": "qcow2,tar"}, {}, r"format: expected formats of qcow2, .*, got 'qcow2,tar'"),
    ({"layout": "disk", "format": ["qcow2", "tar"]}, {}, r"format\[1\]: expected one of qcow2, raw"),
    ({"layout": "disk", "qcow2_compression": "lz4"}, {}, r"qcow2_compression: expected one of none, zlib, zstd"),
])
def test_bad_disk_settings_are_one_line_before_anything_is_allocated(
        data: dict[str, object], changes: dict[str, object], expected: str) -> None:
    with pytest.raises(ConfigError, match=expected) as raised:
        plan_layout(config(**data), options(**changes))  # type: ignore[arg-type]
    assert "\n" not in str(raised.value)


def test_a_disk_is_a_whole_number_of_mib_as_a_fixed_vhd_must_be() -> None:
    assert disk_size(2 * GIB) == 2 * GIB
    assert disk_size(2 * GIB + 1) == 2 * GIB + (1 << 20)


def test_a_disk_manifest_reads_back_with_its_files_and_boot_modes(tmp_path: Path) -> None:
    manifest = Manifest(build_id="b", root="disk.qcow2", image_format="qcow2", fs_type="ext4", partitioned=True,
                        kernel=None, ramdisk=None, kernel_cmdline="root=UUID=x ro", os_distro="debian",
                        os_version="12", hotsauce_version="0", created="now", layout="disk",
                        boot_modes=("bios", "uefi"), architecture="x86_64", root_device="/dev/xvda",
                        root_found_by="UUID", drivers={"ena": True, "nvme": True},
                        disk_files=({"name": "disk.qcow2", "format": "qcow2", "virtual_size": 1},
                                    {"name": "disk.vmdk", "format": "vmdk", "virtual_size": 1}))
    manifest.write(tmp_path)
    data = json.loads((tmp_path / "manifest.json").read_text())
    assert data["layout"] == "disk" and data["boot_modes"] == ["bios", "uefi"]
    again = Manifest.read(tmp_path)
    assert again == manifest
    assert again.files() == ["disk.qcow2", "disk.vmdk", "libvirt.xml", "manifest.json"]


def test_an_ec2_manifest_written_before_disks_existed_still_reads(tmp_path: Path) -> None:
    old = {"build_id": "b", "root": "root.qcow2", "image_format": "qcow2", "fs_type": "ext4", "partitioned": False,
           "kernel": "vmlinuz", "ramdisk": "initrd.img", "kernel_cmdline": "root=LABEL=root", "os_distro": None,
           "os_version": None, "hotsauce_version": "0", "created": "now"}
    (tmp_path / "manifest.json").write_text(json.dumps(old))
    manifest = Manifest.read(tmp_path)
    assert manifest.layout == "ec2" and manifest.boot_modes == ()


def disk_manifest(modes: tuple[str, ...]) -> Manifest:
    return Manifest(build_id="b", root="disk.qcow2", image_format="qcow2", fs_type="ext4", partitioned=True,
                    kernel=None, ramdisk=None, kernel_cmdline="", os_distro=None, os_version=None,
                    hotsauce_version="0", created="now", layout="disk", boot_modes=modes)


def test_firmware_defaults_to_the_first_boot_mode_and_refuses_one_the_disk_lacks(tmp_path: Path) -> None:
    assert choose_firmware(disk_manifest(("bios", "uefi")), None, tmp_path) is Firmware.BIOS
    assert choose_firmware(disk_manifest(("bios", "uefi")), Firmware.UEFI, tmp_path) is Firmware.UEFI
    with pytest.raises(ConfigError, match="boots only with bios"):
        choose_firmware(disk_manifest(("bios",)), Firmware.UEFI, tmp_path)


def test_arming_the_probe_adds_its_arguments_to_every_linux_line_and_nothing_else(tmp_path: Path) -> None:
    (tmp_path / "boot/grub").mkdir(parents=True)
    (tmp_path / "boot/grub/grub.cfg").write_text(
        "menuentry 'x' {\n\tlinux\t/boot/vmlinuz root=UUID=u ro console=ttyS0 \n\tinitrd\t/boot/initrd.img\n}\n"
        "submenu 'y' {\n\t\tlinux /boot/vmlinuz-old root=UUID=u ro\n}\n")
    arm_probe(tmp_path, "panic=-1")
    lines = (tmp_path / "boot/grub/grub.cfg").read_text().splitlines()
    linux = [line for line in lines if line.strip().startswith("linux")]
    assert len(linux) == 2
    for line in linux:
        assert line.endswith("systemd.run_failure_action=poweroff") and " panic=-1 " in line
        # GRUB re-quotes what it passes on: the probe's arguments carry no quotes and no spaces in a value.
        assert '"' not in line and "'" not in line
    assert "\tinitrd\t/boot/initrd.img" in lines
    loader = tmp_path / "usr/local/lib/hotsauce-probe-loader"
    assert loader.stat().st_mode & 0o111 and "/dev/disk/by-id/virtio-hotsauce-probe" in loader.read_text()


def test_a_uefi_guest_is_a_q35_machine_with_ovmf_and_a_private_variable_store(tmp_path: Path) -> None:
    machine = FirmwareMachine(Firmware.UEFI, (Drive(tmp_path / "d.raw", "raw", snapshot=False),),
                              (tmp_path / "console.log",), uefi_vars=tmp_path / "vars.fd")
    argv = " ".join(machine.argv())
    assert "-machine q35" in argv and "if=pflash" in argv and "readonly=on" in argv
    assert f"file={tmp_path / 'vars.fd'}" in argv and "-kernel" not in argv
    bios = " ".join(FirmwareMachine(Firmware.BIOS, (), ()).argv())
    assert "pflash" not in bios and "q35" not in bios


def test_module_names_read_from_modules_dep_are_as_modprobe_names_them() -> None:
    from hotsauce.image.bootloader import _module_name

    assert _module_name("kernel/drivers/block/xen-blkfront.ko.xz: kernel/drivers/xen/x.ko") == "xen_blkfront"
    assert _module_name("/usr/lib/modules/6.1/kernel/drivers/net/ethernet/amazon/ena/ena.ko") == "ena"


@pytest.mark.integration
@pytest.mark.parametrize(("args", "yaml_text", "expected"), [
    (["--layout", "disk", "--format", "qcow2,qcow9"], "", "--format: unknown format 'qcow9'"),
    (["--layout", "disk", "--boot", "openfirmware"], "", "--boot: unknown boot mode 'openfirmware'"),
    (["--layout", "disk", "-s", "200M"], "", "--size: 200.0M is too small for a whole disk"),
    (["--layout", "disk"], "kernel: false\n", "kernel: a whole disk (layout: disk) boots the image's own kernel"),
    ([], "layout: disk\nboot: coreboot\n", "boot: expected one of bios, uefi, hybrid, got 'coreboot'"),
])
def test_bad_disk_input_through_the_cli_is_one_line_exit_2_and_no_output(
        tmp_path: Path, args: list[str], yaml_text: str, expected: str) -> None:
    from tests.images import run_hotsauce

    (tmp_path / "build.yaml").write_text(yaml_text + "modules: []\n")
    size = [] if "-s" in args else ["-s", "2G"]
    result = run_hotsauce("build", *size, "-o", tmp_path / "out", *args, cwd=tmp_path, timeout=120)
    assert result.returncode == 2, result.stderr
    reasons = [line for line in result.stderr.splitlines() if line.startswith("hotsauce: ")]
    assert len(reasons) == 1 and expected in reasons[0], result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "out").exists()
    assert "==> disk" not in result.stdout + result.stderr  # nothing was allocated


def test_an_initramfs_listed_before_is_read_from_the_kept_listing_not_listed_again(tmp_path: Path) -> None:
    root, listings = tmp_path / "root", tmp_path / "listings"
    (root / "boot").mkdir(parents=True)
    listings.mkdir()
    initrd = root / "boot/initrd.img-6.1.0-test"
    initrd.write_bytes(b"an initramfs")
    (listings / f"{hashlib.sha256(b'an initramfs').hexdigest()}.json").write_text('["virtio_blk", "nvme"]')
    # The root has no lsinitramfs: listing it again would fail.
    assert modules_in_initramfs(root, "/boot/initrd.img-6.1.0-test", listings) == {"virtio_blk", "nvme"}
    initrd.write_bytes(b"another initramfs")
    with pytest.raises(CommandFailed, match="lsinitramfs"):
        modules_in_initramfs(root, "/boot/initrd.img-6.1.0-test", listings)


def run_sysfs_udevadm(tmp_path: Path, *args: str, real_udevadm: str | None = None) -> str:
    """SYSFS_UDEVADM run on this host as update-grub runs it: its folder first on PATH, then a folder
    with `real_udevadm` (a script) standing for the image's own."""
    first, image_bin = tmp_path / "first", tmp_path / "image-bin"
    first.mkdir(exist_ok=True)
    image_bin.mkdir(exist_ok=True)
    (first / "udevadm").write_text(SYSFS_UDEVADM)
    (first / "udevadm").chmod(0o755)
    if real_udevadm is not None:
        (image_bin / "udevadm").write_text(real_udevadm)
        (image_bin / "udevadm").chmod(0o755)
    path = f"{first}:{image_bin}:/usr/bin:/bin"
    return subprocess.run(["udevadm", *args], env={"PATH": path}, capture_output=True, text=True,
                          check=True).stdout


@pytest.mark.skipif(not Path("/sys/class/block/loop0").exists(), reason="no /dev/loop0 on this host")
def test_the_sysfs_udevadm_answers_grub_probes_question_as_udevadm_does(tmp_path: Path) -> None:
    asked = run_sysfs_udevadm(tmp_path, "info", "--query", "path", "--name", "/dev/loop0",
                              real_udevadm="#!/bin/sh\nexit 1\n")  # never asked
    assert asked == "/devices/virtual/block/loop0\n"
    if shutil.which("udevadm"):
        assert asked == subprocess.run(["udevadm", "info", "--query", "path", "--name", "/dev/loop0"],
                                       capture_output=True, text=True, check=True).stdout


def test_the_sysfs_udevadm_hands_other_questions_to_the_images_udevadm(tmp_path: Path) -> None:
    real = '#!/bin/sh\necho "the image\'s udevadm: $*"\n'
    assert run_sysfs_udevadm(tmp_path, "--version", real_udevadm=real) == "the image's udevadm: --version\n"
    # A name that is no block device in /sys: the image's udevadm says what it says.
    assert run_sysfs_udevadm(tmp_path, "info", "--query", "path", "--name", "/dev/../../etc",
                             real_udevadm=real) == "the image's udevadm: info --query path --name /dev/../../etc\n"
