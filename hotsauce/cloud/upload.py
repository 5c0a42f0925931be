"""Uploading an image set to OpenStack Glance, connected the way a cloud boots it.

The kernel goes up as an `aki` image, the ramdisk as `ari`, and the root image
as `ami` whose kernel_id/ramdisk_id properties point at the other two (EC2
style), or, with disk_format qcow2/raw, as a bare disk image still linked to
them. Nothing is sent before every checksum of the set verifies, and a run
that fails leaves no image of its own behind (or names the ones it could not
delete).

Glance image names of a set called N: N (the machine image), N-kernel and
N-ramdisk.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from hotsauce.cloud.glance import (
    GLANCE_ATTRIBUTES,
    StreamedFile,
    connect,
    create_record,
    delete_images,
    image_by_id,
    images_named,
    send_data,
)
from hotsauce.errors import ConfigError, HotsauceError, Interrupted, NameTaken, UploadFailed
from hotsauce.events import Emit, Event, ignore, stage
from hotsauce.output.imageset import CHECKSUM_SUFFIX, Manifest, opened_set, verify_set

DISK_FORMATS = ("ami", "qcow2", "raw", "vmdk", "vhdx", "vhd")
FIRMWARE_TYPES = ("bios", "uefi")
# OpenStack's machine type per firmware: UEFI guests boot on q35 (OVMF's Secure Boot needs it).
MACHINE_TYPES = {"bios": "pc", "uefi": "q35"}
VISIBILITIES = ("public", "private", "shared", "community")
# Properties hotsauce sets itself; a --property may not overwrite them.
LINK_PROPERTIES = frozenset({"kernel_id", "ramdisk_id", "hotsauce_build", "hw_firmware_type", "hw_machine_type"})
STAGE = "upload"


@dataclass(frozen=True)
class UploadResult:
    kernel_id: str | None
    ramdisk_id: str | None
    image_id: str

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


@dataclass(frozen=True)
class Piece:
    """One file of the set and the Glance image it becomes."""

    role: str  # kernel | ramdisk | root
    path: Path
    image_name: str
    disk_format: str
    container_format: str
    expected_sha256: str  # from the set's checksum file, verified before the upload


def set_image_names(name: str) -> tuple[str, str, str]:
    """(machine image, kernel, ramdisk) names of the set called `name`."""
    return name, f"{name}-kernel", f"{name}-ramdisk"


def upload_image_set(
    set_path: Path,
    *,
    name: str,
    cloud: str | None = None,
    disk_format: str = "ami",
    properties: Mapping[str, str] = {},  # read only, so one shared default is safe
    visibility: str | None = None,
    tags: Sequence[str] = (),
    replace: bool = False,
    emit: Emit = ignore,
    firmware: str | None = None,
) -> UploadResult:
    """Upload the set at `set_path` (folder or tar.gz) as Glance images named after `name`.

    A whole-disk set goes up as one bare image of its file in `disk_format` (default: its first
    file), booted through `firmware` (default: UEFI when the disk boots only so, else BIOS)."""
    check_request(name, disk_format, properties, visibility)
    if firmware is not None and firmware not in FIRMWARE_TYPES:
        raise ConfigError(f"--firmware: unsupported {firmware!r}; choose one of " + ", ".join(FIRMWARE_TYPES))
    with opened_set(set_path) as folder:
        with stage(emit, "verify"):
            manifest = verify_set(folder)
        pieces = pieces_of(folder, manifest, name, disk_format)
        common = {**image_properties(manifest), **disk_properties(manifest, firmware, folder), **properties}
        conn = connect(cloud)
        with stage(emit, STAGE):
            previous = images_named(conn, set_image_names(name))
            if previous and not replace:
                raise NameTaken(
                    f"images named {name!r} exist already ({', '.join(i.id for i in previous)}); "
                    "choose another --name or pass --replace"
                )
            result = upload_pieces(conn, pieces, common, visibility, tags, emit)
            if previous:
                remove_previous_set(conn, [i.id for i in previous], emit)
        emit(Event("info", STAGE, f"uploaded {name}: {result.to_json()}", asdict(result)))
        return result


def check_request(
    name: str, disk_format: str, properties: Mapping[str, str], visibility: str | None
) -> None:
    if not name.strip():
        raise ConfigError("--name: an image name is required")
    if disk_format not in DISK_FORMATS:
        raise ConfigError(
            f"--disk-format: unsupported {disk_format!r}; choose one of " + ", ".join(DISK_FORMATS)
        )
    if visibility is not None and visibility not in VISIBILITIES:
        raise ConfigError(
            f"--visibility: unsupported {visibility!r}; choose one of " + ", ".join(VISIBILITIES)
        )
    for key in properties:
        if key in GLANCE_ATTRIBUTES or key in LINK_PROPERTIES:
            raise ConfigError(f"--property {key}: set by Glance or hotsauce, not by a property")
        if not key:
            raise ConfigError("--property: a property needs a name (KEY=VALUE)")


def pieces_of(folder: Path, manifest: Manifest, name: str, disk_format: str) -> list[Piece]:
    """What to upload, in order: kernel and ramdisk first, so the root image can name them."""
    root_name, kernel_name, ramdisk_name = set_image_names(name)
    if manifest.layout == "disk":
        return [_disk_piece(folder, manifest, root_name, disk_format)]
    if disk_format in WHOLE_DISK_ONLY:
        raise ConfigError(f"--disk-format {disk_format}: only a whole-disk set (layout: disk) has such a file")
    if disk_format != "ami" and manifest.image_format != disk_format:
        # Glance inspects content: a qcow2 declared raw (or the reverse) would be refused.
        raise ConfigError(
            f"--disk-format {disk_format}: the set's root image "
            f"{manifest.root} is {manifest.image_format}"
        )
    pieces = []
    if manifest.kernel:
        pieces.append(_piece(folder, manifest.kernel, "kernel", kernel_name, "aki", "aki"))
    if manifest.ramdisk:
        pieces.append(_piece(folder, manifest.ramdisk, "ramdisk", ramdisk_name, "ari", "ari"))
    container = "ami" if disk_format == "ami" else "bare"
    pieces.append(_piece(folder, manifest.root, "root", root_name, disk_format, container))
    return pieces


WHOLE_DISK_ONLY = ("vmdk", "vhdx", "vhd")


def _disk_piece(folder: Path, manifest: Manifest, image_name: str, disk_format: str) -> Piece:
    """The whole disk's file in `disk_format` (`ami`, the default, means the set's first file)."""
    wanted = manifest.image_format if disk_format == "ami" else disk_format
    for entry in manifest.disk_files:
        if entry["format"] == wanted:
            return _piece(folder, str(entry["name"]), "root", image_name, wanted, "bare")
    have = ", ".join(str(entry["format"]) for entry in manifest.disk_files)
    raise ConfigError(f"--disk-format {disk_format}: the set has no {disk_format} file (it has {have})")


def disk_properties(manifest: Manifest, firmware: str | None, folder: Path) -> dict[str, str]:
    """How a cloud boots a whole disk: firmware, machine type, OS type, architecture."""
    if manifest.layout != "disk":
        if firmware is not None:
            raise ConfigError(f"--firmware: {folder} is not a whole-disk set (layout: disk)")
        return {}
    modes = list(manifest.boot_modes)
    if firmware is None:
        firmware = "uefi" if modes == ["uefi"] else "bios"
    if firmware not in modes:
        raise ConfigError(f"--firmware {firmware}: {folder} boots only with {', '.join(modes)}")
    found = {"hw_firmware_type": firmware, "hw_machine_type": MACHINE_TYPES[firmware], "os_type": "linux"}
    if manifest.architecture:
        found["architecture"] = manifest.architecture
    return found


def _piece(
    folder: Path, file_name: str, role: str, image_name: str, disk: str, container: str
) -> Piece:
    expected = (folder / (file_name + CHECKSUM_SUFFIX)).read_text().split()[0]
    return Piece(role, folder / file_name, image_name, disk, container, expected)


def image_properties(manifest: Manifest) -> dict[str, str]:
    """What a cloud operator expects to find on an image, as far as the build knows it."""
    found = {"hotsauce_build": manifest.build_id}
    if manifest.os_distro:
        found["os_distro"] = manifest.os_distro
    if manifest.os_version:
        found["os_version"] = manifest.os_version
    return found


def upload_pieces(
    conn: Any,
    pieces: Sequence[Piece],
    properties: Mapping[str, str],
    visibility: str | None,
    tags: Sequence[str],
    emit: Emit,
) -> UploadResult:
    """Upload in order; on any failure, delete every image this call created."""
    created: list[str] = []
    ids: dict[str, str] = {}
    try:
        for piece in pieces:
            links = {f"{role}_id": ids[role] for role in ("kernel", "ramdisk") if role in ids}
            own = {**properties, **links} if piece.role == "root" else dict(properties)
            image_id = create_record(
                conn,
                name=piece.image_name,
                disk_format=piece.disk_format,
                container_format=piece.container_format,
                properties=own,
                visibility=visibility,
                tags=tags,
            )
            created.append(image_id)
            upload_data(conn, image_id, piece, emit)
            ids[piece.role] = image_id
            emit(
                Event(
                    "info",
                    STAGE,
                    f"{piece.role} {piece.path.name} is image {image_id}",
                    {"role": piece.role, "image_id": image_id},
                )
            )
    except BaseException as error:
        outcome = undo_partial_upload(conn, created, error, emit)
        if outcome is error:
            raise
        raise outcome from error
    return UploadResult(ids.get("kernel"), ids.get("ramdisk"), ids["root"])


def upload_data(conn: Any, image_id: str, piece: Piece, emit: Emit) -> None:
    """Send the file, then hold Glance's checksum against what was read from disk."""
    label = f"{piece.role} {piece.path.name}"

    def progress(done: int, total: int) -> None:
        emit(Event("progress", STAGE, label, {"done": done, "total": total, "role": piece.role}))

    data = StreamedFile(piece.path, progress)
    send_data(conn, image_id, data)
    if data.sha256.hexdigest() != piece.expected_sha256:
        raise UploadFailed(f"{piece.path}: changed after it was verified; upload abandoned")
    stored = image_by_id(conn, image_id)
    local_md5 = data.md5.hexdigest()
    if stored.status != "active" or stored.checksum != local_md5:
        raise UploadFailed(
            f"{piece.path.name}: Glance holds checksum {stored.checksum} (status {stored.status}), "
            f"the file's is {local_md5}"
        )


