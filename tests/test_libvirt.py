"""libvirt.xml as libvirt itself sees it: its schema (virt-xml-validate) and a real libvirtd.

The quick tests write the domain of hand-made sets and check it against
libvirt's schema. The integration tests build a folder set and a tar.gz set,
unpack the second with `hotsauce unpack`, define both side by side in a
private libvirtd (tests/libvirt_daemon.py), and boot the folder set through
virsh as it comes: one boot, read on its serial console.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
import termios
import time
import tty
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from hotsauce.boot.qemu import Accel
from hotsauce.errors import ChecksumMismatch, ConfigError
from hotsauce.output.imageset import (
    DISK_LAYOUT,
    KERNEL_NAME,
    LIBVIRT_NAME,
    RAMDISK_NAME,
    Manifest,
    sha256_of,
    verify_set,
    write_checksum,
)
from hotsauce.output.libvirt import domain_name, domain_xml, write_libvirt_xml
from hotsauce.output.publish import publish
from hotsauce.output.unpack import place_moved_set, unpack_set
from tests.images import run_hotsauce
from tests.libvirt_daemon import Libvirt, private_libvirtd

BOOT_TIMEOUT = 480  # generous: other work may share the machine's two cores
# What the guest prints on its serial console once it is up: systemd's getty there.
LOGIN_PROMPT = b"login:"


def validate(xml_file: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["virt-xml-validate", str(xml_file), "domain"], capture_output=True, text=True,
                          check=False)


def sample_manifest(**changes: object) -> Manifest:
    manifest = Manifest(
        build_id="20261127T080000Z-0a1b2c", root="root.qcow2", image_format="qcow2", fs_type="ext4",
        partitioned=False, kernel=KERNEL_NAME, ramdisk=RAMDISK_NAME,
        kernel_cmdline="root=LABEL=root ro console=ttyS0,115200n8", os_distro="debian", os_version="12",
        hotsauce_version="0.0", created="2026-11-27T08:00:00Z", hostname="web1",
    )  # fmt: skip
    return replace(manifest, **changes)  # type: ignore[arg-type]


def make_fake_set(folder: Path, manifest: Manifest) -> Path:
    """A set whose files are placeholders: enough for libvirt's schema and the checksums."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in (manifest.root, manifest.kernel, manifest.ramdisk):
        if name:
            (folder / name).write_bytes(f"placeholder {name}\n".encode())
    manifest.write(folder)
    write_libvirt_xml(folder, manifest)
    for name in manifest.files():
        write_checksum(folder / name)
    return folder


def pack(folder: Path, archive: Path) -> Path:
    with tarfile.open(archive, "w:gz", compresslevel=1) as tar:
        for path in sorted(folder.iterdir()):
            tar.add(path, arcname=path.name)
    return archive


def parsed(xml_file: Path) -> ET.Element:
    return ET.parse(xml_file).getroot()


# ---- the domain, without libvirtd ---------------------------------------------------------------


def test_an_ec2_set_boots_its_kernel_directly_with_absolute_paths_libvirt_accepts(tmp_path: Path) -> None:
    manifest = sample_manifest()
    xml_file = tmp_path / "domain.xml"
    xml_file.write_text(domain_xml(manifest, tmp_path / "set", accel=Accel.TCG))
    assert validate(xml_file).returncode == 0, validate(xml_file).stderr
    domain = parsed(xml_file)
    assert domain.get("type") == "qemu"
    assert domain.findtext("os/kernel") == str(tmp_path / "set" / KERNEL_NAME)
    assert domain.findtext("os/initrd") == str(tmp_path / "set" / RAMDISK_NAME)
    assert domain.findtext("os/cmdline") == manifest.kernel_cmdline
    assert domain.find("os").get("firmware") is None  # type: ignore[union-attr]
    assert domain.find("devices/disk/source").get("file") == str(tmp_path / "set" / "root.qcow2")  # type: ignore[union-attr]
    assert domain.find("devices/disk/driver").get("type") == "qcow2"  # type: ignore[union-attr]


