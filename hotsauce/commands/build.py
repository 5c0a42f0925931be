"""`hotsauce build`: the flags of the original tool, and a few more."""

from __future__ import annotations

import argparse
import errno
import os
import tempfile
from pathlib import Path
from typing import Any

from hotsauce.build import build
from hotsauce.cloud.upload import upload_image_set
from hotsauce.commands.progress import TerminalReporter
from hotsauce.commands.upload import UploadReporter, add_upload_arguments, upload_arguments
from hotsauce.config import DEFAULT_CONFIG_NAME, BuildOptions, FsType, ImageFormat, load_config
from hotsauce.errors import ConfigError, HotsauceError, ModuleFailed
from hotsauce.events import Emit, Event
from hotsauce.host.signals import interruptible
from hotsauce.host.sizes import human_size, parse_size
from hotsauce.image.disk import check_size
from hotsauce.image.layout import parse_boot_mode, parse_layout
from hotsauce.output.formats import parse_compression, parse_formats

NO_SPACE = "No space left on device"
# Below this much free space a folder counts as full (filesystems keep a little back).
FULL_BELOW_BYTES = 1 << 20


def add_command(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "build", help="build an image set from build.yaml",
        description="Allocate a raw image, partition, format and mount it, fill it from the base, "
        "run the modules in order, and write an EC2-style image set (root image, kernel, ramdisk, "
        "libvirt.xml, manifest.json, a .sha256 per file).",
    )
    parser.add_argument("-s", "--size", required=True, help="size of the disk image, as qemu-img reads it (512M, 4G)")
    parser.add_argument("-o", "--output", required=True, type=Path,
                        help="where the set goes: a folder, or with -x a tar.gz; written only on success")
    parser.add_argument("-x", "--compress", action="store_true", help="pack the set into the tar.gz named by -o")
    parser.add_argument("-c", "--config", type=Path, default=None,
                        help=f"build description (default: ./{DEFAULT_CONFIG_NAME}; without one, the default image)")
    parser.add_argument("--fs-type", default=FsType.EXT4.value,
                        help="root filesystem: " + ", ".join(f.value for f in FsType) + " (default: ext4)")
    parser.add_argument("--strip", action=argparse.BooleanOptionalAction, default=True,
                        help="cut the partition table off the root image (default); --no-strip keeps the whole disk")
    parser.add_argument("--format", dest="image_format", default=None,
                        help="image format: qcow2 (default) or raw; with --layout disk one or more, "
                        "comma-separated, of qcow2, raw, vmdk (stream-optimized), vhdx, vhd (fixed)")
    parser.add_argument("--layout", default=None,
                        help="ec2 (default): root image, kernel and ramdisk; disk: one GPT disk that BIOS and "
                        "UEFI firmware boot through GRUB")
    parser.add_argument("--boot", default=None, help="with --layout disk: bios, uefi or hybrid (default)")
    parser.add_argument("--qcow2-compression", default=None,
                        help="with --layout disk: compress the qcow2 file: none (default), zlib, zstd")
    parser.add_argument("--force", action="store_true", help="replace an existing -o")
    parser.add_argument("--no-cache", dest="use_cache", action="store_false", help="build without the cache")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="cache folder (default: cache_dir in build.yaml, $HOTSAUCE_CACHE, ~/.cache/hotsauce)")
    parser.add_argument("--work-dir", type=Path, default=None, help="where temporary files go (default: $TMPDIR)")
    parser.add_argument("--upload", action="store_true",
                        help="after the build, upload the set to OpenStack Glance (see `hotsauce upload --help`)")
    add_upload_arguments(parser, name_required=False)
    parser.add_argument("--boot-check", action="store_true",
                        help="boot the finished set in QEMU before writing -o; fail the build if it does not come up")
    parser.add_argument("--check", dest="checks", action="append", default=[], metavar="CMD",
                        help="with --boot-check: a command that must succeed inside the booted guest (repeatable)")
    parser.set_defaults(run=run_build)


def options_from(args: argparse.Namespace) -> BuildOptions:
    if args.checks and not args.boot_check:
        raise ConfigError("--check: only with --boot-check")
    try:
        fs_type = FsType(args.fs_type)
    except ValueError:
        raise ConfigError(f"--fs-type: unsupported {args.fs_type!r}; choose one of "
                          + ", ".join(f.value for f in FsType)) from None
    formats = parse_formats(args.image_format, "--format") if args.image_format is not None else None
    ec2_formats = {f.value for f in ImageFormat}
    image_format = ImageFormat(formats[0].value) if formats and formats[0].value in ec2_formats else None
    size = parse_size(args.size)
    check_size(size)
    return BuildOptions(
        size=size,
        output=args.output,
        compress=args.compress,
        fs_type=fs_type,
        strip=args.strip,
        image_format=image_format or ImageFormat.QCOW2,
        formats=formats,
        layout=parse_layout(args.layout, "--layout") if args.layout is not None else None,
        boot=parse_boot_mode(args.boot, "--boot") if args.boot is not None else None,
        qcow2_compression=(parse_compression(args.qcow2_compression, "--qcow2-compression")
                           if args.qcow2_compression is not None else None),
        force=args.force,
        use_cache=args.use_cache,
        cache_dir=args.cache_dir,
        work_dir=args.work_dir,
        boot_checks=tuple(args.checks) if args.boot_check else None,
    )


