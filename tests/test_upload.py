"""`hotsauce upload` against a real Glance started by the session fixture."""

from __future__ import annotations

import argparse
import io
import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from hotsauce.cloud.upload import set_image_names, upload_image_set
from hotsauce.commands import upload as upload_command
from hotsauce.errors import ChecksumMismatch, ConfigError, NameTaken, UploadFailed
from hotsauce.events import Event
from hotsauce.output.imageset import Manifest
from tests.glance_images import downloaded, stored, unique_name
from tests.glance_server import GlanceServer
from tests.image_set_sample import make_image_set, pack_image_set
from tests.images import run_hotsauce

if TYPE_CHECKING:  # openstacksdk is the optional [upload] dependency: imported where it is used
    from openstack.connection import Connection

@pytest.fixture(scope="session")
def sample_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("sample") / "set"
    make_image_set(folder)
    return folder


@pytest.fixture
def own_set(sample_set: Path, tmp_path: Path) -> Path:
    """A copy of the sample set this test may change."""
    return Path(shutil.copytree(sample_set, tmp_path / "set"))


def image_ids(api: Connection) -> set[str]:
    return {image.id for image in api.image.images()}


def images_of_set(api: Connection, name: str) -> list[Any]:
    return [image for n in set_image_names(name) for image in api.image.images(name=n)]


@pytest.mark.parametrize("packed", [False, True], ids=["folder", "tar.gz"])
@pytest.mark.integration
@pytest.mark.glance
def test_upload_creates_three_linked_images_that_download_byte_identical(
    cloud: str, glance_api: Connection, sample_set: Path, tmp_path: Path, packed: bool
) -> None:
    source = pack_image_set(sample_set, tmp_path / "set.tar.gz") if packed else sample_set
    manifest = Manifest.read(sample_set)
    events: list[Event] = []
    name = unique_name()

    result = upload_image_set(
        source,
        name=name,
        cloud=cloud,
        properties={"hw_rng_model": "virtio"},
        visibility="private",
        tags=["hotsauce-test"],
        emit=events.append,
    )

    kernel = stored(glance_api, result.kernel_id)
    ramdisk = stored(glance_api, result.ramdisk_id)
    machine = stored(glance_api, result.image_id)
    assert [i["status"] for i in (kernel, ramdisk, machine)] == ["active"] * 3
    assert (kernel["disk_format"], ramdisk["disk_format"], machine["disk_format"]) == (
        "aki",
        "ari",
        "ami",
    )
    assert machine["container_format"] == "ami"
    assert machine["kernel_id"] == kernel["id"]
    assert machine["ramdisk_id"] == ramdisk["id"]
    assert (machine["name"], kernel["name"], ramdisk["name"]) == set_image_names(name)
    for image in (kernel, ramdisk, machine):
        assert image["hotsauce_build"] == manifest.build_id
        assert image["os_distro"] == "debian"
        assert image["os_version"] == "12"
        assert image["hw_rng_model"] == "virtio"
        assert image["visibility"] == "private"
        assert image["tags"] == ["hotsauce-test"]
    for image, file_name in (
        (kernel, manifest.kernel),
        (ramdisk, manifest.ramdisk),
        (machine, manifest.root),
    ):
        assert downloaded(glance_api, image["id"]) == (sample_set / str(file_name)).read_bytes()
    finished = {
        e.data["role"] for e in events if e.kind == "progress" and e.data["done"] == e.data["total"]
    }
    assert finished == {"kernel", "ramdisk", "root"}


@pytest.mark.integration
@pytest.mark.glance
def test_bare_qcow2_upload_passes_glances_format_check_and_keeps_the_links(
    cloud: str, glance_api: Connection, sample_set: Path
) -> None:
    result = upload_image_set(sample_set, name=unique_name(), cloud=cloud, disk_format="qcow2")

    machine = stored(glance_api, result.image_id)
    assert machine["status"] == "active"
    assert (machine["disk_format"], machine["container_format"]) == ("qcow2", "bare")
    assert machine["kernel_id"] == result.kernel_id
    assert machine["ramdisk_id"] == result.ramdisk_id
    assert downloaded(glance_api, machine["id"]) == (sample_set / "root.qcow2").read_bytes()


