"""`hotsauce schema`: build.yaml's JSON Schema, from the table of keys in hotsauce.config.

YAML language servers (editors) read it through the first line that `hotsauce
init` writes, `# yaml-language-server: $schema=build.schema.json`:
`hotsauce schema > build.schema.json` refreshes the file after an upgrade.
`--markdown` prints the README's table of keys instead.
"""

from __future__ import annotations

import argparse
import json

from hotsauce.config import json_schema, keys_table_markdown


def add_command(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("schema", help="print the JSON Schema of build.yaml (for editors)")
    parser.add_argument("--markdown", action="store_true", help="print the README's table of build.yaml keys instead")
    parser.set_defaults(run=run_schema)


def schema_text() -> str:
    return json.dumps(json_schema(), indent=2) + "\n"


def run_schema(args: argparse.Namespace) -> int:
    print(keys_table_markdown() if args.markdown else schema_text(), end="")
    return 0
