"""`hotsauce init`: write the default build.yaml, commented, and its JSON Schema beside it."""

from __future__ import annotations

import argparse
from pathlib import Path

from hotsauce.commands.schema import schema_text
from hotsauce.config import DEFAULT_CONFIG_NAME, SCHEMA_FILE_NAME, default_config_text
from hotsauce.errors import ConfigError


def add_command(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "init", help=f"write the default {DEFAULT_CONFIG_NAME} here, and {SCHEMA_FILE_NAME} for editors")
    parser.add_argument("--force", action="store_true",
                        help=f"replace an existing {DEFAULT_CONFIG_NAME} and {SCHEMA_FILE_NAME}")
    parser.set_defaults(run=run_init)


def run_init(args: argparse.Namespace) -> int:
    # The build.yaml's first line names the schema by this relative path; editors resolve it beside the file.
    targets = {Path(DEFAULT_CONFIG_NAME): default_config_text(), Path(SCHEMA_FILE_NAME): schema_text()}
    for target in targets:
        if target.exists() and not args.force:
            raise ConfigError(f"{target.absolute()}: already exists (use --force to replace it)")
    for target, text in targets.items():
        target.write_text(text)
        print(f"wrote {target.absolute()}")
    return 0
