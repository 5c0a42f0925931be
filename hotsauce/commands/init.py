"""`hotsauce init`: write the default build.yaml, commented, as a starting point."""

from __future__ import annotations

import argparse
from pathlib import Path

from hotsauce.config import DEFAULT_CONFIG_NAME, default_config_text
from hotsauce.errors import ConfigError


def add_command(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("init", help=f"write the default {DEFAULT_CONFIG_NAME} here")
    parser.add_argument("--force", action="store_true", help=f"replace an existing {DEFAULT_CONFIG_NAME}")
    parser.set_defaults(run=run_init)


def run_init(args: argparse.Namespace) -> int:
    target = Path(DEFAULT_CONFIG_NAME)
    if target.exists() and not args.force:
        raise ConfigError(f"{target.absolute()}: already exists (use --force to replace it)")
    target.write_text(default_config_text())
    print(f"wrote {target.absolute()}")
    return 0
