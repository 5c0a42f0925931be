"""Putting an image set where it will run: `hotsauce unpack`.

A tar.gz set is unpacked beside its target under a temporary name, every
checksum is verified, and libvirt.xml is written for where the files will
be; the folder is renamed into place only then, so a failed unpack leaves
nothing. A folder set that was moved or copied gets its libvirt.xml
rewritten where it is.
"""

from __future__ import annotations

import os
from pathlib import Path

from hotsauce.boot.qemu import Accel
from hotsauce.errors import ConfigError
from hotsauce.events import Emit, ignore
from hotsauce.host import ledger
from hotsauce.output.imageset import LIBVIRT_NAME, Manifest, extract_set, verify_set
from hotsauce.output.libvirt import place_set
from hotsauce.output.publish import staging_folder


def unpack_set(archive: Path, target: Path, *, accel: Accel = Accel.AUTO, network: str | None = None,
               emit: Emit = ignore) -> Manifest:
    """The tar.gz set `archive` as the folder `target`, verified, its libvirt.xml written for it."""
    if not archive.is_file():
        raise ConfigError(f"{archive}: no such image set archive (a tar.gz that `hotsauce build -x` wrote)")
    _check_target(target)
    with ledger.recording(), staging_folder(target) as staging:
        extract_set(archive, staging)
        manifest = verify_set(staging)
        place_set(staging, target, accel=accel, network=network, emit=emit)
        os.rename(staging, target)
    return manifest


def place_moved_set(folder: Path, *, accel: Accel = Accel.AUTO, network: str | None = None,
                     emit: Emit = ignore) -> Manifest:
    """The folder set's libvirt.xml rewritten for where the folder is now.

    The files libvirt.xml points at are verified first; libvirt.xml itself
    is not, as it is replaced.
    """
    if not folder.is_dir():
        raise ConfigError(f"{folder}: not a folder (--in-place takes an image set folder)")
    manifest = verify_set(folder, skipping={LIBVIRT_NAME})
    place_set(folder, folder, accel=accel, network=network, emit=emit)
    return manifest


def _check_target(target: Path) -> None:
    parent = target.absolute().parent
    if not parent.is_dir():
        raise ConfigError(f"{target}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"{target}: folder {parent} is not writable")
    if target.exists() or target.is_symlink():
        raise ConfigError(f"{target}: already exists (unpack into a new folder)")
