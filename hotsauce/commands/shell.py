"""`hotsauce shell`: a shell or a command inside a built set's root, without booting it."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hotsauce.errors import ConfigError
from hotsauce.events import Event, EventKind
from hotsauce.host.signals import interruptible
from hotsauce.output.set_shell import command_after_dashes, shell_in_set


def add_command(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "shell", help="run a shell or a command inside a built set's root, without booting it",
        usage="hotsauce shell [--write OUT] SET [-- COMMAND...]",
        description="Open the image set SET (a folder or tar.gz that `hotsauce build` wrote, either layout) "
        "copy-on-write and run COMMAND, or an interactive shell, inside its root in the build's sandbox. "
        "The set is never changed and changes are discarded; with --write OUT they are saved as a new set "
        "(a tar.gz when OUT ends in .tar.gz), written only when the command or shell exits 0. "
        "The exit status is the command's.",
    )
    parser.add_argument("set", type=Path, metavar="SET", help="the image set: a folder or a tar.gz")
    parser.add_argument("argv", nargs=argparse.REMAINDER, metavar="COMMAND",
                        help="after --: the command to run inside the root (default: a shell)")
    parser.add_argument("--write", type=Path, default=None, metavar="OUT",
                        help="save the changed root as a new set at OUT (a folder, or a tar.gz)")
    parser.set_defaults(run=run_shell)


def run_shell(args: argparse.Namespace) -> int:
    if args.argv and args.argv[0].startswith("-") and args.argv[0] != "--":
        raise ConfigError(f"hotsauce shell: {args.argv[0]}: options go before SET, the command after --")
    with interruptible():
        return shell_in_set(args.set, command_after_dashes(args.argv), write_to=args.write,
                            emit=_info_on_stderr)


def _info_on_stderr(event: Event) -> None:
    if event.message and event.kind != EventKind.PROGRESS:
        print(f"hotsauce: {event.message}", file=sys.stderr)
