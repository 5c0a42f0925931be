"""Writing the image set: convert the root image, describe it, checksum it, publish it.

Everything is written into a staging folder beside `-o` (same filesystem, so
the final rename is atomic); `-o` appears only when the set is complete.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from pathlib import Path

from hotsauce.config import ImageFormat
from hotsauce.errors import ConfigError
from hotsauce.events import Emit, ignore
from hotsauce.host import ledger, proc
from hotsauce.host.release import remove
from hotsauce.image import archive
from hotsauce.image.disk import Partition
from hotsauce.output.imageset import SET_FILE_MODE, Manifest, write_checksum
from hotsauce.output.libvirt import place_set
from hotsauce.output.libvirt import write_libvirt_xml as write_libvirt_xml  # build.py calls it from here


def check_output_path(output: Path, *, force: bool) -> None:
    """Refuse before anything is allocated: a missing or unwritable folder, an existing -o."""
    parent = output.absolute().parent
    if not parent.is_dir():
        raise ConfigError(f"-o {output}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"-o {output}: folder {parent} is not writable")
    if output.exists() and not force:
        raise ConfigError(f"-o {output}: already exists (use --force to replace it)")


@contextmanager
def staging_folder(output: Path) -> Iterator[Path]:
    """A folder beside `output` for the set; removed unless published."""
    output = output.absolute()
    staging = output.parent / f".{output.name}.partial-{os.getpid()}"
    with ledger.held(ledger.Kind.PATH, staging):
        staging.mkdir(mode=0o755)
        try:
            yield staging
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def convert_root_image(disk: Path, partition: Partition, target: Path,
                       image_format: ImageFormat, strip: bool, *, in_order: bool = False) -> None:
    """The root filesystem (or, without strip, the whole disk) as qcow2 or raw.

    qemu-img's raw driver reads a byte range of the disk, so the partition
    is cut out without copying it first; zeroes stay holes. Out-of-order
    writes (-W) are faster, but place a qcow2's clusters differently each
    time: with `in_order` (reproducible builds) the same root gives the same
    file.
    """
    source = (
        f"driver=raw,offset={partition.offset},size={partition.size},file.driver=file,file.filename={disk}"
        if strip else f"driver=raw,file.driver=file,file.filename={disk}"
    )
    out_of_order = [] if in_order else ["-W"]
    proc.run(["qemu-img", "convert", "-m", str(os.cpu_count() or 1), *out_of_order, "--image-opts", source,
              "-O", image_format.value, target])
    os.chmod(target, SET_FILE_MODE)


def write_checksums(folder: Path, manifest: Manifest, *, only: Collection[str] | None = None) -> None:
    """NAME.sha256 for every file of the set, or for those named in `only`."""
    for name in manifest.files():
        if only is not None and name not in only:
            continue
        path = folder / name
        os.chmod(path, SET_FILE_MODE)
        os.chmod(write_checksum(path), SET_FILE_MODE)


def publish(staging: Path, output: Path, *, compress: bool, force: bool, emit: Emit = ignore,
            probe_cache: Path | None = None, epoch: int | None = None) -> None:
    """Move the finished set to `output`: as a folder, or packed into a tar.gz. `probe_cache` is where
    the KVM probe behind a folder's libvirt.xml may remember its verdict; with `epoch`, no file of
    the set is dated later (SOURCE_DATE_EPOCH)."""
    output = output.absolute()
    if compress:
        partial = output.parent / f".{output.name}.partial-{os.getpid()}.tar.gz"
        with ledger.held(ledger.Kind.PATH, partial):
            try:
                archive.pack(staging, partial, emit, epoch=epoch)
                os.chmod(partial, SET_FILE_MODE)
                _replace(partial, output, force)
            finally:
                partial.unlink(missing_ok=True)
        return
    # libvirt.xml for the files where they are about to be
    place_set(staging, output, emit=emit, probe_cache=probe_cache)
    if epoch is not None:
        clamp_file_times(staging, epoch)
    _replace(staging, output, force)


def clamp_file_times(folder: Path, epoch: int) -> None:
    """Each file of the set dated no later than `epoch`."""
    for path in folder.iterdir():
        stat = path.lstat()
        when = min(stat.st_mtime_ns, epoch * 1_000_000_000)
        os.utime(path, ns=(when, when), follow_symlinks=False)


def _replace(source: Path, output: Path, force: bool) -> None:
    if force:
        remove(output)
    os.rename(source, output)