def test_kvm_makes_a_kvm_domain() -> None:
    assert ET.fromstring(domain_xml(sample_manifest(), Path("/sets/a"), accel=Accel.KVM)).get("type") == "kvm"


def test_relative_names_are_what_libvirt_refuses(tmp_path: Path) -> None:
    """The copy inside a tar.gz: the reason `hotsauce unpack` exists."""
    xml_file = tmp_path / "domain.xml"
    xml_file.write_text(domain_xml(sample_manifest(), None, accel=Accel.TCG))
    assert validate(xml_file).returncode != 0
    assert parsed(xml_file).findtext("os/kernel") == KERNEL_NAME


@pytest.mark.parametrize("boot_modes", [("uefi",), ("bios", "uefi")])
def test_a_disk_set_that_can_boot_uefi_boots_through_efi_firmware_without_a_kernel(
    tmp_path: Path, boot_modes: tuple[str, ...]
) -> None:
    manifest = sample_manifest(layout=DISK_LAYOUT, boot_modes=boot_modes, partitioned=True)
    xml_file = tmp_path / "domain.xml"
    xml_file.write_text(domain_xml(manifest, tmp_path, accel=Accel.TCG))
    assert validate(xml_file).returncode == 0, validate(xml_file).stderr
    os_element = parsed(xml_file).find("os")
    assert os_element is not None and os_element.get("firmware") == "efi"
    assert [child.tag for child in os_element if child.tag in ("kernel", "initrd", "cmdline")] == []
    assert os_element.find("boot").get("dev") == "hd"  # type: ignore[union-attr]


def test_a_bios_only_disk_set_boots_through_bios_without_a_kernel(tmp_path: Path) -> None:
    manifest = sample_manifest(layout=DISK_LAYOUT, boot_modes=("bios",), kernel=None, ramdisk=None)
    xml_file = tmp_path / "domain.xml"
    xml_file.write_text(domain_xml(manifest, tmp_path, accel=Accel.TCG))
    assert validate(xml_file).returncode == 0, validate(xml_file).stderr
    os_element = parsed(xml_file).find("os")
    assert os_element is not None and os_element.get("firmware") is None
    assert [child.tag for child in os_element] == ["type", "boot"]


def test_the_disk_layout_is_read_from_a_manifest_file_that_names_it(tmp_path: Path) -> None:
    """What the whole-disk layout's manifest.json carries is all the domain needs."""
    make_fake_set(tmp_path, sample_manifest())
    data = (tmp_path / "manifest.json").read_text()
    (tmp_path / "manifest.json").write_text(
        data.replace('"layout": "ec2"', '"layout": "disk"').replace('"boot_modes": []', '"boot_modes": ["uefi"]')
    )
    manifest = Manifest.read(tmp_path)
    assert (manifest.layout, manifest.boot_modes) == ("disk", ("uefi",))
    assert 'firmware="efi"' in domain_xml(manifest, tmp_path, accel=Accel.TCG)


def test_a_manifest_without_layout_fields_is_an_ec2_set(tmp_path: Path) -> None:
    make_fake_set(tmp_path, sample_manifest())
    path = tmp_path / "manifest.json"
    lines = [line for line in path.read_text().splitlines() if '"layout"' not in line and '"boot_modes"' not in line
             and '"hostname"' not in line]
    path.write_text("\n".join(lines) + "\n")
    manifest = Manifest.read(tmp_path)
    assert (manifest.layout, manifest.boot_modes, manifest.hostname) == ("ec2", (), None)
    assert domain_name(manifest) == f"hotsauce-{manifest.build_id}"
    assert "<kernel>" in domain_xml(manifest, tmp_path, accel=Accel.TCG)


