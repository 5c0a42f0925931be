"""A build changes nothing on the host outside its output, its cache and its temp folder.

A full build from the Debian root, with Python modules and roles (one
installing a package from the mirror), one of which tries to write through a
symlink planted in the image that points at a file on the host. The host's /etc, /root and
/usr/local digest the same before and after: /root whole, since the default
cache (~/.cache/hotsauce) lives there and the build is given one under the
test's folder instead.
"""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from hotsauce.store.cache import CACHE_ENV
from tests.host_digests import changed_folders, host_digests
from tests.images import run_hotsauce

pytestmark = pytest.mark.integration

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


def test_a_full_build_leaves_the_hosts_etc_root_and_usr_local_as_they_were(
    debian_rootfs_tarball: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
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
    # Without HOTSAUCE_CACHE, anything that ignored --cache-dir would write to the
    # default cache under /root, and the digest would show it.
    monkeypatch.delenv(CACHE_ENV, raising=False)
    before = host_digests()

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
    changed = changed_folders(before, host_digests())
    assert not changed, f"the build changed these host folders: {changed}"
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "set").iterdir()}
    assert set(modes.values()) == {0o644}, modes
