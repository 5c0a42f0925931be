"""A build changes nothing on the host outside its output, its cache and its temp folder.

A full build from the Debian root, with Python modules and roles (one
installing a package from the mirror), one of which tries to write through a
symlink planted in the image that points at a file on the host. The host's /etc, /root and
/usr/local digest the same before and after.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest

from tests.images import run_hotsauce

pytestmark = pytest.mark.integration

WATCHED = (Path("/etc"), Path("/root"), Path("/usr/local"))
# Written to by tools on a shared development machine whatever hotsauce does
# (pip, npm and the session tooling); a build's own cache goes to the test's folder.
VOLATILE = tuple(Path("/root") / name for name in (".cache", ".claude", ".npm", ".m2", ".cargo", ".rustup", ".pyenv"))
# Modules the build runs: Python modules and built-in roles.
MODULES = ("escape_through_symlink", "add_user", "stamp", "install_packages")

ESCAPE_MODULE = """
import os
from hotsauce.rootpath import inside

def modify(name, root, cfg):
    # An image may hold a symlink to a host path; written through the helper it stays inside the image.
    # It points at a canary file, not /etc/passwd, so a regression cannot damage the test machine.
    link = os.path.join(root, "etc", "evil-passwd")
    os.symlink(os.environ["HOTSAUCE_TEST_CANARY"], link)
    target = inside(root, "/etc/evil-passwd")
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "a") as out:
        out.write("intruder:x:0:0::/:/bin/sh\\n")
"""

STAMP_MODULE = """
from hotsauce.rootpath import inside

def modify(name, root, cfg):
    inside(root, "/etc/stamped").write_text("stamped\\n")
"""


def host_digest() -> str:
    """Every entry's path, type, mode, owner, size and mtime; file contents too under /etc."""
    digest = hashlib.sha256()
    for top in WATCHED:
        for folder, dirs, files in os.walk(top):
            here = Path(folder)
            dirs[:] = sorted(d for d in dirs if here / d not in VOLATILE)
            for name in sorted([*dirs, *files]):
                digest.update(_describe(here / name).encode())
    return digest.hexdigest()


def _describe(path: Path) -> str:
    info = path.lstat()
    line = f"{path}\0{info.st_mode:o}\0{info.st_uid}\0{info.st_gid}\0{info.st_size}\0{info.st_mtime_ns}"
    if stat.S_ISLNK(info.st_mode):
        line += "\0" + os.readlink(path)
    elif stat.S_ISREG(info.st_mode) and path.is_relative_to("/etc"):
        line += "\0" + hashlib.sha256(path.read_bytes()).hexdigest()
    return line + "\n"


def test_a_full_build_leaves_the_hosts_etc_root_and_usr_local_as_they_were(
    debian_rootfs_tarball: Path, tmp_path: Path
) -> None:
    project = tmp_path / "project"
    (project / "python_modules").mkdir(parents=True)
    (project / "python_modules" / "escape_through_symlink.py").write_text(ESCAPE_MODULE)
    (project / "python_modules" / "stamp.py").write_text(STAMP_MODULE)
    modules = "".join(f"  - {name}\n" for name in MODULES)
    (project / "build.yaml").write_text(f"download:\n  from: {debian_rootfs_tarball}\nmodules:\n{modules}"
                                        "add_users: [alice]\npackages: [less]\n")
    canary = tmp_path / "host-canary"
    canary.write_text("untouched\n")
    before = host_digest()

    result = run_hotsauce(
        "build",
        "-s",
        "2G",
        "-o",
        tmp_path / "set",
        "--cache-dir",
        tmp_path / "cache",
        "--work-dir",
        tmp_path,
        cwd=project,
        env={"HOTSAUCE_TEST_CANARY": str(canary)},
    )

    assert result.returncode == 0, result.stderr
    assert canary.read_text() == "untouched\n"
    assert host_digest() == before
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "set").iterdir()}
    assert set(modes.values()) == {0o644}, modes
