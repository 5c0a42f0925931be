"""Snapshots of a root in the cache: a base or the result of module runs, read back whole or
made again when the entry was cut short."""

from __future__ import annotations

import os
import struct
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


# POSIX ACL xattr values as the kernel reads and writes them: version 2, then (tag, permissions, id).
ACL_UNNAMED = 0xFFFFFFFF
USER_OBJ, USER, GROUP_OBJ, MASK, OTHER = 0x01, 0x02, 0x04, 0x10, 0x20


def acl_value(*entries: tuple[int, int, int]) -> bytes:
    return struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *entry) for entry in entries)


# user 1234 may read and write; others may not.
NAMED_USER_ACL = acl_value((USER_OBJ, 6, ACL_UNNAMED), (USER, 6, 1234), (GROUP_OBJ, 4, ACL_UNNAMED),
                           (MASK, 6, ACL_UNNAMED), (OTHER, 0, ACL_UNNAMED))
# What files made in the folder get: the group may read.
DEFAULT_ACL = acl_value((USER_OBJ, 7, ACL_UNNAMED), (GROUP_OBJ, 5, ACL_UNNAMED), (OTHER, 0, ACL_UNNAMED))
# cap_net_raw in the permitted set, effective (version 2 file capabilities).
NET_RAW_CAPABILITY = struct.pack("<IIIII", 0x02000001, 1 << 13, 0, 0, 0)


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


def test_a_snapshot_keeps_acls_capabilities_and_extended_attributes(tmp_path: Path) -> None:
    root = a_root(tmp_path / "root", "one")
    shared, ping, shared_folder = root / "etc" / "marker", root / "usr" / "noise", root / "usr" / "shared"
    os.setxattr(shared, "system.posix_acl_access", NAMED_USER_ACL)
    os.setxattr(shared, "user.origin", b"hotsauce")
    os.setxattr(ping, "security.capability", NET_RAW_CAPABILITY)
    shared_folder.mkdir()
    os.setxattr(shared_folder, "system.posix_acl_default", DEFAULT_ACL)
    entry = tmp_path / "cache" / "root.tar.zst"
    entry.parent.mkdir()
    snapshots.store(root, entry, {"k": 1})
    target = tmp_path / "target"
    target.mkdir()

    assert snapshots.unpack(entry, target)

    assert os.getxattr(target / "etc" / "marker", "system.posix_acl_access") == NAMED_USER_ACL
    assert os.getxattr(target / "etc" / "marker", "user.origin") == b"hotsauce"
    assert os.stat(target / "etc" / "marker").st_mode == os.stat(shared).st_mode  # group bits: the mask
    assert os.getxattr(target / "usr" / "noise", "security.capability") == NET_RAW_CAPABILITY
    assert os.getxattr(target / "usr" / "shared", "system.posix_acl_default") == DEFAULT_ACL


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
