"""`hotsauce unpack`: an image set as a folder that `virsh define` takes as it is."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hotsauce.boot.qemu import Accel, parse_accel
from hotsauce.errors import ConfigError
from hotsauce.events import Event
from hotsauce.host.signals import interruptible
from hotsauce.output.imageset import LIBVIRT_NAME
from hotsauce.output.unpack import place_moved_set, unpack_set


def add_command(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "unpack",
        help="unpack a tar.gz image set into a folder, ready for `virsh define`",
        usage="hotsauce unpack [options] SET.tar.gz DIR\n       hotsauce unpack [options] --in-place DIR",
        description=f"Unpack SET.tar.gz into the new folder DIR, verify every checksum, and write "
        f"{LIBVIRT_NAME} with the paths where the files now are. With --in-place DIR, rewrite the "
        f"{LIBVIRT_NAME} of a set folder that was moved or copied.",
    )
    parser.add_argument("paths", nargs="+", type=Path, metavar="PATH",
                        help="the archive and the new folder; with --in-place, the set folder")
    parser.add_argument("--in-place", action="store_true",
                        help="rewrite the libvirt.xml of the set folder DIR for where it is now")
    parser.add_argument(
        "--accel", type=parse_accel, default=Accel.AUTO, metavar="tcg|kvm|auto",
        help="the domain's type: auto (default) kvm when a quick probe shows KVM runs the set's "
        "kernel here, qemu (TCG) otherwise; tcg: always qemu; kvm: kvm, after the probe",
    )  # fmt: skip
    parser.add_argument(
        "--network", default=None, metavar="NAME",
        help="attach to this libvirt network (e.g. default) instead of user-mode networking",
    )  # fmt: skip
    parser.set_defaults(run=run_unpack)


def run_unpack(args: argparse.Namespace) -> int:
    wanted = 1 if args.in_place else 2
    if len(args.paths) != wanted:
        usage = "hotsauce unpack --in-place DIR" if args.in_place else "hotsauce unpack SET.tar.gz DIR"
        raise ConfigError(f"expected {usage}")
    with interruptible():
        if args.in_place:
            folder = args.paths[0]
            place_moved_set(folder, accel=args.accel, network=args.network, emit=_info_on_stderr)
        else:
            archive, folder = args.paths
            unpack_set(archive, folder, accel=args.accel, network=args.network, emit=_info_on_stderr)
    print(folder.absolute() / LIBVIRT_NAME)
    return 0


def _info_on_stderr(event: Event) -> None:
    if event.message:
        print(f"hotsauce: {event.message}", file=sys.stderr)
