"""`hotsauce diff A B`: what changed between two image sets (packages, modules, files).

Exit status as diff(1)'s: 0 when the sets are the same, 1 when they differ,
2 when either cannot be read (bad input, or anything that failed on the way).
"""

from __future__ import annotations

import argparse
import json
import sys
from contextlib import ExitStack
from pathlib import Path

from hotsauce.errors import HotsauceError
from hotsauce.host import ledger
from hotsauce.host.signals import interruptible
from hotsauce.output.imageset import Manifest, opened_set, verify_set
from hotsauce.output.root_tree import root_files
from hotsauce.output.sbom import SBOM_NAME
from hotsauce.output.set_diff import SetDiff, compare_sboms, compare_trees, read_sbom

SAME, DIFFERENT, TROUBLE = 0, 1, 2


def add_command(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "diff",
        help="what changed between two image sets: packages, modules and files",
        description="Compare two image sets (folders or tar.gz): the packages added, removed and changed "
        f"and the modules changed (from each set's {SBOM_NAME}), and the files added, removed and changed "
        "in the root image (path, mode, owner, size, content digest; read from a read-only mount). "
        "Exit status: 0 the same, 1 different, 2 trouble.",
    )
    parser.add_argument("old", type=Path, metavar="A", help="the older set: a folder or a tar.gz")
    parser.add_argument("new", type=Path, metavar="B", help="the newer set: a folder or a tar.gz")
    parser.add_argument("--json", action="store_true", help="print the changes as JSON")
    parser.add_argument("--no-files", action="store_true",
                        help="compare packages and modules only, without mounting the root images")
    parser.set_defaults(run=run_diff)


def run_diff(args: argparse.Namespace) -> int:
    try:
        with interruptible():
            changes = diff_sets(args.old, args.new, files=not args.no_files)
    except HotsauceError as error:
        if args.debug:
            raise
        print(f"hotsauce: {error}", file=sys.stderr)
        return TROUBLE
    if args.json:
        print(json.dumps(changes.as_json(), indent=2))
    else:
        print("\n".join(changes.lines()))
    return SAME if changes.same else DIFFERENT


def diff_sets(old: Path, new: Path, *, files: bool = True) -> SetDiff:
    """Every change from set `old` to set `new`; both are verified against their checksums first."""
    with ExitStack() as held:
        held.enter_context(ledger.recording())
        folders = [held.enter_context(opened_set(path)) for path in (old, new)]
        manifests = [verify_set(folder) for folder in folders]
        changes = SetDiff()
        sboms = [_sbom_of(folder, manifest, path, changes.notes)
                 for folder, manifest, path in zip(folders, manifests, (old, new), strict=True)]
        if sboms[0] is not None and sboms[1] is not None:
            changes.packages, changes.modules = compare_sboms(sboms[0], sboms[1])
        if files:
            # one root at a time: two builds of one build.yaml may carry the same filesystem UUID
            trees = [root_files(folder, manifest) for folder, manifest in zip(folders, manifests, strict=True)]
            changes.files = compare_trees(trees[0], trees[1])
        return changes


def _sbom_of(folder: Path, manifest: Manifest, given: Path, notes: list[str]) -> dict[str, object] | None:
    if manifest.sbom is None:
        notes.append(f"{given} has no {SBOM_NAME}: packages and modules are not compared")
        return None
    return read_sbom(folder / manifest.sbom)
