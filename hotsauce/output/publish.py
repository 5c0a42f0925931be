"""Writing the image set: convert the root image, describe it, checksum it, publish it.

Everything is written into a staging folder beside `-o` (same filesystem, so
the final rename is atomic); `-o` appears only when the set is complete.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from xml.sax.saxutils import escape

from hotsauce.config import ImageFormat
from hotsauce.errors import ConfigError
from hotsauce.events import Emit, ignore
from hotsauce.host import ledger, proc
from hotsauce.image import archive
from hotsauce.image.disk import Partition
from hotsauce.output.imageset import LIBVIRT_NAME, Manifest, write_checksum

SET_FILE_MODE = 0o644


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
                       image_format: ImageFormat, strip: bool) -> None:
    """The root filesystem (or, without strip, the whole disk) as qcow2 or raw.

    qemu-img's raw driver reads a byte range of the disk, so the partition
    is cut out without copying it first; zeroes stay holes.
    """
    source = (
        f"driver=raw,offset={partition.offset},size={partition.size},file.driver=file,file.filename={disk}"
        if strip else f"driver=raw,file.driver=file,file.filename={disk}"
    )
    proc.run(["qemu-img", "convert", "-m", str(os.cpu_count() or 1), "-W", "--image-opts", source,
              "-O", image_format.value, target])
    os.chmod(target, SET_FILE_MODE)


def write_libvirt_xml(folder: Path, manifest: Manifest, memory_mib: int = 1024) -> Path:
    """A domain that boots the set's kernel, ramdisk and root image.

    File names are relative to the set's folder; libvirt wants absolute
    paths, so `virsh define` needs them rewritten to where the set is.
    """
    boot = ""
    if manifest.kernel and manifest.ramdisk:
        boot = (f"    <kernel>{escape(manifest.kernel)}</kernel>\n"
                f"    <initrd>{escape(manifest.ramdisk)}</initrd>\n"
                f"    <cmdline>{escape(manifest.kernel_cmdline)}</cmdline>\n")
    xml = f"""<domain type='kvm'>
  <!-- written by hotsauce {escape(manifest.hotsauce_version)}, build {escape(manifest.build_id)};
       paths are relative to this folder: make them absolute before `virsh define` -->
  <name>hotsauce-{escape(manifest.build_id)}</name>
  <memory unit='MiB'>{memory_mib}</memory>
  <vcpu>2</vcpu>
  <os>
    <type arch='x86_64'>hvm</type>
{boot}  </os>
  <features><acpi/></features>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='{escape(manifest.image_format)}'/>
      <source file='{escape(manifest.root)}'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <interface type='network'>
      <source network='default'/>
      <model type='virtio'/>
    </interface>
    <serial type='pty'><target port='0'/></serial>
    <console type='pty'><target type='serial' port='0'/></console>
  </devices>
</domain>
"""
    path = folder / LIBVIRT_NAME
    path.write_text(xml)
    return path


def write_checksums(folder: Path, manifest: Manifest) -> None:
    for name in manifest.files():
        path = folder / name
        os.chmod(path, SET_FILE_MODE)
        os.chmod(write_checksum(path), SET_FILE_MODE)


def publish(staging: Path, output: Path, *, compress: bool, force: bool, emit: Emit = ignore) -> None:
    """Move the finished set to `output`: as a folder, or packed into a tar.gz."""
    output = output.absolute()
    if compress:
        partial = output.parent / f".{output.name}.partial-{os.getpid()}.tar.gz"
        with ledger.held(ledger.Kind.PATH, partial):
            try:
                archive.pack(staging, partial, emit)
                os.chmod(partial, SET_FILE_MODE)
                _replace(partial, output, force)
            finally:
                partial.unlink(missing_ok=True)
        return
    _replace(staging, output, force)


def _replace(source: Path, output: Path, force: bool) -> None:
    if output.exists() and force:
        if output.is_dir() and not output.is_symlink():
            shutil.rmtree(output)
        else:
            output.unlink()
    os.rename(source, output)