def test_an_unknown_layout_or_boot_mode_is_a_one_line_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="layout 'floppy'"):
        domain_xml(sample_manifest(layout="floppy"), tmp_path, accel=Accel.TCG)
    with pytest.raises(ConfigError, match="boot_modes \\['coreboot'\\]"):
        domain_xml(sample_manifest(layout=DISK_LAYOUT, boot_modes=("coreboot",)), tmp_path, accel=Accel.TCG)


def test_the_domain_is_named_after_the_hostname_and_the_build() -> None:
    first, second = sample_manifest(), sample_manifest(build_id="20261127T080001Z-ffffff")
    assert domain_name(first) == "web1-20261127T080000Z-0a1b2c"
    assert domain_name(first) != domain_name(second)


def test_a_named_network_replaces_user_mode_networking() -> None:
    default = ET.fromstring(domain_xml(sample_manifest(), Path("/s"), accel=Accel.TCG))
    assert default.find("devices/interface").get("type") == "user"  # type: ignore[union-attr]
    named = ET.fromstring(domain_xml(sample_manifest(), Path("/s"), accel=Accel.TCG, network="default"))
    assert named.find("devices/interface").get("type") == "network"  # type: ignore[union-attr]
    assert named.find("devices/interface/source").get("network") == "default"  # type: ignore[union-attr]


# ---- hotsauce unpack, on hand-made sets -------------------------------------------------------------


def test_a_published_folder_set_names_its_files_where_they_were_published(tmp_path: Path) -> None:
    # No kernel: nothing for the KVM probe to boot, so no QEMU in the quick subset.
    staging = make_fake_set(tmp_path / ".out.partial", sample_manifest(kernel=None, ramdisk=None))
    publish(staging, tmp_path / "out", compress=False, force=False)
    xml_file = tmp_path / "out" / LIBVIRT_NAME
    assert parsed(xml_file).find("devices/disk/source").get("file") == str(tmp_path / "out" / "root.qcow2")  # type: ignore[union-attr]
    assert validate(xml_file).returncode == 0, validate(xml_file).stderr
    verify_set(tmp_path / "out")


def test_unpack_verifies_the_set_and_writes_libvirt_xml_for_where_the_files_are(tmp_path: Path) -> None:
    archive = pack(make_fake_set(tmp_path / "made", sample_manifest()), tmp_path / "set.tar.gz")
    target = tmp_path / "unpacked"
    unpack_set(archive, target, accel=Accel.TCG)
    assert validate(target / LIBVIRT_NAME).returncode == 0, validate(target / LIBVIRT_NAME).stderr
    assert parsed(target / LIBVIRT_NAME).findtext("os/kernel") == str(target / KERNEL_NAME)
    verify_set(target)  # libvirt.xml's checksum was rewritten with it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["made", "set.tar.gz", "unpacked"]


def test_unpack_refuses_a_set_with_a_bad_checksum_and_leaves_nothing(tmp_path: Path) -> None:
    folder = make_fake_set(tmp_path / "made", sample_manifest())
    (folder / KERNEL_NAME).write_bytes(b"tampered\n")
    archive = pack(folder, tmp_path / "set.tar.gz")
    with pytest.raises(ChecksumMismatch, match=KERNEL_NAME):
        unpack_set(archive, tmp_path / "unpacked", accel=Accel.TCG)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["made", "set.tar.gz"]


def test_unpack_refuses_an_existing_folder(tmp_path: Path) -> None:
    archive = pack(make_fake_set(tmp_path / "made", sample_manifest()), tmp_path / "set.tar.gz")
    (tmp_path / "there").mkdir()
    with pytest.raises(ConfigError, match="already exists"):
        unpack_set(archive, tmp_path / "there", accel=Accel.TCG)


def test_in_place_points_a_moved_set_at_where_it_is_now(tmp_path: Path) -> None:
    folder = make_fake_set(tmp_path / "first", sample_manifest())
    place_moved_set(folder, accel=Accel.TCG)
    moved = tmp_path / "moved"
    shutil.copytree(folder, moved)
    place_moved_set(moved, accel=Accel.TCG)
    assert parsed(moved / LIBVIRT_NAME).findtext("os/kernel") == str(moved / KERNEL_NAME)
    assert validate(moved / LIBVIRT_NAME).returncode == 0
    verify_set(moved)


