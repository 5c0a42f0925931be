"""`hotsauce boot SET`: boot an image set in QEMU and run checks inside the guest."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from hotsauce.boot.boot_set import (
    DEFAULT_TIMEOUT_SECONDS,
    BootResult,
    boot_image_set,
    console_command,
)
from hotsauce.boot.firmware import parse_firmware
from hotsauce.boot.qemu import Accel, parse_accel
from hotsauce.errors import BootFailed, ConfigError
from hotsauce.events import Event
from hotsauce.host.signals import interruptible
from hotsauce.host.sizes import parse_size


def add_command(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "boot",
        help="boot an image set in QEMU and check it from inside the guest",
        description="Boot the image set (a folder or tar.gz that `hotsauce build` wrote) in QEMU, "
        "wait for its default target, run each --check inside the guest, power it off. "
        "Exit 0 only if the guest came up and every check passed. The image is never changed.",
    )
    parser.add_argument("set_path", metavar="SET", type=Path, help="image set folder or tar.gz")
    parser.add_argument(
        "--check", dest="checks", action="append", default=[], metavar="CMD",
        help="a shell command to run as root inside the booted guest; may be repeated",
    )  # fmt: skip
    parser.add_argument(
        "--timeout", type=float, default=DEFAULT_TIMEOUT_SECONDS, metavar="S",
        help=f"give up after S seconds, checks included (default {DEFAULT_TIMEOUT_SECONDS:g})",
    )  # fmt: skip
    parser.add_argument(
        "--log-dir", type=Path, default=None, metavar="DIR",
        help="keep the serial console log in DIR (default: a new folder under the temp dir)",
    )  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print the verdict as JSON on stdout")
    parser.add_argument(
        "--console", action="store_true",
        help="an interactive serial console on this terminal instead (Ctrl-A X quits)",
    )  # fmt: skip
    parser.add_argument(
        "--autologin", action="store_true",
        help="with --console: log root in on the console (the image is not changed: the override "
        "lives in the guest's /run for this boot only)",
    )  # fmt: skip
    parser.add_argument(
        "--accel", type=parse_accel, default=Accel.TCG, metavar="tcg|kvm|auto",
        help="tcg (default): software emulation; kvm: KVM, after a quick probe that it "
        "really runs the kernel; auto: KVM when that probe passes, tcg otherwise",
    )  # fmt: skip
    parser.add_argument(
        "--firmware", type=parse_firmware, default=None, metavar="bios|uefi",
        help="a whole-disk set: boot through SeaBIOS (bios) or OVMF (uefi); default: the first it supports",
    )  # fmt: skip
    parser.add_argument(
        "--disk-size", type=parse_size, default=None, metavar="SIZE",
        help="a whole-disk set: give the guest a disk of SIZE (larger than the image, as a cloud volume)",
    )  # fmt: skip
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    with interruptible():
        if args.console:
            return console_command(args.set_path, accel=args.accel, autologin=args.autologin)
        if args.autologin:
            raise ConfigError("--autologin: only with --console")
        result = boot_image_set(
            args.set_path,
            checks=args.checks,
            timeout=args.timeout,
            log_dir=args.log_dir,
            emit=_progress_on_stderr,
            accel=args.accel,
            firmware=args.firmware,
            disk_size=args.disk_size,
        )
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
    else:
        _print_result(result)
    if not result.ok:
        raise BootFailed(result.failure_message())
    return 0


def _progress_on_stderr(event: Event) -> None:
    if event.message:
        print(f"hotsauce: {event.message}", file=sys.stderr)


def _print_result(result: BootResult) -> None:
    verdict = "booted" if result.booted else "did not boot"
    print(f"{verdict}: {result.reason} ({result.seconds:.0f} s)")
    for check in result.checks:
        print(f"check {check.command!r}: status {check.status}")
        for line in check.output.rstrip("\n").splitlines():
            print(f"    {line}")
    print(f"serial log: {result.serial_log}")
