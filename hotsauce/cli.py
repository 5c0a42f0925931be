"""The `hotsauce` command: a thin layer over the library.

Each subcommand module offers `add_command(subparsers)`, which adds its
parser and sets `run` to a function taking the parsed arguments and
returning the exit status. Errors become one line; tracebacks need --debug.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import os
import platform
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import hotsauce
from hotsauce.errors import HotsauceError, Interrupted

# Modules that add a subcommand, in the order `hotsauce --help` lists them.
COMMAND_MODULES = (
    "hotsauce.commands.build",
    "hotsauce.commands.plan",
    "hotsauce.commands.fleet",
    "hotsauce.commands.boot",
    "hotsauce.commands.upload",
    "hotsauce.commands.unpack",
    "hotsauce.commands.diff",
    "hotsauce.commands.shell",
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
    parser.add_argument("--version", action=VersionAction, help="show the versions in use and where they run from")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_command(subparsers)
    return parser


class VersionAction(argparse.Action):
    """--version, as `ansible --version` has it: worked out only when asked for."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *_: Any) -> None:
        try:
            print(version_report(), flush=True)
        except BrokenPipeError:  # `hotsauce --version | head -1`: the reader has what it wanted
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        parser.exit()


def version_report() -> str:
    """hotsauce's version, the ansible-core and ansible-runner it drives, and where each runs from.

    Ansible runs from the same environment as hotsauce (its ansible-playbook
    is found beside this Python), so the ansible package importable here is
    the one in use.
    """
    lines = [f"hotsauce {hotsauce.__version__}",
             f"  hotsauce python module location = {Path(hotsauce.__file__).parent}"]
    try:
        import ansible
        from ansible.release import __version__ as ansible_version
    except ImportError:
        lines.append("  ansible-core = not installed")
    else:
        lines += [f"  ansible-core = {ansible_version}",
                  f"  ansible python module location = {Path(ansible.__file__).parent}"]
    try:
        lines.append(f"  ansible-runner = {importlib.metadata.version('ansible-runner')}")
    except importlib.metadata.PackageNotFoundError:
        lines.append("  ansible-runner = not installed")
    lines += [f"  executable location = {os.path.abspath(sys.argv[0])}",
              f"  python version = {platform.python_version()} ({sys.executable})"]
    return "\n".join(lines)


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
