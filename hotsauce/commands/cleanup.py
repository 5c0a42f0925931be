"""`hotsauce cleanup`: release what builds left behind.

A build killed with SIGKILL cannot release anything, and a build can find a
mount it cannot release; its ledger (see hotsauce.host.ledger) says what it
still held. Builds still running are left alone.
"""

from __future__ import annotations

import argparse
import sys

from hotsauce.errors import HotsauceError
from hotsauce.host import ledger, release


def add_command(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "cleanup",
        help="release what builds left behind",
        description="Find builds that ended without releasing what they held (killed with SIGKILL, "
        "the machine lost power, or a mount they could not release) and release it in reverse order: "
        "their child processes, swap files and processes that keep their mounts busy, mounts, loop "
        f"devices, temporary and staging files. Ledgers live in {ledger.DEFAULT_RUN_DIR} "
        f"(or ${ledger.RUN_DIR_ENV}).",
    )
    parser.add_argument("-n", "--dry-run", action="store_true", help="only list what would be released")
    parser.set_defaults(run=run_cleanup)


def run_cleanup(args: argparse.Namespace) -> int:
    leftovers = ledger.find_leftovers()
    if not leftovers:
        print("nothing to clean up", file=sys.stderr)
        return 0
    status = 0
    for leftover in leftovers:
        print(f"build {leftover.pid} ({' '.join(leftover.argv) or 'unknown command'}):", file=sys.stderr)
        if args.dry_run:
            for holding in reversed(leftover.holdings):
                print(f"    would release {holding.describe()}", file=sys.stderr)
            continue
        try:
            released = release.release_leftover(leftover)
        except HotsauceError as error:
            print(f"hotsauce: could not release everything of build {leftover.pid}: {error}", file=sys.stderr)
            status = 1
            continue
        for what in released:
            print(f"    released {what}", file=sys.stderr)
    return status
