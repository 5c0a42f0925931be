"""`hotsauce upload`: send an image set to OpenStack Glance."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, TextIO

from hotsauce.cloud.upload import DISK_FORMATS, FIRMWARE_TYPES, VISIBILITIES, upload_image_set
from hotsauce.commands.progress import ProgressBar
from hotsauce.errors import ConfigError
from hotsauce.events import Event
from hotsauce.host.signals import interruptible


def add_command(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "upload",
        help="upload an image set to OpenStack Glance",
        description="Verify the set's checksums, then upload the kernel (aki), the ramdisk (ari) "
        "and the root image (ami, linked to both through kernel_id/ramdisk_id). Credentials "
        "come from clouds.yaml, OS_CLOUD or OS_* variables, as the openstack client reads them.",
    )
    parser.add_argument(
        "set_path",
        metavar="SET",
        type=Path,
        help="the folder or tar.gz that `hotsauce build` wrote",
    )
    add_upload_arguments(parser, name_required=True)
    parser.add_argument("--json", action="store_true", help="print the image IDs as JSON")
    parser.set_defaults(run=run_upload)


def add_upload_arguments(parser: argparse.ArgumentParser, *, name_required: bool) -> None:
    """The flags `upload` shares with `build --upload`."""
    parser.add_argument(
        "--name",
        required=name_required,
        help="image name: NAME, NAME-kernel and NAME-ramdisk in Glance",
    )
    parser.add_argument(
        "--os-cloud",
        dest="cloud",
        default=None,
        help="cloud from clouds.yaml (default: $OS_CLOUD or the OS_* variables)",
    )
    parser.add_argument(
        "--disk-format",
        default="ami",
        choices=DISK_FORMATS,
        help="ami (default, EC2 style) or qcow2/raw for a bare disk image; a whole-disk set: one of "
        "its files' formats (default: its first file)",
    )
    parser.add_argument(
        "--firmware",
        default=None,
        choices=FIRMWARE_TYPES,
        help="a whole-disk set: hw_firmware_type (default: uefi for a UEFI-only disk, else bios)",
    )
    parser.add_argument(
        "--property",
        dest="properties",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an image property (repeatable)",
    )
    parser.add_argument(
        "--visibility",
        choices=VISIBILITIES,
        default=None,
        help="image visibility (default: Glance's)",
    )
    parser.add_argument(
        "--tag",
        dest="tags",
        action="append",
        default=[],
        metavar="TAG",
        help="an image tag (repeatable)",
    )
    parser.add_argument(
        "--replace",
        action="store_true",
        help="replace the set of this name: upload the new one, then delete the old",
    )


def parse_properties(pairs: list[str]) -> dict[str, str]:
    properties: dict[str, str] = {}
    for pair in pairs:
        key, separator, value = pair.partition("=")
        if not separator or not key:
            raise ConfigError(f"--property {pair!r}: expected KEY=VALUE")
        properties[key] = value
    return properties


class UploadReporter:
    """One progress bar per file on a terminal; a line per finished file otherwise."""

    def __init__(self, stream: TextIO = sys.stderr) -> None:
        self.stream = stream
        self.bar = ProgressBar(stream, finished_lines=True)

    def __call__(self, event: Event) -> None:
        if event.kind == "progress":
            self.bar.update(event.message, int(event.data["done"]), int(event.data["total"]))
            return
        self.bar.end()
        if event.kind in ("info", "warning"):
            prefix = "warning: " if event.kind == "warning" else ""
            self.stream.write(f"{prefix}{event.message}\n")
        elif event.kind == "stage-failed":
            self.stream.write(f"{event.stage} failed\n")


def upload_arguments(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments of upload_image_set from the flags of add_upload_arguments."""
    return {
        "name": args.name,
        "cloud": args.cloud,
        "disk_format": args.disk_format,
        "properties": parse_properties(args.properties),
        "visibility": args.visibility,
        "tags": args.tags,
        "replace": args.replace,
        "firmware": args.firmware,
    }


def run_upload(args: argparse.Namespace) -> int:
    with interruptible():
        result = upload_image_set(args.set_path, **upload_arguments(args), emit=UploadReporter())
    if args.json:
        print(result.to_json())
    else:
        print(f"kernel  {result.kernel_id or '-'}")
        print(f"ramdisk {result.ramdisk_id or '-'}")
        print(f"image   {result.image_id}")
    return 0
