"""Packing the image set: a failing compressor fails the pack, it never hangs it."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from hotsauce.errors import CommandFailed
from hotsauce.events import Event
from hotsauce.output.publish import publish
from tests.faults.shims import path_with, shim_folder


def test_a_compressor_that_fails_fails_the_pack_quickly_and_leaves_no_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    staging = tmp_path / "staging"
    staging.mkdir()
    # Far more than a pipe holds: tar must not be left waiting for a reader.
    (staging / "root.raw").write_bytes(os.urandom(8 << 20))
    monkeypatch.setenv("PATH", path_with(shim_folder(tmp_path / "shims", "pigz", "fail")))
    started = time.monotonic()
    with pytest.raises(CommandFailed, match="pigz"):
        publish(staging, tmp_path / "set.tar.gz", compress=True, force=False)
    assert time.monotonic() - started < 30
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shims", "staging"]


def test_a_packed_set_holds_the_files_at_its_top_level(tmp_path: Path) -> None:
    import tarfile

    staging = tmp_path / "staging"
    staging.mkdir()
    (staging / "vmlinuz").write_bytes(b"kernel")
    (staging / "vmlinuz.sha256").write_text("x  vmlinuz\n")
    events: list[Event] = []
    publish(staging, tmp_path / "set.tar.gz", compress=True, force=False, emit=events.append)
    with tarfile.open(tmp_path / "set.tar.gz") as archive:
        assert sorted(archive.getnames()) == ["vmlinuz", "vmlinuz.sha256"]
    assert oct((tmp_path / "set.tar.gz").stat().st_mode & 0o777) == "0o644"
    progress = [e for e in events if e.kind == "progress"]
    assert progress and progress[-1].data["done"] == progress[-1].data["total"]


@pytest.mark.parametrize("existing", ["file", "dangling link"])
def test_force_replaces_what_stands_at_the_output(tmp_path: Path, existing: str) -> None:
    staging = tmp_path / "staging"
    staging.mkdir()
    (staging / "vmlinuz").write_bytes(b"kernel")
    output = tmp_path / "set.tar.gz"
    if existing == "file":
        output.write_text("an earlier set")
    else:
        output.symlink_to(tmp_path / "gone")
    publish(staging, output, compress=True, force=True)
    assert not output.is_symlink() and output.read_bytes()[:2] == b"\x1f\x8b"  # gzip, the new set
