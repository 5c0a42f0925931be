"""The `hotsauce` command: a thin layer over the library.

Each subcommand module offers `add_command(subparsers)`, which adds its
parser and sets `run` to a function taking the parsed arguments and
returning the exit status. Errors become one line; tracebacks need --debug.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from hotsauce.errors import HotsauceError, Interrupted

# Modules that add a subcommand, in the order `hotsauce --help` lists them.
COMMAND_MODULES = (
    "hotsauce.commands.build",
    "hotsauce.commands.boot",
    "hotsauce.commands.upload",
    "hotsauce.commands.init",
    "hotsauce.commands.schema",
    "hotsauce.commands.cache",
    "hotsauce.commands.cleanup",
)


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hotsauce",
        description="Build disk images from a base and an ordered list of Ansible roles, "
        "playbooks and Python modules; write an EC2-style image set.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug output")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_command(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    try:
        status: int = args.run(args)
        return status
    except HotsauceError as error:
        if args.debug:
            raise
        print(f"hotsauce: {error}", file=sys.stderr)
        return error.exit_status
    except KeyboardInterrupt:
        if args.debug:
            raise
        print(f"hotsauce: {Interrupted('interrupted by SIGINT; everything held was released')}",
              file=sys.stderr)
        return Interrupted.exit_status


if __name__ == "__main__":
    sys.exit(main())
