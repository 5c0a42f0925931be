"""`hotsauce shell`: a built set's root, opened copy-on-write, with a shell or a command inside.

The set's image file is never written: a qcow2 overlay in a temporary
folder takes every write, with the set's file as its read-only backing file.
This kernel has no nbd, so qemu-storage-daemon exports the overlay as a raw
file through FUSE, and that file is attached as a loop device and mounted
(under a second where converting a 450 MB qcow2 root to a raw copy takes
five). The root is prepared as for modules (hotsauce.modules.chroot) and the
command enters it through the sandbox (hotsauce.modules.debug_shell).

With `write_to`, the changed root is written as a new set by the output
stage's own writers, from the exported raw view: the same layout and
formats, a new build id, checksums. Everything is released in reverse
order on every path, and recorded in the ledger while held.
"""

from __future__ import annotations

import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import replace
from pathlib import Path

from hotsauce.config import ImageFormat
from hotsauce.errors import StageFailed
from hotsauce.events import Emit, ignore
from hotsauce.host import ledger, proc
from hotsauce.image import disk
from hotsauce.image.disk import Partition
from hotsauce.image.identity import scrub_image
from hotsauce.image.partitions import read_gpt
from hotsauce.modules.chroot import build_chroot
from hotsauce.modules.debug_shell import run_in_image
from hotsauce.output import publish
from hotsauce.output.boot_files import copy_boot_files, find_boot_files, read_os_release
from hotsauce.output.formats import DiskFormat, Qcow2Compression, convert_disk
from hotsauce.output.imageset import DISK_LAYOUT, Manifest, opened_set, verify_set

EXPORT_WAIT_SECONDS = 10.0
POLL_SECONDS = 0.05


def shell_in_set(set_path: Path, argv: Sequence[str] | None = None, *, write_to: Path | None = None,
                 emit: Emit = ignore) -> int:
    """Run `argv` (by default a shell) inside the root of the set at `set_path` (a folder or a
    tar.gz); its exit status. The set is not changed. With `write_to`, and when the command
    succeeds, the changed root becomes a new set there (a tar.gz when the name ends in .tar.gz)."""
    if write_to is not None:
        publish.check_output_path(write_to, force=False)
    with ledger.recording(), opened_set(Path(set_path)) as folder:
        manifest = verify_set(folder)
        image, qemu_format = _image_file(folder, manifest)
        with ExitStack() as held:
            work = held.enter_context(_work_folder())
            staging = held.enter_context(publish.staging_folder(write_to)) if write_to is not None else None
            export = held.enter_context(exported_overlay(image, qemu_format, work))
            with ExitStack() as mounted:
                device = mounted.enter_context(disk.attached(export, _root_partition(export, manifest)))
                # A new set is written from it: freed blocks are given back, so they are not copied.
                root = mounted.enter_context(disk.root_filesystem_mounted(device, work / "root",
                                                                          trim=write_to is not None))
                with build_chroot(root):
                    status = run_in_image(root, argv)
                if staging is None or status != 0:
                    return status
                new = _finish_root(root, manifest, staging)
                mounted.close()  # written back and detached before the export is read
            _write_set(export, staging, new)
            assert write_to is not None  # there is a staging folder only for it
            publish.publish(staging, write_to, compress=write_to.name.endswith(".tar.gz"), force=False, emit=emit)
    return status


def _image_file(folder: Path, manifest: Manifest) -> tuple[Path, str]:
    """The set's image file and the format qemu reads it as."""
    image = (folder / manifest.root).absolute()
    for entry in manifest.disk_files:
        if entry["name"] == manifest.root:
            return image, str(entry["qemu_format"])
    return image, manifest.image_format


@contextmanager
def _work_folder() -> Iterator[Path]:
    work = Path(tempfile.mkdtemp(prefix="hotsauce-shell-")).absolute()
    with ledger.held(ledger.Kind.PATH, work):
        try:
            yield work
        finally:
            ledger.remove_tree(work)


