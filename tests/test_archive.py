"""Root archives: members that would land outside the root are refused before extraction;
the rest unpacks through tar with progress, and a damaged archive fails the unpack."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path
from typing import Literal

import pytest

from hotsauce.errors import CommandFailed, ConfigError
from hotsauce.events import Event
from hotsauce.image.archive import check_members, extract, extract_member


def make_tar(path: Path, members: list[tuple[str, str, str]]) -> Path:
    """members: (kind, name, target or content) with kind file|dir|symlink|hardlink."""
    with tarfile.open(path, "w:gz") as tar:
        for kind, name, value in members:
            info = tarfile.TarInfo(name)
            if kind == "file":
                data = value.encode()
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
                continue
            info.type = {"dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE}[kind]
            info.linkname = value
            tar.addfile(info)
    return path


def test_an_ordinary_root_with_relative_and_absolute_symlinks_passes_with_its_unpacked_size(
    tmp_path: Path,
) -> None:
    archive = make_tar(tmp_path / "ok.tar.gz", [
        ("dir", "./usr/bin", ""), ("symlink", "./bin", "usr/bin"), ("file", "./usr/bin/sh", "#" * 5000),
        ("symlink", "./etc/os-release", "/usr/lib/os-release"), ("hardlink", "./usr/bin/dash", "./usr/bin/sh"),
        ("file", "./bin/through-relative-link", "inside"),
    ])
    # A 4 KiB block per member, two for the 5000-byte file: the estimate check_fits is given.
    assert check_members(archive, "ok") == 7 * 4096


@pytest.mark.parametrize("members", [
    [("file", "../escape", "x")],
    [("file", "/etc/passwd", "x")],
    [("file", "./a/../../escape", "x")],
    [("symlink", "./planted", "/etc"), ("file", "./planted/passwd", "x")],
    [("symlink", "./planted", "../.."), ("file", "./planted/escape", "x")],
    [("symlink", "./a", "b"), ("symlink", "./b", "/"), ("file", "./a/etc/shadow", "x")],
    [("hardlink", "./passwd", "/etc/passwd")],
])
def test_members_that_leave_the_root_are_refused(tmp_path: Path, members: list[tuple[str, str, str]]) -> None:
    archive = make_tar(tmp_path / "bad.tar.gz", members)
    with pytest.raises(ConfigError, match="refused"):
        check_members(archive, "bad")


def test_something_that_is_not_an_archive_is_a_config_error(tmp_path: Path) -> None:
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"\x1f\x8bnot really gzip")
    with pytest.raises(ConfigError, match="not a readable tar archive"):
        check_members(junk, "junk")


def test_root_file_is_pulled_out_of_an_outer_archive(tmp_path: Path) -> None:
    outer = make_tar(tmp_path / "outer.tar.gz", [("file", "release/README", "hi"), ("file", "release/root.tar", "R")])
    inner = extract_member(outer, "root.tar", tmp_path, "outer")
    assert inner.read_text() == "R"
    with pytest.raises(ConfigError, match="not in the downloaded archive"):
        extract_member(outer, "missing.tar", tmp_path, "outer")


@pytest.mark.parametrize("suffix", ["tar", "tar.gz"])
def test_an_archive_unpacks_into_the_root_and_its_progress_ends_full(tmp_path: Path, suffix: str) -> None:
    mode: Literal["w", "w:gz"] = "w:gz" if suffix == "tar.gz" else "w"
    archive = tmp_path / f"root.{suffix}"
    with tarfile.open(archive, mode) as tar:
        data = b"x" * (3 << 20)
        info = tarfile.TarInfo("etc/big")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    root = tmp_path / "root"
    root.mkdir()
    events: list[Event] = []
    extract(archive, root, events.append)
    assert (root / "etc" / "big").stat().st_size == 3 << 20
    progress = [e.data for e in events if e.kind == "progress"]
    assert progress[-1] == {"done": archive.stat().st_size, "total": archive.stat().st_size}


def test_a_damaged_compressed_archive_fails_the_unpack_naming_the_decompressor(tmp_path: Path) -> None:
    archive = make_tar(tmp_path / "root.tar.gz", [("file", "etc/hostname", "x" * 100_000)])
    whole = archive.read_bytes()
    archive.write_bytes(whole[: len(whole) // 2] + b"\0" * 64)  # cut short, as by a full disk
    root = tmp_path / "root"
    root.mkdir()
    with pytest.raises(CommandFailed, match=r"^(pigz|gzip) exited"):
        extract(archive, root, lambda _event: None)