@pytest.mark.integration
@pytest.mark.glance
def test_glance_refuses_a_qcow2_image_that_is_not_qcow2(glance_api: Connection) -> None:
    """The format check the bare-disk test relies on is really on in the fixture's Glance."""
    record = glance_api.image.post(
        "/images", json={"name": unique_name(), "disk_format": "qcow2", "container_format": "bare"}
    )
    image_id = record.json()["id"]
    try:
        response = glance_api.image.put(
            f"/images/{image_id}/file",
            data=b"not a qcow2 image" * 4096,
            headers={"Content-Type": "application/octet-stream"},
        )
        assert response.status_code >= 400
    finally:
        glance_api.image.delete_image(image_id, ignore_missing=True)


@pytest.mark.integration
@pytest.mark.glance
def test_corrupted_set_is_refused_naming_the_file_before_anything_is_uploaded(
    cloud: str, glance_api: Connection, own_set: Path
) -> None:
    ramdisk = own_set / "initrd.img"
    content = bytearray(ramdisk.read_bytes())
    content[100] ^= 0xFF
    ramdisk.write_bytes(bytes(content))
    before = image_ids(glance_api)

    with pytest.raises(ChecksumMismatch, match=r"initrd\.img"):
        upload_image_set(own_set, name=unique_name(), cloud=cloud)

    assert image_ids(glance_api) == before


@pytest.mark.integration
@pytest.mark.glance
def test_failure_half_way_deletes_the_images_this_run_created(
    cloud: str, glance_api: Connection, own_set: Path
) -> None:
    """The root image changes under the upload after the kernel and ramdisk are in Glance."""
    before = image_ids(glance_api)
    name = unique_name()

    def corrupt_root_once_ramdisk_is_in(event: Event) -> None:
        if event.kind == "info" and event.data.get("role") == "ramdisk":
            with (own_set / "root.qcow2").open("r+b") as root:
                root.seek(4096)
                root.write(b"\xff" * 16)

    with pytest.raises(UploadFailed, match=r"root\.qcow2.*this run's images were deleted"):
        upload_image_set(own_set, name=name, cloud=cloud, emit=corrupt_root_once_ramdisk_is_in)

    assert image_ids(glance_api) == before
    assert images_of_set(glance_api, name) == []


@pytest.mark.integration
@pytest.mark.glance
def test_glance_gone_half_way_names_exactly_the_images_to_delete(
    glance: GlanceServer, cloud: str, glance_api: Connection, sample_set: Path
) -> None:
    before = image_ids(glance_api)
    name = unique_name()

    def stop_glance_once_kernel_is_in(event: Event) -> None:
        if event.kind == "info" and event.data.get("role") == "kernel":
            glance.stop()

    try:
        with pytest.raises(UploadFailed, match="could not be reached") as failure:
            upload_image_set(sample_set, name=name, cloud=cloud, emit=stop_glance_once_kernel_is_in)
    finally:
        glance.start()

    left = image_ids(glance_api) - before
    assert left, "the kernel was in Glance before it stopped"
    assert {image.id for image in images_of_set(glance_api, name)} == left
    named = str(failure.value).split("openstack image delete ")[1].rstrip("`").split()
    assert set(named) == left
    for image_id in left:
        glance_api.image.delete_image(image_id)


