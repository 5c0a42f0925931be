"""`hotsauce cache list` and `hotsauce cache clear`: what the cache holds, and emptying it."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from hotsauce.host.sizes import human_size
from hotsauce.store.cache import Cache, CacheEntry, default_cache_dir


def add_command(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "cache",
        help="list or clear the cache of bases and downloads",
        description="The cache folder is $HOTSAUCE_CACHE or ~/.cache/hotsauce"
        " unless --cache-dir says.",
    )
    parser.add_argument(
        "--cache-dir", type=Path, help="the cache folder (a build.yaml's cache_dir)"
    )
    actions = parser.add_subparsers(dest="cache_action", metavar="ACTION", required=True)
    actions.add_parser("list", help="show each entry: key, size, age").set_defaults(run=run_list)
    actions.add_parser("clear", help="remove every entry").set_defaults(run=run_clear)


def cache_of(args: argparse.Namespace) -> Cache:
    folder = args.cache_dir.expanduser().absolute() if args.cache_dir else default_cache_dir()
    return Cache(folder)


def run_list(args: argparse.Namespace) -> int:
    cache = cache_of(args)
    entries = cache.entries()
    if not entries:
        print(f"{cache.root}: empty")
        return 0
    now = time.time()
    print(f"{cache.root}:")
    print(f"{'SIZE':>8}  {'AGE':>6}  ENTRY / KEY")
    for entry in entries:
        print(f"{human_size(entry.size):>8}  {human_age(now - entry.modified):>6}  {entry.name}")
        if summary := key_summary(entry):
            print(f"{'':>8}  {'':>6}    {summary}")
    total = sum(entry.size for entry in entries)
    print(f"{human_size(total):>8}  total in {len(entries)} entries")
    return 0


def run_clear(args: argparse.Namespace) -> int:
    cache = cache_of(args)
    freed = cache.clear()
    print(f"{cache.root}: cleared, {human_size(freed)} freed")
    return 0


def key_summary(entry: CacheEntry) -> str:
    """The key on one line: `field=value` for each field, lists joined by commas."""
    if not entry.key:
        return ""
    parts = []
    for field, value in entry.key.items():
        if isinstance(value, dict):
            value = " / ".join(str(v) for v in value.values())
        elif isinstance(value, list):
            value = ",".join(str(item) for item in value) or "-"
        parts.append(f"{field}={value}")
    return "; ".join(parts)


def human_age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{max(seconds, 0):.0f}s"