def undo_partial_upload(
    conn: Any, created: Sequence[str], error: BaseException, emit: Emit
) -> BaseException:
    """Delete this run's images; the exception to raise says what is left, if anything."""
    left = delete_images(conn, list(reversed(created)))
    reason = str(error) or type(error).__name__
    if left:
        emit(Event("warning", STAGE, "could not delete: " + " ".join(left), {"left": left}))
        return UploadFailed(
            f"{reason}; Glance could not be reached to delete this run's images: "
            f"delete them with `openstack image delete {' '.join(left)}`"
        )
    if created:
        emit(Event("info", STAGE, "deleted this run's images: " + " ".join(created)))
    if not isinstance(error, Exception) or isinstance(error, Interrupted):
        return error  # an interrupt stays an interrupt once the images are gone
    if not created:
        return error if isinstance(error, HotsauceError) else UploadFailed(reason)
    return UploadFailed(f"{reason}; this run's images were deleted")


def remove_previous_set(conn: Any, previous: Sequence[str], emit: Emit) -> None:
    left = delete_images(conn, previous)
    if left:
        raise UploadFailed(
            "the new set is uploaded, but the previous one could not be deleted: "
            f"delete it with `openstack image delete {' '.join(left)}`"
        )
    emit(Event("info", STAGE, "deleted the previous set: " + " ".join(previous)))