@pytest.mark.integration
@pytest.mark.glance
def test_same_name_is_refused_and_replace_leaves_exactly_the_new_set(
    cloud: str, glance_api: Connection, sample_set: Path
) -> None:
    name = unique_name()
    first = upload_image_set(sample_set, name=name, cloud=cloud)
    before = image_ids(glance_api)

    with pytest.raises(NameTaken, match="--replace"):
        upload_image_set(sample_set, name=name, cloud=cloud)
    assert image_ids(glance_api) == before

    second = upload_image_set(sample_set, name=name, cloud=cloud, replace=True)

    remaining = {image.id for image in images_of_set(glance_api, name)}
    assert remaining == {second.kernel_id, second.ramdisk_id, second.image_id}
    assert first.image_id not in image_ids(glance_api)


@pytest.mark.integration
@pytest.mark.glance
def test_upload_command_prints_the_three_ids_as_json(
    cloud: str, glance_api: Connection, sample_set: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = parse_upload_command(
        [
            str(sample_set),
            "--name",
            unique_name(),
            "--os-cloud",
            cloud,
            "--json",
            "--property",
            "hw_disk_bus=virtio",
            "--tag",
            "cli",
        ]
    )

    assert args.run(args) == 0

    printed = json.loads(capsys.readouterr().out)
    machine = stored(glance_api, printed["image_id"])
    assert machine["kernel_id"] == printed["kernel_id"]
    assert machine["ramdisk_id"] == printed["ramdisk_id"]
    assert machine["hw_disk_bus"] == "virtio"
    assert machine["tags"] == ["cli"]


def parse_upload_command(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="hotsauce")
    upload_command.add_command(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["upload", *argv])


def test_reporter_off_a_terminal_prints_one_line_per_finished_file() -> None:
    stream = io.StringIO()
    reporter = upload_command.UploadReporter(stream)
    for done in (0, 1 << 20, 2 << 20):
        reporter(Event("progress", "upload", "root root.qcow2", {"done": done, "total": 2 << 20}))

    assert stream.getvalue().splitlines() == [f"{'root root.qcow2':<24} [{'#' * 30}] 2.0M/2.0M"]


def test_property_without_equals_sign_is_refused() -> None:
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        upload_command.parse_properties(["novalue"])


@pytest.mark.parametrize("key", ["kernel_id", "hotsauce_build", "disk_format", "name"])
def test_property_owned_by_glance_or_hotsauce_is_refused_before_reading_the_set(
    key: str, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match=key):
        upload_image_set(tmp_path / "absent", name="x", properties={key: "v"})


def test_raw_disk_format_for_a_qcow2_set_is_refused_before_connecting(sample_set: Path) -> None:
    with pytest.raises(ConfigError, match="qcow2"):
        upload_image_set(sample_set, name="x", disk_format="raw", cloud="no-such-cloud")


@pytest.mark.integration
@pytest.mark.glance
def test_build_with_upload_sends_the_set_it_built(
    cloud: str, glance_api: Connection, debian_rootfs_tarball: Path, tmp_path: Path
) -> None:
    """`hotsauce build --upload`: a real Debian set built by the test, uploaded linked and intact."""
    (tmp_path / "build.yaml").write_text("base:\n  debian: {}\nmodules: [build_info]\n")
    name = unique_name()
    result = run_hotsauce("build", "-s", "2G", "-o", "out", "--upload", "--name", name, "--os-cloud", cloud,
                          "--property", "team=sauce", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    by_name = {image.name: image for image in images_of_set(glance_api, name)}
    assert set(by_name) == {name, f"{name}-kernel", f"{name}-ramdisk"}
    machine = stored(glance_api, by_name[name].id)
    assert machine["kernel_id"] == by_name[f"{name}-kernel"].id
    assert machine["ramdisk_id"] == by_name[f"{name}-ramdisk"].id
    assert machine["os_distro"] == "debian" and machine["team"] == "sauce"
    manifest = Manifest.read(tmp_path / "out")
    for image_name, file_name in ((name, manifest.root), (f"{name}-kernel", manifest.kernel),
                                  (f"{name}-ramdisk", manifest.ramdisk)):
        assert downloaded(glance_api, by_name[image_name].id) == (tmp_path / "out" / str(file_name)).read_bytes()
