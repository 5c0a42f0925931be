"""Results of module runs, kept in the cache so an unchanged build skips its modules.

After each run of modules, the root is archived under a key that chains
everything that shaped it: the base, the configuration (all but the module
list), and, for each module so far, its kind, name, vars and the digest of
its files. A later build restores the longest prefix of its runs that is
cached and runs only what follows, so changing the last module re-runs
only the last module.

What a module reads from the host beyond its own files (a role's `files/`
count; a Python module opening /srv/something does not) is not seen: such a
build wants --no-cache. The rpm files named by `rpms` are part of the key.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hotsauce import __version__
from hotsauce.config import BuildConfig, DownloadBase, ModuleKind
from hotsauce.events import Emit, Event
from hotsauce.modules.resolve import ResolvedModule
from hotsauce.store import snapshots
from hotsauce.store.cache import Cache

KIND = "modules"
KEEP_NEWEST = 12
# A build's last module run is not archived when it took less than this. Its archive serves only a
# later build that changes or adds a module after it, or one whose kept set is gone (an identical
# build copies the kept set); archiving a root takes about 2 s, as long as a quick run takes again,
# and a build that changes its last module, the usual edit, would pay it every time for nothing.
CHEAP_LAST_RUN_SECONDS = 5.0
RAN_SUFFIX = ".ran"
# Folders beside a playbook that it commonly reads; the playbook's own folder may be the project's.
PLAYBOOK_COMPANIONS = ("roles", "files", "templates", "vars", "group_vars", "host_vars", "tasks", "handlers")
# Files this large are known by size and time instead of being read whole.
LARGE_FILE_BYTES = 64 << 20


@dataclass(frozen=True)
class ModuleLayers:
    """The chain of keys of one build's module runs, and where their archives live."""

    cache: Cache
    keys: tuple[str, ...]  # keys[i]: the root after runs[0..i]

    def entry_name(self, index: int) -> str:
        return f"after-{self.keys[index][:32]}.tar.zst"

    def entry(self, index: int) -> Path:
        return self.cache.folder(KIND) / self.entry_name(index)

    def ran_name(self, index: int) -> str:
        """The record of a run that completed but was not archived (an empty entry and its key)."""
        return f"after-{self.keys[index][:32]}{RAN_SUFFIX}"

    def restore_newest(self, root: Path, emit: Emit) -> int:
        """Unpack the longest cached prefix into `root`; how many runs it covers (0: none)."""
        for index in reversed(range(len(self.keys))):
            with self.cache.locked(KIND, self.entry(index).name) as entry:
                if not entry.is_file():
                    continue
                if not snapshots.unpack(entry, root):
                    emit(Event("warning", "base", f"the cached result of module runs 1-{index + 1} "
                                                  f"({entry.name}) was cut short: thrown away"))
                    continue
                os.utime(entry)  # recently used entries survive pruning
                emit(Event("info", "base", f"module runs 1-{index + 1} of {len(self.keys)} served from the "
                                           f"cache ({entry.name})", {"cached": True, "runs": index + 1}))
                return index + 1
        if self.keys:
            emit(Event("info", "base", "module runs not in the cache: none ran before with this base, "
                                       "configuration and first module", {"cached": False}))
        return 0

    def store(self, index: int, root: Path) -> None:
        with self.cache.locked(KIND, self.entry(index).name) as entry:
            if not entry.is_file():
                snapshots.store(root, entry, {"key": self.keys[index], "run": index})
        self.cache.prune(KIND, KEEP_NEWEST)

    def record_ran(self, index: int, seconds: float) -> None:
        """Say that run `index` completed in `seconds` without archiving it (`hotsauce plan` reads it)."""
        with self.cache.locked(KIND, self.ran_name(index)) as record:
            partial = Cache.temporary_name(record)
            partial.write_bytes(b"")
            Cache.write_key(record, {"key": self.keys[index], "run": index, "archived": False,
                                     "seconds": round(seconds, 1)})
            Cache.publish(partial, record)
        self.cache.prune(KIND, KEEP_NEWEST)


def worth_keeping(is_last: bool, seconds: float) -> bool:
    """Whether a module run that took `seconds` is archived: every one but a quick last one."""
    return not is_last or seconds >= CHEAP_LAST_RUN_SECONDS


def layers_for(cache: Cache, base_identity: str, config: BuildConfig,
               runs: Sequence[Sequence[ResolvedModule]]) -> ModuleLayers:
    chain = _digest({
        "hotsauce": __version__,
        "snapshot": snapshots.FORMAT,
        "base": base_identity,
        "configuration": {k: v for k, v in config.data.items() if k != "modules"},
        "build_dir": str(config.directory),
        "rpms": _rpm_files(config),
    })
    keys = []
    for run in runs:
        for module in run:
            chain = _digest({"before": chain, "kind": module.kind.value, "name": module.name,
                             "vars": module.ref.vars, "files": module_digest(module)})
        keys.append(chain)
    return ModuleLayers(cache, tuple(keys))


def download_identity(base: DownloadBase, archive: Path) -> str:
    """What a download base holds, for the chain's start: known from the download itself (a
    root_file pulled out of it is new every build)."""
    return f"download:{base.sha256 or file_digest(archive)}:{base.root_file or ''}"


def module_digest(module: ResolvedModule) -> str:
    if module.kind is ModuleKind.PLAYBOOK:
        folder = module.path.parent
        return _digest([tree_digest(module.path), *(tree_digest(folder / c) for c in PLAYBOOK_COMPANIONS)])
    return tree_digest(module.path)


def tree_digest(path: Path) -> str:
    """Names, kinds, link targets and contents of every file under `path` (or of `path` itself)."""
    digest = hashlib.sha256()
    for item in _walk(path):
        relative = str(item.relative_to(path)) if item != path else "."
        if item.is_symlink():
            digest.update(f"L {relative} {os.readlink(item)}\n".encode())
        elif item.is_file():
            digest.update(f"F {relative} {oct(item.stat().st_mode & 0o7777)}\n".encode())
            digest.update(file_digest(item).encode())
        elif item.is_dir():
            digest.update(f"D {relative}\n".encode())
    return digest.hexdigest()


def _walk(path: Path) -> Iterable[Path]:
    if not path.exists() and not path.is_symlink():
        return
    yield path
    if path.is_dir() and not path.is_symlink():
        yield from sorted(path.rglob("*"))


def file_digest(path: Path) -> str:
    """What a file holds: its sha256, or for a large file its size and modification time."""
    stat = path.stat()
    if stat.st_size > LARGE_FILE_BYTES:
        return f"{stat.st_size}:{stat.st_mtime_ns}"
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _rpm_files(config: BuildConfig) -> list[str]:
    return [f"{p}:{file_digest(p)}" for entry in config.data.get("rpms", []) or []
            for p in _rpms_of(config.directory / str(entry))]


def _rpms_of(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(path.glob("*.rpm"))
    return [path] if path.is_file() else []


def _digest(value: Mapping[str, Any] | list[Any]) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()
