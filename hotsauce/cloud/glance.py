"""Talking to OpenStack's image service (Glance v2) through openstacksdk.

Authentication is openstacksdk's own (clouds.yaml, OS_CLOUD, OS_* variables),
so hotsauce reaches every cloud the `openstack` client reaches. Image records
and their data go through the image API's REST calls directly: that keeps the
request body exactly what hotsauce means (no properties added on the way) and
lets the data stream from disk with progress.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hotsauce.errors import ConfigError, GlanceError, MissingOpenstackSdk

CHUNK_BYTES = 1 << 20

# Attributes Glance itself owns: a --property with one of these names would be
# refused by Glance half-way, so it is refused before anything is sent.
GLANCE_ATTRIBUTES = frozenset(
    {
        "id",
        "name",
        "status",
        "visibility",
        "protected",
        "os_hidden",
        "checksum",
        "os_hash_algo",
        "os_hash_value",
        "owner",
        "size",
        "virtual_size",
        "min_ram",
        "min_disk",
        "disk_format",
        "container_format",
        "created_at",
        "updated_at",
        "tags",
        "direct_url",
        "locations",
        "self",
        "file",
        "schema",
        "stores",
    }
)


def glance_failure(action: str, error: BaseException) -> GlanceError:
    """One line for what went wrong talking to the cloud (the SDK's messages span lines)."""
    detail = " ".join(str(error).split()) or type(error).__name__
    return GlanceError(f"{action}: {detail}")


def sdk_errors() -> tuple[type[BaseException], ...]:
    """What openstacksdk and keystoneauth raise for a cloud that refuses or is unreachable."""
    import keystoneauth1.exceptions
    import openstack.exceptions

    return (openstack.exceptions.SDKException, keystoneauth1.exceptions.ClientException)


def connect(cloud: str | None) -> Any:
    """An openstack Connection, configured the way the `openstack` client would be."""
    try:
        import openstack
        import openstack.exceptions
    except ImportError:
        raise MissingOpenstackSdk(
            "hotsauce upload needs openstacksdk: install hotsauce with the 'upload' extra"
        ) from None
    try:
        return openstack.connect(cloud=cloud)
    except openstack.exceptions.ConfigException as error:
        where = f"cloud {cloud!r}" if cloud else "OS_CLOUD / OS_* variables"
        raise ConfigError(
            f"OpenStack configuration ({where}): {' '.join(str(error).split())}"
        ) from None


@dataclass(frozen=True)
class StoredImage:
    id: str
    name: str
    status: str
    checksum: str | None


def images_named(conn: Any, names: Sequence[str]) -> list[StoredImage]:
    found: list[StoredImage] = []
    try:
        for name in names:
            found.extend(_stored(image) for image in conn.image.images(name=name))
    except sdk_errors() as error:
        raise glance_failure("listing images", error) from None
    return found


def image_by_id(conn: Any, image_id: str) -> StoredImage:
    try:
        return _stored(conn.image.get_image(image_id))
    except sdk_errors() as error:
        raise glance_failure(f"reading image {image_id}", error) from None


def _stored(image: Any) -> StoredImage:
    return StoredImage(id=image.id, name=image.name, status=image.status, checksum=image.checksum)


def create_record(
    conn: Any,
    *,
    name: str,
    disk_format: str,
    container_format: str,
    properties: Mapping[str, str],
    visibility: str | None,
    tags: Sequence[str],
) -> str:
    """A queued image (no data yet); returns its ID."""
    import openstack.exceptions

    body: dict[str, Any] = {
        **properties,
        "name": name,
        "disk_format": disk_format,
        "container_format": container_format,
        "tags": list(tags),
    }
    if visibility is not None:
        body["visibility"] = visibility
    try:
        response = conn.image.post("/images", json=body)
        openstack.exceptions.raise_from_response(response)
        image_id: str = response.json()["id"]
        return image_id
    except sdk_errors() as error:
        raise glance_failure(f"creating image {name!r}", error) from None


class StreamedFile:
    """A file sent as a request body: read in chunks, hashed and reported as it goes.

    requests takes its length from __len__ (so Glance gets a Content-Length) and
    its chunks from __iter__; iterating again (a retried request) starts over.
    """

    def __init__(self, path: Path, on_progress: Callable[[int, int], None]) -> None:
        self.path = path
        self.size = path.stat().st_size
        self.on_progress = on_progress
        self.md5 = hashlib.md5(usedforsecurity=False)
        self.sha256 = hashlib.sha256()

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[bytes]:
        self.md5 = hashlib.md5(usedforsecurity=False)
        self.sha256 = hashlib.sha256()
        sent = 0
        self.on_progress(sent, self.size)
        with self.path.open("rb") as stream:
            while chunk := stream.read(CHUNK_BYTES):
                self.md5.update(chunk)
                self.sha256.update(chunk)
                sent += len(chunk)
                yield chunk
                self.on_progress(sent, self.size)


def send_data(conn: Any, image_id: str, data: StreamedFile) -> None:
    import openstack.exceptions

    try:
        response = conn.image.put(
            f"/images/{image_id}/file",
            data=data,
            headers={"Content-Type": "application/octet-stream"},
        )
        openstack.exceptions.raise_from_response(response)
    except sdk_errors() as error:
        raise glance_failure(f"uploading {data.path.name}", error) from None


def delete_images(conn: Any, image_ids: Sequence[str]) -> list[str]:
    """Delete each image; return the IDs that could not be deleted."""
    left: list[str] = []
    for image_id in image_ids:
        try:
            conn.image.delete_image(image_id, ignore_missing=True)
        except sdk_errors():
            left.append(image_id)
    return left
