"""`hotsauce build`: the flags of the original tool, and a few more."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from hotsauce.build import build
from hotsauce.cloud.upload import upload_image_set
from hotsauce.commands.progress import TerminalReporter
from hotsauce.commands.upload import UploadReporter, add_upload_arguments, upload_arguments
from hotsauce.config import DEFAULT_CONFIG_NAME, BuildOptions, FsType, ImageFormat, load_config
from hotsauce.errors import ConfigError
from hotsauce.host.signals import interruptible
from hotsauce.host.sizes import parse_size
from hotsauce.image.disk import check_size
from hotsauce.image.layout import parse_boot_mode, parse_layout
from hotsauce.modules.debug_shell import require_terminal
from hotsauce.output.formats import parse_compression, parse_formats


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
    parser.add_argument("--shell-on-failure", action="store_true",
                        help="when a module fails, open a shell in the image root before anything is released "
                        "(needs a terminal); exiting it fails the build as usual")
    parser.add_argument("--shell-before", metavar="MODULE", default=None,
                        help="open a shell in the image root just before MODULE runs (needs a terminal); "
                        "exiting it goes on with the build")
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
    for flag, wanted in (("--shell-on-failure", args.shell_on_failure), ("--shell-before", args.shell_before)):
        if wanted:
            require_terminal(flag)
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
        shell_on_failure=args.shell_on_failure,
        shell_before=args.shell_before,
    )


def config_path(args: argparse.Namespace) -> Path | None:
    """-c names a file that must exist; without -c, ./build.yaml if present, else the default."""
    if args.config is not None:
        return Path(args.config)
    default = Path(DEFAULT_CONFIG_NAME)
    return default if default.exists() else None


def run_build(args: argparse.Namespace) -> int:
    """The build, its failure rendered as one line by the CLI: the library names the stage
    and, for a full disk, which disk (hotsauce.errors.BuildFailed)."""
    options = options_from(args)
    config = load_config(config_path(args))
    upload = _upload_request(args)
    build(config, options, TerminalReporter())
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
