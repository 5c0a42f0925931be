"""Writing a whole-disk set beside its disk files (hotsauce.output.formats.convert_disk): the manifest
that says how clouds register it, libvirt.xml and the checksums."""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path

from hotsauce.image.bootloader import BootFacts
from hotsauce.image.layout import Layout
from hotsauce.image.whole_disk import DiskSettings
from hotsauce.output.formats import DiskFile
from hotsauce.output.imageset import Manifest
from hotsauce.output.publish import write_checksums, write_libvirt_xml

# The name Amazon's register-image and most clouds give the boot disk of an HVM instance; the image
# itself finds its root by UUID, so any name works.
ROOT_DEVICE_NAME = "/dev/xvda"


def write_disk_set(staging: Path, files: tuple[DiskFile, ...], settings: DiskSettings, facts: BootFacts,
                   manifest: Manifest) -> Manifest:
    """The rest of the set beside the disk's `files` in `staging`: the manifest, which carries what
    every set says (build, OS, versions), libvirt.xml and the checksums."""
    manifest = replace(
        manifest,
        root=files[0].name,
        image_format=files[0].format,
        partitioned=True,
        kernel=None,
        ramdisk=None,
        kernel_cmdline=facts.kernel_cmdline,
        layout=Layout.DISK.value,
        boot_modes=settings.boot.firmware,
        architecture=settings.architecture,
        root_device=ROOT_DEVICE_NAME,
        root_found_by="UUID",
        drivers=dict(facts.drivers),
        disk_files=tuple(asdict(file) for file in files),
    )
    manifest.write(staging)
    write_libvirt_xml(staging, manifest)
    write_checksums(staging, manifest)
    return manifest
