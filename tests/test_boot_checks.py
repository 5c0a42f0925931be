"""`hotsauce build --boot-check`: what the build.yaml asked for is there in the running guest."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from hotsauce.output.imageset import verify_set
from tests.images import run_hotsauce

pytestmark = [pytest.mark.integration, pytest.mark.boot]

DATA = Path(__file__).parent / "data" / "ansible"

BUILD_YAML = """\
base:
  debian: {}
modules:
  - add_user
  - install_packages
  - daemon            # a role that installs cron and enables and starts it
add_users: [alice]
packages: [curl]
"""


def test_users_packages_and_services_from_the_build_are_there_in_the_booted_guest(
    debian_rootfs_tarball: Path, tmp_path: Path
) -> None:
    (tmp_path / "roles").mkdir()
    shutil.copytree(DATA / "roles" / "daemon", tmp_path / "roles" / "daemon")
    (tmp_path / "build.yaml").write_text(BUILD_YAML)
    result = run_hotsauce(
        "build", "-s", "2G", "-o", "out", "--boot-check",
        "--check", "id alice", "--check", "sudo -n -l -U alice", "--check", "command -v curl",
        "--check", "systemctl is-active cron", "--check", "systemctl is-enabled cron",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    for check in ("id alice", "sudo -n -l -U alice", "command -v curl", "systemctl is-active cron"):
        assert f"check '{check}': status 0" in result.stderr
    verify_set(tmp_path / "out")
