"""Snapshots of a root in the cache: a base or the result of module runs, read back whole or
made again when the entry was cut short."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hotsauce.errors import CacheFull
from hotsauce.events import Event
from hotsauce.modules.result_cache import CHEAP_LAST_RUN_SECONDS, ModuleLayers, worth_keeping
from hotsauce.store import snapshots
from hotsauce.store.cache import Cache
from tests.filesystems import small_tmpfs


def a_root(folder: Path, marker: str) -> Path:
    (folder / "etc").mkdir(parents=True)
    (folder / "etc" / "marker").write_text(marker)
    (folder / "usr").mkdir()
    (folder / "usr" / "noise").write_bytes(bytes(range(256)) * 4096)  # enough to cut in the middle
    (folder / "lost+found").mkdir()
    return folder


def cut_short(entry: Path) -> None:
    with entry.open("r+b") as cut:
        cut.truncate(entry.stat().st_size // 2)


def test_a_snapshot_is_unpacked_as_it_was_stored(tmp_path: Path) -> None:
    entry = tmp_path / "cache" / "root.tar.zst"
    entry.parent.mkdir()
    snapshots.store(a_root(tmp_path / "root", "one"), entry, {"k": 1})
    target = tmp_path / "target"
    target.mkdir()
    assert snapshots.unpack(entry, target)
    assert (target / "etc" / "marker").read_text() == "one"
    assert not (target / "lost+found").exists()


def test_a_snapshot_cut_short_is_thrown_away_and_the_root_emptied_again(tmp_path: Path) -> None:
    entry = tmp_path / "cache" / "root.tar.zst"
    entry.parent.mkdir()
    snapshots.store(a_root(tmp_path / "root", "one"), entry, {"k": 1})
    cut_short(entry)
    target = tmp_path / "target"
    (target / "lost+found").mkdir(parents=True)

    assert not snapshots.unpack(entry, target)

    assert [p.name for p in target.iterdir()] == ["lost+found"]
    assert not entry.exists() and not Cache.key_file(entry).exists()


def test_module_results_cut_short_fall_back_to_the_longest_whole_prefix(tmp_path: Path) -> None:
    layers = ModuleLayers(Cache(tmp_path / "cache"), ("a" * 64, "b" * 64))
    layers.store(0, a_root(tmp_path / "after-first", "first"))
    layers.store(1, a_root(tmp_path / "after-second", "second"))
    cut_short(layers.entry(1))
    root = tmp_path / "root"
    root.mkdir()
    events: list[Event] = []

    assert layers.restore_newest(root, events.append) == 1

    assert (root / "etc" / "marker").read_text() == "first"
    assert any(e.kind == "warning" and "cut short" in e.message for e in events)
    assert not layers.entry(1).exists()


def test_every_module_run_is_archived_but_a_quick_last_one() -> None:
    assert worth_keeping(is_last=False, seconds=0.1)
    assert worth_keeping(is_last=True, seconds=CHEAP_LAST_RUN_SECONDS)
    assert not worth_keeping(is_last=True, seconds=CHEAP_LAST_RUN_SECONDS - 0.1)


@pytest.mark.integration
def test_a_snapshot_into_a_full_cache_says_the_cache_is_full(tmp_path: Path) -> None:
    root = a_root(tmp_path / "root", "one")
    (root / "usr" / "random").write_bytes(os.urandom(1 << 20))  # does not compress below the cache's size
    with small_tmpfs(tmp_path / "cache", "256k") as folder:
        with pytest.raises(CacheFull, match=f"the cache folder {folder} is full"):
            snapshots.store(root, folder / "root.tar.zst", {"k": 1})
        assert [p.name for p in folder.iterdir()] == []
