"""`hotsauce upload` of a whole-disk set: one bare image of the chosen file, with the properties that
tell OpenStack how to boot it, against the real Glance of the suite."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

from hotsauce.cloud.upload import upload_image_set
from hotsauce.errors import ConfigError
from hotsauce.image.partitions import write_gpt
from hotsauce.output.formats import DiskFormat, convert_disk
from hotsauce.output.imageset import Manifest, write_checksum
from tests.glance_images import downloaded, stored, unique_name

DISK_BYTES = 400 << 20


def disk_set(folder: Path, boot_modes: tuple[str, ...]) -> Path:
    """A hand-made whole-disk set: a real GPT disk (empty partitions) as qcow2 and vmdk."""
    folder.mkdir(parents=True)
    raw = folder.parent / f"{folder.name}.raw"
    with raw.open("xb") as file:
        file.truncate(DISK_BYTES)
    write_gpt(raw)
    files = convert_disk(raw, folder, (DiskFormat.QCOW2, DiskFormat.VMDK))
    raw.unlink()
    (folder / "libvirt.xml").write_text("<domain type='kvm'><!-- placeholder --></domain>\n")
    manifest = Manifest(build_id="20261127T000000Z-abcdef", root=files[0].name, image_format="qcow2",
                        fs_type="ext4", partitioned=True, kernel=None, ramdisk=None,
                        kernel_cmdline="root=UUID=x ro", os_distro="debian", os_version="12",
                        hotsauce_version="0", created="2026-11-27T00:00:00Z", layout="disk",
                        boot_modes=boot_modes, architecture="x86_64", root_device="/dev/xvda",
                        root_found_by="UUID", drivers={"ena": True, "nvme": True},
                        disk_files=tuple(asdict(file) for file in files))
    manifest.write(folder)
    for name in manifest.files():
        write_checksum(folder / name)
    return folder


@pytest.fixture(scope="module")
def hybrid_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return disk_set(tmp_path_factory.mktemp("disk-upload") / "hybrid", ("bios", "uefi"))


@pytest.mark.integration
@pytest.mark.glance
def test_a_whole_disk_goes_up_as_one_bare_image_with_how_to_boot_it(
        cloud: str, glance_api: Any, hybrid_set: Path) -> None:
    result = upload_image_set(hybrid_set, name=unique_name(), cloud=cloud, firmware="uefi")
    assert result.kernel_id is None and result.ramdisk_id is None
    image = stored(glance_api, result.image_id)
    assert (image["disk_format"], image["container_format"], image["status"]) == ("qcow2", "bare", "active")
    assert (image["hw_firmware_type"], image["hw_machine_type"]) == ("uefi", "q35")
    assert (image["os_type"], image["architecture"]) == ("linux", "x86_64")
    assert (image["os_distro"], image["os_version"]) == ("debian", "12")
    assert downloaded(glance_api, result.image_id) == (hybrid_set / "disk.qcow2").read_bytes()


@pytest.mark.integration
@pytest.mark.glance
def test_the_vmdk_of_a_hybrid_disk_goes_up_for_bios_by_default(
        cloud: str, glance_api: Any, hybrid_set: Path) -> None:
    result = upload_image_set(hybrid_set, name=unique_name(), cloud=cloud, disk_format="vmdk")
    image = stored(glance_api, result.image_id)
    assert (image["disk_format"], image["container_format"]) == ("vmdk", "bare")
    assert (image["hw_firmware_type"], image["hw_machine_type"]) == ("bios", "pc")
    assert downloaded(glance_api, result.image_id) == (hybrid_set / "disk.vmdk").read_bytes()


def test_a_format_or_firmware_the_disk_lacks_is_refused_before_connecting(tmp_path: Path) -> None:
    folder = disk_set(tmp_path / "uefi-only", ("uefi",))
    with pytest.raises(ConfigError, match=r"--disk-format vhd: the set has no vhd file \(it has qcow2, vmdk\)"):
        upload_image_set(folder, name="x", cloud="nowhere", disk_format="vhd")
    with pytest.raises(ConfigError, match=r"--firmware bios: .* boots only with uefi"):
        upload_image_set(folder, name="x", cloud="nowhere", firmware="bios")


def test_a_uefi_only_disk_defaults_to_uefi_on_q35() -> None:
    from hotsauce.cloud.upload import disk_properties

    manifest = Manifest(build_id="b", root="disk.qcow2", image_format="qcow2", fs_type="ext4", partitioned=True,
                        kernel=None, ramdisk=None, kernel_cmdline="", os_distro=None, os_version=None,
                        hotsauce_version="0", created="now", layout="disk", boot_modes=("uefi",),
                        architecture="x86_64")
    assert disk_properties(manifest, None, Path("set")) == {
        "hw_firmware_type": "uefi", "hw_machine_type": "q35", "os_type": "linux", "architecture": "x86_64"}
