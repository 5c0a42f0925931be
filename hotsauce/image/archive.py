"""Tar archives: root archives checked member by member, then unpacked by GNU
tar; the image set packed into a tar.gz.

GNU tar keeps what a root needs (owners, modes, device nodes, hard links,
ACLs, xattrs) and is fast; the check before it refuses any member that would
land outside the root: absolute paths, `..`, and paths that pass through a
symlink planted by an earlier member of the same archive. Both ways, the
bytes pass through hotsauce between tar and the (de)compressor, which is
where the progress comes from.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import shutil
import signal
import subprocess
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from hotsauce.errors import CommandFailed, ConfigError
from hotsauce.events import Emit, Event
from hotsauce.host import proc
from hotsauce.host.sizes import human_size

_MAGIC: tuple[tuple[bytes, list[str]], ...] = (
    (b"\x28\xb5\x2f\xfd", ["zstd", "-dc", "-T0"]),
    (b"\x1f\x8b", ["pigz", "-dc"] if shutil.which("pigz") else ["gzip", "-dc"]),
    (b"\xfd7zXZ\x00", ["xz", "-dc", "-T0"]),
    (b"BZh", ["bzip2", "-dc"]),
)


def decompressor(archive: Path) -> list[str] | None:
    """The command that decompresses `archive` to stdout, or None for a plain tar."""
    with archive.open("rb") as stream:
        head = stream.read(8)
    for magic, command in _MAGIC:
        if head.startswith(magic):
            return command
    return None


@contextmanager
def _tar_stream(archive: Path) -> Iterator[IO[bytes]]:
    command = decompressor(archive)
    if command is None:
        with archive.open("rb") as stream:
            yield stream
        return
    with archive.open("rb") as source, proc.child_process(
        command, stdin=source.fileno(), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    ) as child:
        assert child.stdout is not None
        yield child.stdout


def check_members(archive: Path, name: str, paths: set[str] | None = None) -> int:
    """Refuse an archive with a member that would be written outside the root.

    Returns about how many bytes the members take once unpacked. `paths`, when
    given, receives every member's path relative to the root (`usr/bin/x`), so
    a caller can ask what the archive holds without reading it twice.
    """
    symlinks: dict[str, str] = {}
    unpacked = 0
    try:
        with _tar_stream(archive) as stream, tarfile.open(fileobj=stream, mode="r|") as tar:
            for member in tar:
                _check_member(member, symlinks, name)
                if paths is not None:
                    paths.add(posixpath.normpath(member.name).lstrip("/"))
                unpacked += _blocks(member.size if member.isreg() else 0)
    except tarfile.TarError as error:
        raise ConfigError(f"{name}: not a readable tar archive: {error}") from None
    return unpacked


_BLOCK = 4096


def _blocks(size: int) -> int:
    """Bytes a file takes on a 4 KiB-block filesystem; a folder or an inode takes one block."""
    return max(1, -(-size // _BLOCK)) * _BLOCK


def check_fits(unpacked: int, size: int, name: str) -> None:
    """Refuse, before allocating, an image size the base cannot fit in.

    The estimate of the filesystem's own share (inode tables, journal) is
    kept low on purpose: this refuses only sizes that surely cannot work;
    the rest shows as a clear error if the image fills up later.
    """
    overhead = size // 32 + (16 << 20)
    if unpacked + overhead > size:
        needed = int((unpacked + overhead) * 1.2)
        raise ConfigError(f"--size {human_size(size)}: too small for the base: {name} unpacks to about "
                          f"{human_size(unpacked)}; give at least {human_size(needed)}")


def _check_member(member: tarfile.TarInfo, symlinks: dict[str, str], name: str) -> None:
    path = _inside(member.name, symlinks)
    if path is None:
        raise ConfigError(f"{name}: member {member.name!r} would land outside the root; refused")
    if member.islnk() and _inside(member.linkname, symlinks) is None:
        raise ConfigError(f"{name}: hard link {member.name!r} -> {member.linkname!r} leaves the root; refused")
    if member.issym():
        symlinks[path] = member.linkname
    else:
        symlinks.pop(path, None)


def _inside(member_path: str, symlinks: dict[str, str]) -> str | None:
    """The member's normalised path within the root, or None if it escapes.

    Each parent is followed through the archive's own symlinks: an absolute
    link would be followed on the host by tar, so a member below one escapes.
    """
    if member_path.startswith("/"):
        return None
    parts: list[str] = []
    pending = [p for p in member_path.split("/") if p not in ("", ".")]
    hops = 0
    while pending:
        part = pending.pop(0)
        if part == "..":
            if not parts:
                return None
            parts.pop()
            continue
        parts.append(part)
        current = "/".join(parts)
        if pending and current in symlinks:  # a parent that is a symlink from this archive
            target = symlinks[current]
            hops += 1
            if target.startswith("/") or hops > 40:
                return None
            parts.pop()
            pending = [p for p in target.split("/") if p not in ("", ".")] + pending
    return posixpath.join(*parts) if parts else "."


def extract(archive: Path, root: Path, emit: Emit, stage: str = "base") -> None:
    """Unpack a root archive into `root`, keeping owners, modes, devices, links, ACLs, xattrs."""
    total = archive.stat().st_size
    tar = ["tar", "--extract", "--file=-", f"--directory={root}", "--numeric-owner",
           "--same-owner", "--preserve-permissions", "--acls", "--xattrs", "--xattrs-include=*"]
    command = decompressor(archive)
    with archive.open("rb") as source:
        if command is None:
            with proc.child_process(tar, stdin=subprocess.PIPE, stderr=subprocess.PIPE) as untar:
                assert untar.stdin is not None
                _copy_with_progress(source, untar.stdin, total, emit, stage, "unpacking")
                _expect_success(untar, tar)
            return
        with proc.child_process(tar, stdin=subprocess.PIPE, stderr=subprocess.PIPE) as untar, \
                proc.child_process(command, stdin=subprocess.PIPE, stdout=untar.stdin,
                                   stderr=subprocess.PIPE) as unpack:
            assert untar.stdin is not None and unpack.stdin is not None
            untar.stdin.close()  # the decompressor holds the pipe now
            _copy_with_progress(source, unpack.stdin, total, emit, stage, "unpacking")
            # A decompressor killed by SIGPIPE only says tar stopped reading: tar's status tells
            # why (an error, or the end-of-archive marker before the padding after it).
            if unpack.wait() != -signal.SIGPIPE:
                _expect_success(unpack, command)
            _expect_success(untar, tar)


def pack(folder: Path, archive: Path, emit: Emit, stage: str = "publish") -> None:
    """A new tar.gz of the folder's files at its top level, compressed on every core.

    The tar stream passes through here on its way to the compressor, so the
    progress counts what has been packed.
    """
    names = sorted(p.name for p in folder.iterdir())
    total = sum((folder / name).stat().st_size for name in names)
    # Level 1: on a qcow2 it costs about 8% in size and saves three quarters of the time.
    compressor = ["pigz", "-1", "-p", str(os.cpu_count() or 1)] if shutil.which("pigz") else ["gzip", "-1"]
    tar = ["tar", "--create", "--file=-", "--owner=0", "--group=0", "--numeric-owner", f"--directory={folder}",
           "--sparse", *names]
    with archive.open("xb") as out, proc.child_process(
        compressor, stdin=subprocess.PIPE, stdout=out, stderr=subprocess.PIPE
    ) as gzip, proc.child_process(tar, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as packer:
        assert gzip.stdin is not None and packer.stdout is not None
        _copy_with_progress(packer.stdout, gzip.stdin, total, emit, stage, "compressing")
        # The compressor first: when it fails, tar only died of the broken pipe.
        _expect_success(gzip, compressor)
        _expect_success(packer, tar)


COPY_CHUNK_BYTES = 1 << 20


def _copy_with_progress(source: IO[bytes], target: IO[bytes], total: int, emit: Emit, stage: str,
                        message: str) -> None:
    """Copy `source` into a child's pipe, reporting progress; both ends are closed afterwards.

    Closing both ends matters when the child fails: a child still writing
    into `source` gets EPIPE instead of waiting for a reader forever.
    """
    done = 0
    try:
        while chunk := source.read(COPY_CHUNK_BYTES):
            target.write(chunk)
            done += len(chunk)
            emit(Event("progress", stage, message, {"done": min(done, total), "total": total}))
        if done != total:  # a sparse file packs into less than its size: the bar still ends full
            emit(Event("progress", stage, message, {"done": total, "total": total}))
    except BrokenPipeError:
        pass  # the child failed; its status and stderr say why
    finally:
        with contextlib.suppress(BrokenPipeError):
            target.close()
        source.close()


def _expect_success(child: subprocess.Popen[bytes], argv: list[str]) -> None:
    """Wait for a child started with child_process; CommandFailed with its stderr unless it succeeded."""
    status = child.wait()
    if status != 0:
        stderr = child.stderr.read().decode(errors="replace") if child.stderr else ""
        raise CommandFailed(argv, status, stderr)


def extract_member(archive: Path, member_name: str, destination: Path, name: str) -> Path:
    """Pull one file (a root archive inside a download) out of an archive."""
    wanted = {member_name.lstrip("./"), posixpath.basename(member_name)}
    try:
        with _tar_stream(archive) as stream, tarfile.open(fileobj=stream, mode="r|") as tar:
            for member in tar:
                normalised = member.name.lstrip("./")
                if member.isfile() and (normalised in wanted or posixpath.basename(normalised) == member_name):
                    source = tar.extractfile(member)
                    assert source is not None
                    target = destination / posixpath.basename(normalised)
                    with target.open("wb") as out:
                        shutil.copyfileobj(source, out, 4 << 20)
                    os.chmod(target, 0o600)
                    return target
    except tarfile.TarError as error:
        raise ConfigError(f"{name}: not a readable tar archive: {error}") from None
    raise ConfigError(f"{name}: root_file {member_name!r} is not in the downloaded archive")