def test_in_place_refuses_a_set_whose_files_do_not_match_their_checksums(tmp_path: Path) -> None:
    folder = make_fake_set(tmp_path / "set", sample_manifest())
    (folder / "root.qcow2").write_bytes(b"tampered\n")
    before = sha256_of(folder / LIBVIRT_NAME)
    with pytest.raises(ChecksumMismatch, match=r"root\.qcow2"):
        place_moved_set(folder, accel=Accel.TCG)
    assert sha256_of(folder / LIBVIRT_NAME) == before


def test_the_unpack_command_prints_where_libvirt_xml_is_and_fails_in_one_line(tmp_path: Path) -> None:
    archive = pack(make_fake_set(tmp_path / "made", sample_manifest()), tmp_path / "set.tar.gz")
    done = run_hotsauce("unpack", "--accel", "tcg", archive, "out", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(tmp_path / "out" / LIBVIRT_NAME)
    again = run_hotsauce("unpack", "--accel", "tcg", archive, "out", cwd=tmp_path)
    assert again.returncode == 2 and again.stderr.count("\n") == 1 and "already exists" in again.stderr
    in_place = run_hotsauce("unpack", "--in-place", "--accel", "tcg", "out", cwd=tmp_path)
    assert in_place.returncode == 0, in_place.stderr


# ---- built sets under a real libvirtd -------------------------------------------------------------

BUILD_YAML = """\
base:
  debian: {}
hostname: sauce
modules:
  - build_info
"""


@pytest.fixture(scope="module")
def project(debian_rootfs_tarball: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("libvirt-project")
    (folder / "build.yaml").write_text(BUILD_YAML)
    return folder


@pytest.fixture(scope="module")
def folder_set(project: Path) -> Path:
    built = run_hotsauce("build", "-s", "2G", "-o", "folder-set", cwd=project)
    assert built.returncode == 0, built.stderr[-3000:]
    return project / "folder-set"


@pytest.fixture(scope="module")
def unpacked_set(project: Path) -> Path:
    """A tar.gz build, unpacked by `hotsauce unpack`. Its disk is larger than the folder set's: a build
    is named by its inputs, and two builds of the same inputs would be one libvirt domain."""
    built = run_hotsauce("build", "-s", "3G", "-o", "packed.tar.gz", "-x", cwd=project)
    assert built.returncode == 0, built.stderr[-3000:]
    unpacked = run_hotsauce("unpack", "packed.tar.gz", "unpacked-set", cwd=project)
    assert unpacked.returncode == 0, unpacked.stderr[-3000:]
    return project / "unpacked-set"


@pytest.fixture(scope="module")
def libvirt(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Libvirt]:
    for tool in ("libvirtd", "virsh", "unshare"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (scripts/install-deps.sh installs libvirt)")
    with private_libvirtd(tmp_path_factory.mktemp("libvirt")) as instance:
        yield instance


@pytest.mark.integration
def test_the_libvirt_xml_of_a_folder_set_validates_and_names_its_files_where_they_are(folder_set: Path) -> None:
    xml_file = folder_set / LIBVIRT_NAME
    assert validate(xml_file).returncode == 0, validate(xml_file).stderr
    domain = parsed(xml_file)
    assert domain.findtext("os/kernel") == str(folder_set / KERNEL_NAME)
    assert domain.find("devices/disk/source").get("file") == str(folder_set / "root.qcow2")  # type: ignore[union-attr]
    manifest = Manifest.read(folder_set)
    assert domain.findtext("name") == domain_name(manifest) == f"sauce-{manifest.build_id}"  # build.yaml's hostname
    verify_set(folder_set)


@pytest.mark.integration
def test_the_libvirt_xml_of_an_unpacked_tar_gz_set_validates_and_names_its_files_where_they_are(
    unpacked_set: Path,
) -> None:
    xml_file = unpacked_set / LIBVIRT_NAME
    assert validate(xml_file).returncode == 0, validate(xml_file).stderr
    assert parsed(xml_file).findtext("os/initrd") == str(unpacked_set / RAMDISK_NAME)
    verify_set(unpacked_set)


@pytest.mark.integration
def test_two_sets_are_defined_side_by_side_and_undefined_without_a_trace(
    libvirt: Libvirt, folder_set: Path, unpacked_set: Path
) -> None:
    names = [domain_name(Manifest.read(folder)) for folder in (folder_set, unpacked_set)]
    try:
        for folder in (folder_set, unpacked_set):
            libvirt.virsh("define", folder / LIBVIRT_NAME)
        assert sorted(libvirt.domains()) == sorted(names)
    finally:
        for name in names:
            libvirt.remove_domain(name)
    assert libvirt.domains() == []


@pytest.mark.integration
@pytest.mark.boot
def test_a_folder_set_boots_under_libvirtd_through_virsh_as_it_comes(
    libvirt: Libvirt, folder_set: Path, tmp_path: Path
) -> None:
    name = domain_name(Manifest.read(folder_set))
    console_log = tmp_path / "console.log"
    try:
        libvirt.virsh("define", folder_set / LIBVIRT_NAME)
        libvirt.virsh("start", name)
        console = read_console_until(Path(libvirt.virsh("ttyconsole", name).strip()), LOGIN_PROMPT, console_log)
        assert LOGIN_PROMPT in console, f"no login prompt within {BOOT_TIMEOUT} s; console: {console_log}"
        assert b"Reached target" in console and b"Linux version" in console
    finally:
        libvirt.remove_domain(name)
    assert libvirt.domains() == [] and libvirt.networks() == [] and libvirt.volumes() == []


def read_console_until(pty: Path, wanted: bytes, log: Path) -> bytes:
    """What the guest writes on its serial port (a pty), until `wanted` or the timeout."""
    fd = os.open(pty, os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK)
    try:
        # Raw: the line discipline would otherwise echo the guest's output back to it as input.
        tty.setraw(fd, termios.TCSANOW)
        seen = b""
        deadline = time.monotonic() + BOOT_TIMEOUT
        with log.open("wb") as copy:
            while wanted not in seen and time.monotonic() < deadline:
                try:
                    chunk = os.read(fd, 65536)
                except BlockingIOError:
                    time.sleep(0.2)
                    continue
                seen += chunk
                copy.write(chunk)
        return seen
    finally:
        os.close(fd)


@pytest.mark.integration
def test_the_private_libvirtd_leaves_no_domain_qemu_or_daemon_behind_when_a_test_fails(
    folder_set: Path, tmp_path: Path
) -> None:
    """A domain left defined and running by a failing test goes with the daemon (no boot: it is
    destroyed seconds after it starts)."""
    if shutil.which("libvirtd") is None:
        pytest.skip("libvirtd is not installed (scripts/install-deps.sh installs libvirt)")
    name = domain_name(Manifest.read(folder_set))
    folder = tmp_path / "instance"
    with pytest.raises(RuntimeError, match="the test failed"), private_libvirtd(folder) as instance:
        instance.virsh("define", folder_set / LIBVIRT_NAME)
        instance.virsh("start", name)
        daemon_pid = int((folder / "run" / "libvirtd.pid").read_text())
        raise RuntimeError("the test failed")
    assert list((folder / "etc" / "qemu").glob("*.xml")) == []  # undefined
    assert qemu_processes_of(name) == []
    assert not Path(f"/proc/{daemon_pid}").exists()


def qemu_processes_of(domain: str) -> list[str]:
    found = subprocess.run(["pgrep", "-a", "-f", f"qemu-system.*guest={domain}"], capture_output=True, text=True)
    return found.stdout.splitlines()