def config_path(args: argparse.Namespace) -> Path | None:
    """-c names a file that must exist; without -c, ./build.yaml if present, else the default."""
    if args.config is not None:
        return Path(args.config)
    default = Path(DEFAULT_CONFIG_NAME)
    return default if default.exists() else None


class StageTracker:
    """Passes events on, remembering the stage a failure happened in and which folders were full.

    Fullness is looked at when the stage fails, before the build releases
    its files: by the time the error reaches the CLI the space is free again.
    """

    def __init__(self, emit: Emit, folders: dict[str, Path]) -> None:
        self.emit = emit
        self.folders = folders
        self.stage = "config"
        self.full: list[str] = []

    def __call__(self, event: Event) -> None:
        if event.kind in ("stage-start", "stage-failed"):
            self.stage = event.stage
        if event.kind == "stage-failed":
            self.full = [f"{what} {folder} is full" for what, folder in self.folders.items()
                         if _free_bytes(folder) < FULL_BELOW_BYTES]
        self.emit(event)


def run_build(args: argparse.Namespace) -> int:
    options = options_from(args)
    config = load_config(config_path(args))
    upload = _upload_request(args)
    folders = {"the work folder": (options.work_dir or Path(tempfile.gettempdir())).absolute(),
               "the output folder": options.output.absolute().parent}
    tracker = StageTracker(TerminalReporter(), folders)
    try:
        build(config, options, tracker)
    except (HotsauceError, OSError) as error:
        if args.debug:
            raise
        raise located(error, tracker, options) from error
    if upload is not None:
        with interruptible():
            result = upload_image_set(options.output, **upload, emit=UploadReporter())
        print(f"uploaded: kernel {result.kernel_id or '-'}, ramdisk {result.ramdisk_id or '-'}, "
              f"image {result.image_id}")
    return 0


def _upload_request(args: argparse.Namespace) -> dict[str, Any] | None:
    """The upload that follows the build, checked before the build starts."""
    if not args.upload:
        if args.name or args.properties or args.tags or args.replace:
            raise ConfigError("--name, --property, --tag and --replace go with --upload")
        return None
    if not args.name:
        raise ConfigError("--upload: needs --name, the image's name in Glance")
    return upload_arguments(args)


def located(error: HotsauceError | OSError, tracker: StageTracker, options: BuildOptions) -> HotsauceError:
    """The error as one line that says in which stage it happened and, for a full disk, which disk."""
    if isinstance(error, ConfigError):
        return error
    stage = tracker.stage
    message = str(error) if isinstance(error, HotsauceError) else _describe_os_error(error)
    if hint := _space_hint(error, message, tracker, options):
        message = f"{message} ({hint})"
    already_says_where = isinstance(error, ModuleFailed) or message.startswith(f"{stage}:")
    located_error = HotsauceError(message if already_says_where else f"{stage}: {message}")
    located_error.exit_status = getattr(error, "exit_status", 1)
    return located_error


def _describe_os_error(error: OSError) -> str:
    where = f": {error.filename}" if error.filename else ""
    return f"{error.strerror or error}{where}"


def _space_hint(error: HotsauceError | OSError, message: str, tracker: StageTracker,
                options: BuildOptions) -> str | None:
    """Name the folder that filled up; if none did, it was the image itself."""
    full = tracker.full or [f"{what} {folder} is full" for what, folder in tracker.folders.items()
                            if _free_bytes(folder) < FULL_BELOW_BYTES]
    if full:
        return "; ".join(full)
    out_of_space = (isinstance(error, OSError) and error.errno == errno.ENOSPC) or NO_SPACE in message
    if out_of_space and tracker.stage in ("base", "modules", "finish"):
        return f"the image is full: -s {human_size(options.size)} is too small for the base and modules"
    return None


def _free_bytes(folder: Path) -> int:
    try:
        stats = os.statvfs(folder)
    except OSError:
        return FULL_BELOW_BYTES  # cannot tell: do not blame it
    return stats.f_bavail * stats.f_frsize
