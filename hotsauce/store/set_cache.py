"""Finished image sets, kept in the cache so a build whose inputs did not change writes the same
set again without allocating, filling or converting anything.

A set is keyed by the key of the root after the last module run (which
chains the base, the configuration and every module: see
hotsauce.modules.result_cache) and by every build option that shapes the
files: layout, boot, formats, compression, size, filesystem, strip. It is
kept as hard links of the staging folder's files, so keeping it costs no
copy; since the published files are the same inodes until something writes
them, every file is checked against its checksum before it is used again,
and a set that no longer matches is thrown away. Used sets are copied out,
never linked, so two outputs never share a file.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict
from pathlib import Path

from hotsauce.config import BuildOptions
from hotsauce.errors import HotsauceError
from hotsauce.host.release import remove
from hotsauce.output.imageset import CHECKSUM_SUFFIX, Manifest, verify_set
from hotsauce.store.cache import Cache

KIND = "sets"
KEEP_NEWEST = 2  # each is a whole image set
# Options that change where or how the set is delivered, not what its files hold.
DELIVERY_OPTIONS = ("output", "compress", "force", "use_cache", "cache_dir", "work_dir", "boot_checks")
# What the environment can change in the files: the time reproducible builds clamp to.
SHAPING_ENVIRONMENT = ("SOURCE_DATE_EPOCH",)
# Rewritten for every build (its id and time), so never taken from the cache as they are.
PER_BUILD_FILES = frozenset({"manifest.json", "libvirt.xml"})


def set_key(root_key: str, options: BuildOptions) -> str:
    shaping = {name: value for name, value in asdict(options).items() if name not in DELIVERY_OPTIONS}
    environment = {name: os.environ.get(name) for name in SHAPING_ENVIRONMENT}
    text = json.dumps({"root": root_key, "options": shaping, "environment": environment},
                      sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def entry_name(key: str) -> str:
    return f"set-{key[:32]}"


def reuse(cache: Cache, key: str, staging: Path) -> Path | None:
    """Copy the kept set of `key` into the (empty) staging folder; the entry used, or None when
    there is none or it no longer matches its checksums (then it is thrown away)."""
    with cache.locked(KIND, entry_name(key)) as entry:
        if not entry.is_dir():
            return None
        try:
            manifest = verify_set(entry, skipping=PER_BUILD_FILES)
        except HotsauceError:
            remove(entry)
            return None
        for name in _files_of(manifest):
            shutil.copyfile(entry / name, staging / name)
        os.utime(entry)  # recently used entries survive pruning
        return entry


def keep(cache: Cache, key: str, staging: Path) -> None:
    """Hard links of the finished set's files under `key` (nothing is copied)."""
    with cache.locked(KIND, entry_name(key)) as entry:
        if entry.is_dir():
            return
        partial = cache.temporary_name(entry)
        partial.mkdir()
        try:
            for name in _files_of(Manifest.read(staging)):
                os.link(staging / name, partial / name)
            cache.publish(partial, entry)
        finally:
            remove(partial)
    cache.prune(KIND, KEEP_NEWEST)


def _files_of(manifest: Manifest) -> list[str]:
    """The set's files with their checksums, and the manifest (which the reuse rewrites)."""
    names = [name for name in manifest.files() if name not in PER_BUILD_FILES]
    return [*names, *(name + CHECKSUM_SUFFIX for name in names), "manifest.json"]
