"""`hotsauce boot --console --autologin`: root logged in on the serial console, the image untouched."""

from __future__ import annotations

import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hotsauce.boot.probe import AUTOLOGIN_DROP_IN, autologin_script, probe_cmdline, write_probe_disk
from hotsauce.output.imageset import Manifest, sha256_of
from tests.image_sets import extract_root, make_image_set
from tests.images import REPO, run_hotsauce

BOOT_SECONDS = 900  # to the root prompt under TCG; generous, as other work may share the two cores
ROOT_PROMPT = re.compile(rb"root@[^\s:]+:~# ")
# The command's echo, then 0 alone on its line; bash's bracketed-paste switches may sit between.
ID_ZERO = re.compile(rb"id -u\r\r?\n(?:\x1b\[[0-9;?]*[A-Za-z]|\r)*0\r\r?\n")
CTRL_A_X = b"\x01x"  # QEMU's -nographic: quit


def test_the_autologin_script_overrides_the_serial_getty_only_in_run(tmp_path: Path) -> None:
    script = autologin_script()
    assert AUTOLOGIN_DROP_IN.startswith("/run/systemd/system/serial-getty@.service.d/")
    assert f"cat > {AUTOLOGIN_DROP_IN} <<'HOTSAUCE_UNIT'" in script
    assert "ExecStart=\nExecStart=-/sbin/agetty -o '-f -p -- \\\\u'" in script
    assert "--autologin root" in script
    assert script.rstrip().endswith('exec systemctl start --no-block "$target"')
    disk = write_probe_disk(tmp_path / "autologin.raw", (), script=script)
    syntax = subprocess.run(["sh", "-n", str(disk)], capture_output=True, text=True)
    assert syntax.returncode == 0, syntax.stderr


def test_the_autologin_boot_keeps_the_guest_up_when_its_script_ends() -> None:
    cmdline = probe_cmdline(power_off=False)
    assert "systemd.run=" in cmdline and "poweroff" not in cmdline
    assert "systemd.run_success_action=none" in cmdline and "systemd.run_failure_action=none" in cmdline
    assert "systemd.run_success_action=poweroff" in probe_cmdline()


def test_autologin_without_console_is_refused_in_one_line(tmp_path: Path) -> None:
    result = run_hotsauce("boot", tmp_path, "--autologin", cwd=tmp_path)
    assert result.returncode != 0
    assert result.stderr.strip() == "hotsauce: --autologin: only with --console"


def read_until(master: int, pattern: re.Pattern[bytes], seen: bytearray, deadline: float) -> re.Match[bytes]:
    """Read the console into `seen` until `pattern` matches what came after the start of the call."""
    start = len(seen)
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 1.0)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the other side closed: QEMU is gone
                break
            seen += chunk
            if match := pattern.search(bytes(seen), start):
                return match
    raise AssertionError(f"never saw {pattern.pattern!r}; console ends: {bytes(seen[-1500:])!r}")


@pytest.mark.integration
@pytest.mark.boot
def test_console_autologin_logs_root_in_and_leaves_the_image_unchanged(
    debian_rootfs_tarball: Path, tmp_path: Path
) -> None:
    folder = make_image_set(extract_root(debian_rootfs_tarball, tmp_path / "tree"), tmp_path / "set")
    subprocess.run(["rm", "-rf", "--one-file-system", tmp_path / "tree"], check=True)
    image = folder / Manifest.read(folder).root
    before = sha256_of(image)
    master, slave = pty.openpty()
    boot = subprocess.Popen([sys.executable, "-m", "hotsauce", "boot", folder, "--console", "--autologin"],
                            stdin=slave, stdout=slave, stderr=slave, start_new_session=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    os.close(slave)
    seen = bytearray()
    try:
        read_until(master, ROOT_PROMPT, seen, time.monotonic() + BOOT_SECONDS)
        os.write(master, b"id -u\r")
        read_until(master, ID_ZERO, seen, time.monotonic() + 60)
        os.write(master, CTRL_A_X)
        assert boot.wait(timeout=60) == 0
    finally:
        if boot.poll() is None:
            os.killpg(boot.pid, signal.SIGTERM)
            boot.wait(timeout=60)
        os.close(master)
    assert b"root (automatic login)" in seen
    assert sha256_of(image) == before