@contextmanager
def exported_overlay(image: Path, qemu_format: str, work: Path) -> Iterator[Path]:
    """A raw view of `image` whose writes go to a qcow2 overlay in `work`: a file that
    qemu-storage-daemon serves through FUSE while the block runs."""
    overlay, export, log = work / "overlay.qcow2", work / "export.raw", work / "qemu-storage-daemon.log"
    proc.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", image, "-F", qemu_format, overlay])
    export.touch()  # FUSE mounts the export over a file
    argv = ["qemu-storage-daemon",
            "--blockdev", f"driver=file,node-name=overlay-file,filename={_escaped(overlay)}",
            "--blockdev", "driver=qcow2,node-name=overlay,file=overlay-file",
            "--export", f"type=fuse,id=export,node-name=overlay,mountpoint={_escaped(export)},writable=on"]
    # The FUSE mount is recorded too: a daemon killed with hotsauce would leave it behind, dead.
    with ledger.held(ledger.Kind.MOUNT, export), log.open("wb") as stderr, \
            proc.child_process(argv, stdout=stderr, stderr=stderr) as daemon:
        try:
            _wait_for_export(export, daemon, log)
            yield export
        finally:
            proc.stop_process_group(daemon)  # it unmounts its export as it ends
            if _is_mounted(export):
                proc.run(["umount", export], check=False)


def _escaped(path: Path) -> str:
    return str(path).replace(",", ",,")  # qemu's option syntax doubles a comma inside a value


def _wait_for_export(export: Path, daemon: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + EXPORT_WAIT_SECONDS
    while not _is_mounted(export):
        if daemon.poll() is not None or time.monotonic() > deadline:
            reason = log.read_text(errors="replace").strip().splitlines()[-1:] or ["no message"]
            raise StageFailed("shell", f"qemu-storage-daemon could not export {export}: {reason[0]}")
        time.sleep(POLL_SECONDS)


def _is_mounted(path: Path) -> bool:
    with open("/proc/self/mountinfo") as mountinfo:
        return any(line.split()[4] == str(path) for line in mountinfo)


def _root_partition(image: Path, manifest: Manifest) -> Partition:
    if manifest.layout == DISK_LAYOUT:
        return read_gpt(image).root
    if manifest.partitioned:
        return disk.read_first_partition(image)
    return Partition(offset=0, size=image.stat().st_size)


def _finish_root(root: Path, manifest: Manifest, staging: Path) -> Manifest:
    """What the build's finish stage does to a root, and the manifest of the new set."""
    scrub_image(root)
    if manifest.kernel is not None:
        copy_boot_files(find_boot_files(root), staging)
    os_release = read_os_release(root)
    from hotsauce.build import new_build_id  # the build pipeline imports the output stage, not the reverse

    # The SBOM described the set as built; what was done in the shell is in no module, so the
    # changed set carries none rather than one that may no longer be true.
    return replace(manifest, build_id=new_build_id(), created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                   os_distro=os_release.get("ID"), os_version=os_release.get("VERSION_ID"), sbom=None)


def _write_set(export: Path, staging: Path, manifest: Manifest) -> None:
    """The images from the raw view, in the set's own formats, then the manifest, libvirt.xml
    and checksums, as the build writes them."""
    if manifest.layout == DISK_LAYOUT:
        files = convert_disk(export, staging, [DiskFormat(str(entry["format"])) for entry in manifest.disk_files],
                             _compression(manifest))
        manifest = replace(manifest, disk_files=tuple(
            {**old, "virtual_size": new.virtual_size} for old, new in zip(manifest.disk_files, files, strict=True)))
    else:
        whole = Partition(offset=0, size=export.stat().st_size)
        publish.convert_root_image(export, whole, staging / manifest.root, ImageFormat(manifest.image_format),
                                   strip=True)
    manifest.write(staging)
    publish.write_libvirt_xml(staging, manifest)
    publish.write_checksums(staging, manifest)


def _compression(manifest: Manifest) -> Qcow2Compression:
    for entry in manifest.disk_files:
        if entry.get("compression"):
            return Qcow2Compression(str(entry["compression"]))
    return Qcow2Compression.NONE


def command_after_dashes(argv: Sequence[str]) -> list[str] | None:
    """The command given after `--`, or None for a shell."""
    command = list(argv[1:] if argv and argv[0] == "--" else argv)
    return command or None
