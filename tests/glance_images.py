"""Looking at what the suite's Glance holds: shared by the upload tests of image sets and of whole disks."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # openstacksdk is the optional [upload] dependency
    from openstack.connection import Connection

CLOUD = "hotsauce-test-glance"


def unique_name() -> str:
    return f"hotsauce-test-{uuid.uuid4().hex[:8]}"


def stored(api: Connection, image_id: str | None) -> dict[str, Any]:
    """The image as Glance answers for it, properties at the top level as in its API."""
    response = api.image.get(f"/images/{image_id}")
    response.raise_for_status()
    image: dict[str, Any] = response.json()
    return image


def downloaded(api: Connection, image_id: str) -> bytes:
    response = api.image.get(f"/images/{image_id}/file")
    response.raise_for_status()
    content: bytes = response.content
    return content
