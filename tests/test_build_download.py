"""The core build, end to end: a Debian root tarball over HTTP in, an image set out."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from hotsauce.image import scrub
from hotsauce.output.imageset import Manifest, verify_set
from tests.http_server import ServedFolder, serving
from tests.images import filesystem_label, mounted_root_image, run_hotsauce, unpack_set

pytestmark = pytest.mark.integration

USER_MODULE = '''
import os

def modify(name, root, cfg):
    with open(os.path.join(root, "etc", "made-by-module"), "w") as out:
        out.write(f"{name} {cfg['hostname']}\\n")
'''

FAILING_MODULE = '''
def modify(name, root, cfg):
    raise RuntimeError("the disk is full of hot sauce")
'''


@pytest.fixture(scope="module")
def served_rootfs(debian_rootfs_tarball: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedFolder]:
    folder = tmp_path_factory.mktemp("served")
    (folder / "bookworm.tar.zst").symlink_to(debian_rootfs_tarball)
    with serving(folder) as served:
        yield served


def write_project(folder: Path, url: str, modules: list[str], extra: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "python_modules").mkdir(exist_ok=True)
    (folder / "python_modules" / "stamp.py").write_text(USER_MODULE)
    (folder / "python_modules" / "explode.py").write_text(FAILING_MODULE)
    module_lines = "".join(f"  - {name}\n" for name in modules)
    (folder / "build.yaml").write_text(
        f"download:\n  from: {url}\n  cache_dir: downloads\nhostname: sauce\nmodules:\n{module_lines}{extra}"
    )
    return folder


@pytest.fixture(scope="module")
def built_set(served_rootfs: ServedFolder, tmp_path_factory: pytest.TempPathFactory) -> Path:
    project = write_project(tmp_path_factory.mktemp("project"), f"{served_rootfs.url}/bookworm.tar.zst", ["stamp"])
    result = run_hotsauce("build", "-s", "2G", "-o", "blah.tar.gz", "-x", cwd=project)
    assert result.returncode == 0, result.stderr
    return project / "blah.tar.gz"


@pytest.fixture(scope="module")
def unpacked_set(built_set: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return unpack_set(built_set, tmp_path_factory.mktemp("unpacked"))


def tar_member_sha256(archive: Path, suffix_pattern: str) -> str:
    listing = subprocess.run(["tar", "--zstd", "-tf", archive], capture_output=True, text=True, check=True).stdout
    name = next(line for line in listing.splitlines() if line.startswith(suffix_pattern))
    data = subprocess.run(["tar", "--zstd", "-xOf", archive, name], capture_output=True, check=True).stdout
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_tar_gz_unpacks_to_a_set_whose_checksums_all_verify(unpacked_set: Path) -> None:
    manifest = verify_set(unpacked_set)
    expected = set(manifest.files()) | {f"{name}.sha256" for name in manifest.files()}
    assert {p.name for p in unpacked_set.iterdir()} == expected
    checked = subprocess.run(["sha256sum", "-c", *[f"{n}.sha256" for n in manifest.files()]], cwd=unpacked_set,
                             capture_output=True, text=True, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_root_image_is_a_sound_qcow2_labelled_root(unpacked_set: Path, tmp_path: Path) -> None:
    image = unpacked_set / "root.qcow2"
    subprocess.run(["qemu-img", "check", image], check=True, capture_output=True)
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", image], capture_output=True,
                                     check=True, text=True).stdout)
    assert info["format"] == "qcow2"
    assert filesystem_label(image, tmp_path) == "root"


def test_the_root_image_holds_the_tarball_and_the_modules_work(
    unpacked_set: Path, debian_rootfs_tarball: Path, tmp_path: Path
) -> None:
    listing = subprocess.run(["tar", "--zstd", "--quoting-style=literal", "-tf", debian_rootfs_tarball],
                             capture_output=True, text=True, check=True).stdout.splitlines()
    members = {line.removeprefix("./").rstrip("/") for line in listing} - {""}
    with mounted_root_image(unpacked_set / "root.qcow2", tmp_path) as root:
        missing = [m for m in members if not (root / m).exists() and not (root / m).is_symlink()]
        # The image's finishing removes the build host's resolver and apt's lists and caches, and
        # what differs from one build to the next (dpkg's and debconf's backups, temporary files).
        scrubbed = ("etc/resolv.conf", "var/lib/apt/lists/", "var/cache/apt/",
                    *(path.lstrip("/") for path in scrub.REMOVED),
                    *(f"{folder.lstrip('/')}/" for folder in scrub.EMPTIED_FOLDERS))
        assert [m for m in missing if not m.startswith(scrubbed)] == []
        assert (root / "etc" / "made-by-module").read_text() == "stamp sauce\n"
        assert "LABEL=root" in (root / "etc" / "fstab").read_text()
        assert (root / "etc" / "hostname").read_text().strip() == "sauce"


def test_kernel_and_ramdisk_are_the_ones_in_the_tarballs_boot(unpacked_set: Path, debian_rootfs_tarball: Path) -> None:
    assert sha256_file(unpacked_set / "vmlinuz") == tar_member_sha256(debian_rootfs_tarball, "./boot/vmlinuz-")
    assert sha256_file(unpacked_set / "initrd.img") == tar_member_sha256(debian_rootfs_tarball, "./boot/initrd.img-")


def test_libvirt_xml_names_the_three_files(unpacked_set: Path) -> None:
    xml = (unpacked_set / "libvirt.xml").read_text()
    for name in ("root.qcow2", "vmlinuz", "initrd.img"):
        assert f">{name}<" in xml or f'"{name}"' in xml
    manifest = Manifest.read(unpacked_set)
    assert manifest.os_distro == "debian" and manifest.os_version == "12"


def test_a_second_build_with_the_same_download_does_not_fetch_again(
    served_rootfs: ServedFolder, built_set: Path, tmp_path: Path
) -> None:
    project = built_set.parent
    fetched = list(served_rootfs.requests)
    result = run_hotsauce("build", "-s", "2G", "-o", tmp_path / "again", cwd=project)
    assert result.returncode == 0, result.stderr
    assert served_rootfs.requests == fetched
    assert "served from the cache" in result.stderr
    assert (tmp_path / "again" / "root.qcow2").is_file()


def test_a_module_that_raises_fails_the_build_and_leaves_nothing(served_rootfs: ServedFolder, tmp_path: Path) -> None:
    project = write_project(tmp_path / "project", f"{served_rootfs.url}/bookworm.tar.zst", ["stamp", "explode"])
    work = tmp_path / "work"
    work.mkdir()
    result = run_hotsauce("build", "-s", "2G", "-o", "out.tar.gz", "-x", "--work-dir", work, cwd=project)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("hotsauce: modules: module 'explode' failed: RuntimeError: the disk is full of")
    assert "Traceback" not in result.stderr
    assert not (project / "out.tar.gz").exists()
    assert [p.name for p in project.iterdir() if p.name.startswith(".")] == []
    assert list(work.iterdir()) == []


@pytest.mark.parametrize("fs_type", ["xfs", "btrfs"])
def test_other_filesystems_make_mountable_images(served_rootfs: ServedFolder, tmp_path: Path, fs_type: str) -> None:
    project = write_project(tmp_path / "project", f"{served_rootfs.url}/bookworm.tar.zst", ["stamp"])
    result = run_hotsauce("build", "-s", "2G", "--fs-type", fs_type, "--format", "raw", "-o", "out", cwd=project)
    assert result.returncode == 0, result.stderr
    blkid = subprocess.run(["blkid", "-o", "export", project / "out" / "root.raw"], capture_output=True, text=True,
                           check=True).stdout
    assert f"TYPE={fs_type}" in blkid and "LABEL=root" in blkid
    with mounted_root_image(project / "out" / "root.raw", tmp_path) as root:
        assert (root / "etc" / "made-by-module").is_file()
    shutil.rmtree(project / "out")


def test_no_strip_keeps_the_partition_table(served_rootfs: ServedFolder, tmp_path: Path) -> None:
    project = write_project(tmp_path / "project", f"{served_rootfs.url}/bookworm.tar.zst", [],
                            extra="kernel: false\n")
    result = run_hotsauce("build", "-s", "1G", "--no-strip", "--format", "raw", "-o", "out", cwd=project)
    assert result.returncode == 0, result.stderr
    table = json.loads(subprocess.run(["sfdisk", "--json", project / "out" / "root.raw"], capture_output=True,
                                      text=True, check=True).stdout)
    assert len(table["partitiontable"]["partitions"]) == 1
    assert not (project / "out" / "vmlinuz").exists()
    assert Manifest.read(project / "out").partitioned is True


def test_the_set_in_the_archive_lists_only_top_level_files(built_set: Path) -> None:
    with tarfile.open(built_set) as archive:
        assert all("/" not in name.strip("./") for name in archive.getnames())
