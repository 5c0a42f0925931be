"""`hotsauce fleet`: many build folders built on the builders of an Ansible inventory."""

from __future__ import annotations

import argparse
import shlex
import sys
import threading
from pathlib import Path

from hotsauce.fleet.controller import REPORT_NAME, FleetRequest, report_table, run_fleet
from hotsauce.fleet.schedule import Status


def add_command(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "fleet", help="build many build folders on the builders of an Ansible inventory",
        description="Prepare each host of the inventory's `builders` group (hotsauce from this controller's "
        "wheel, the Debian packages it needs, a check for root, loop devices and free disk), copy each build "
        "folder to a builder, run `hotsauce build` there, fetch the set back to OUTDIR/NAME/ and verify its "
        "checksums. A failed build is retried once on another builder; a builder lost mid-build gives its "
        "builds to the others; a set already in OUTDIR and verified is skipped. Writes OUTDIR/fleet.json.",
    )
    parser.add_argument("builds", nargs="+", type=Path, metavar="BUILD",
                        help="a folder with a build.yaml; its name names the set")
    parser.add_argument("-i", "--inventory", required=True, type=Path,
                        help="an Ansible inventory with a `builders` group (see inventory/example.yml)")
    parser.add_argument("-o", "--output", required=True, type=Path, metavar="OUTDIR",
                        help="where the sets go, one folder per build, with a NAME.log beside each")
    parser.add_argument("-s", "--size", default="4G", help="size of each disk image (default: 4G)")
    parser.add_argument("--build-args", default="", metavar="ARGS",
                        help="more `hotsauce build` flags for every build, in one string (\"--fs-type xfs\")")
    parser.add_argument("--wheel", type=Path, default=None,
                        help="the hotsauce wheel to install on the builders (default: built from this checkout)")
    parser.set_defaults(run=run_fleet_command)


def run_fleet_command(args: argparse.Namespace) -> int:
    request = FleetRequest(builds=args.builds, inventory=args.inventory, outdir=args.output,
                           build_args=["-s", args.size, *shlex.split(args.build_args)], wheel=args.wheel)
    cancelled = threading.Event()

    def say(line: str) -> None:
        print(f"fleet: {line}", file=sys.stderr, flush=True)

    try:
        records = run_fleet(request, say, cancelled)
    except BaseException:
        cancelled.set()  # the workers' ansible-runner runs stop
        raise
    print(report_table(records))
    print(f"report: {args.output / REPORT_NAME}")
    return 0 if all(r.status in (Status.BUILT, Status.SKIPPED) for r in records) else 1
