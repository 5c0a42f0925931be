"""A password hash given to add_user, or a secret in the build's environment, never reaches a
log (ansible-runner's artifacts included) or the terminal; logs are 0600 in 0700 folders."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from tests.images import mounted_root_image, run_hotsauce

pytestmark = pytest.mark.integration

# A token in the environment hotsauce runs in, as a cloud password would be.
ENVIRONMENT_SECRET = "hotsauce-test-token-5f1c9a0e7b"
# A SHA-512 crypt hash of a throwaway password, only ever used by this test.
PASSWORD_HASH = "$6$hotsaucetest$Q2mY9bA0yZ3sVtWq1zR8cJ5nL4pK7hG6fD2sA1xC9vB3nM8jH5gF4dS7aQ0wE2rT6yU1iO3pL9kJ8hG7fD6sA."


def test_a_password_hash_is_set_in_the_image_and_never_logged(debian_rootfs_tarball: Path, tmp_path: Path) -> None:
    (tmp_path / "build.yaml").write_text(
        f"download:\n  from: {debian_rootfs_tarball}\nkernel: false\nmodules: [add_user]\n"
        f"add_users:\n  - name: carol\n    password_hash: '{PASSWORD_HASH}'\n"
    )
    cache = tmp_path / "cache"
    result = run_hotsauce("build", "-s", "2G", "-o", "out", "--cache-dir", cache, cwd=tmp_path,
                          env={"HOTSAUCE_TEST_TOKEN": ENVIRONMENT_SECRET})
    assert result.returncode == 0, result.stderr[-2000:]
    assert PASSWORD_HASH not in result.stdout + result.stderr
    [build_logs] = (cache / "logs").iterdir()
    logs = [p for p in build_logs.rglob("*") if p.is_file()]
    assert {"build.log", "stdout", "command"} <= {p.name for p in logs}
    assert any(p.parent.name == "job_events" for p in logs)  # ansible-runner's own artifacts
    for log in logs:
        text = log.read_text(errors="replace")
        assert PASSWORD_HASH not in text and ENVIRONMENT_SECRET not in text, log
        assert stat.S_IMODE(log.stat().st_mode) == 0o600, log
    for folder in [build_logs, *(p for p in build_logs.rglob("*") if p.is_dir())]:
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
    with mounted_root_image(tmp_path / "out" / "root.qcow2", tmp_path) as root:
        assert f"carol:{PASSWORD_HASH}:" in (root / "etc" / "shadow").read_text()
