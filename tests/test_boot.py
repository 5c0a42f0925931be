"""`hotsauce boot`: an image set boots in QEMU and is checked from inside the guest.

The boot tests are few on purpose (each costs about a minute of CPU): one
boot of a good set through the command serves several assertions, one boot
of a set whose kernel cannot find its root shows the failure path.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from hotsauce.boot import qemu
from hotsauce.boot.boot_set import BootResult, CheckResult, boot_image_set
from hotsauce.boot.probe import (
    PROBE_DEVICE,
    fatal_console_line,
    parse_report,
    probe_cmdline,
    probe_script,
    write_probe_disk,
)
from hotsauce.boot.qemu import KVM_PROBE_SECONDS, Accel, Drive, choose_accel, kvm_runs_kernel
from hotsauce.commands import boot as boot_command
from hotsauce.errors import BootFailed, ConfigError, KvmUnusable
from hotsauce.events import Event
from hotsauce.output.imageset import Manifest, sha256_of
from tests.image_sets import extract_root, make_image_set
from tests.images import run_hotsauce

GOOD_BOOT_TIMEOUT = 480  # generous: other work may share the machine's two cores
BAD_BOOT_TIMEOUT = 240


def boot_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hotsauce")
    boot_command.add_command(parser.add_subparsers(dest="command", required=True))
    return parser


# ---- without a guest: the probe, its report, the verdict ------------------------------------


def test_probe_script_carries_each_check_base64_encoded_in_order() -> None:
    script = probe_script(["id root", "echo 'quoted' \"twice\" | grep q"])
    encoded = [
        base64.b64encode(c.encode()).decode()
        for c in ("id root", "echo 'quoted' \"twice\" | grep q")
    ]
    assert script.index(f"run_check 0 {encoded[0]}") < script.index(f"run_check 1 {encoded[1]}")
    assert script.rstrip().endswith("exit 0")


def test_probe_disk_is_whole_sectors_and_shell_readable(tmp_path: Path) -> None:
    disk = write_probe_disk(tmp_path / "probe.raw", ["true"])
    assert disk.stat().st_size % 512 == 0
    syntax = subprocess.run(["sh", "-n", str(disk)], capture_output=True, text=True)
    assert syntax.returncode == 0, syntax.stderr


def test_probe_cmdline_arms_systemd_run_with_one_quoted_command() -> None:
    cmdline = probe_cmdline()
    assert "systemd.unit=kernel-command-line.target" in cmdline
    assert f"exec /bin/sh {PROBE_DEVICE}" in cmdline
    assert "systemd.run_success_action=poweroff" in cmdline
    # Between the double quotes: one command; systemd unquotes it as a shell would.
    run_value = cmdline.split('systemd.run="', 1)[1].split('"', 1)[0]
    assert run_value.startswith("/bin/sh -c '") and run_value.endswith("'")
    assert "%" not in run_value and "$" not in run_value  # systemd would expand them


def test_report_parsing_decodes_outputs_and_ignores_noise() -> None:
    line = base64.b64encode(b"uid=0(root)\n").decode()
    failed = base64.b64encode(
        b"x.service loaded failed failed X\ny.mount loaded failed failed Y\n"
    ).decode()
    report = parse_report(
        "garbage\r\nHOTSAUCE-PROBE started\r\nHOTSAUCE-PROBE target multi-user.target\n"
        f"HOTSAUCE-PROBE reached multi-user.target\nHOTSAUCE-PROBE check 0 0 {line}\n"
        "HOTSAUCE-PROBE check 1 127 \nHOTSAUCE-PROBE done\n"
        f"HOTSAUCE-PROBE failed-units {failed}\n"
    )
    assert (report.started, report.target, report.reached, report.done) == (
        True, "multi-user.target", True, True,
    )  # fmt: skip
    assert [(c.index, c.status, c.output) for c in report.checks] == [
        (0, 0, "uid=0(root)\n"), (1, 127, ""),
    ]  # fmt: skip
    assert report.failed_units == ("x.service", "y.mount")


def test_console_shows_fatal_boot_failures() -> None:
    assert fatal_console_line("[ 1.0] Kernel panic - not syncing: VFS: Unable to mount root fs")
    reason = fatal_console_line("ALERT!  LABEL=root does not exist.  Dropping to a shell!\n")
    assert reason is not None and "root" in reason
    assert fatal_console_line("[  OK  ] Reached target multi-user.target\nlogin:") is None


def test_a_failing_check_is_named_in_the_one_line_message(tmp_path: Path) -> None:
    result = BootResult(
        booted=True,
        reason="reached graphical.target",
        checks=(CheckResult("id root", 0, ""), CheckResult("id nosuchuser", 1, "no such user")),
        serial_log=tmp_path / "console.log",
        seconds=60.0,
    )
    assert not result.ok
    message = result.failure_message()
    assert "'id nosuchuser' (status 1)" in message and "'id root'" not in message
    assert str(tmp_path / "console.log") in message and "\n" not in message
    with pytest.raises(BootFailed):
        result.raise_for_failure()
    assert json.loads(json.dumps(result.to_json()))["checks"][1]["ok"] is False


def test_drive_options_escape_commas_in_paths() -> None:
    arguments = Drive(Path("/a,b/root.qcow2"), "qcow2").arguments("disk0")
    assert arguments[1].startswith("file=/a,,b/root.qcow2,format=qcow2")
    assert "snapshot=on" in arguments[1]


def test_a_folder_without_a_manifest_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not an image set"):
        boot_image_set(tmp_path, log_dir=tmp_path / "log")


def test_boot_option_parsing_collects_checks_in_order() -> None:
    args = boot_parser().parse_args(
        ["boot", "out/", "--check", "id a", "--check", "id b", "--timeout", "90", "--json"]
    )
    assert (args.checks, args.timeout, args.json, args.console) == (
        ["id a", "id b"],
        90.0,
        True,
        False,
    )


# ---- real boots (QEMU, software emulation) ---------------------------------------------------


@pytest.fixture(scope="module")
def root_tree(debian_rootfs_tarball: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return extract_root(debian_rootfs_tarball, tmp_path_factory.mktemp("boot-root") / "tree")


def panics_without_a_root(kernel: Path, accel: str, console: Path, *, seconds: float) -> bool:
    """Whether `kernel`, given no ramdisk and no root, panics within `seconds` under `accel`.

    QEMU's command line is written here by hand, not by hotsauce, so it checks
    the probe independently; panic=-1 and -no-reboot make QEMU exit at the panic.
    """
    argv = ["qemu-system-x86_64", "-accel", accel, "-m", "256", "-smp", "1", "-no-reboot",
            "-kernel", str(kernel), "-append", "console=ttyS0 panic=-1",
            "-display", "none", "-monitor", "none", "-nic", "none", "-serial", f"file:{console}"]  # fmt: skip
    qemu = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        qemu.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        pass  # still running: the guest hangs
    finally:
        if qemu.poll() is None:
            qemu.kill()
            qemu.wait()
    return "Kernel panic" in console.read_text(errors="replace")


@pytest.fixture(scope="module")
def boot_kernel(root_tree: Path) -> Path:
    return sorted((root_tree / "boot").glob("vmlinuz-*"))[0]


@pytest.fixture(scope="module")
def kvm_runs_it(boot_kernel: Path, tmp_path_factory: pytest.TempPathFactory) -> bool:
    """The truth the probe must find, by a slower check of its own: without a usable /dev/kvm, no;
    with one, whether KVM gets the kernel to its panic within twice the probe's default bound."""
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False
    console = tmp_path_factory.mktemp("kvm-truth") / "console.log"
    return panics_without_a_root(boot_kernel, "kvm", console, seconds=2 * KVM_PROBE_SECONDS)


@dataclass(frozen=True)
class CommandRun:
    json: dict[str, Any]
    error: str  # the one-line error the command raised, "" if none
    image_sha_before: str
    image_sha_after: str


@pytest.fixture(scope="module")
def default_image(debian_rootfs_tarball: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`hotsauce init`, then `hotsauce build`, in an empty folder: the default image."""
    project = tmp_path_factory.mktemp("default-project")
    initialised = run_hotsauce("init", cwd=project)
    assert initialised.returncode == 0, initialised.stderr
    built = run_hotsauce("build", "-s", "2G", "-o", "default", cwd=project)
    assert built.returncode == 0, built.stderr[-3000:]
    return project / "default"


@pytest.fixture(scope="module")
def good_boot(default_image: Path, tmp_path_factory: pytest.TempPathFactory) -> CommandRun:
    """One boot of the default image through `hotsauce boot --json`: passing checks, one failing."""
    work = tmp_path_factory.mktemp("good")
    folder = default_image
    image = folder / Manifest.read(folder).root
    before = sha256_of(image)
    args = boot_parser().parse_args(
        ["boot", str(folder), "--check", "id root", "--check", "id nosuchuser",
         "--check", "cat /etc/hotsauce-release", "--check", "sudo -n -l -U hotsauce",
         "--timeout", str(GOOD_BOOT_TIMEOUT), "--log-dir", str(work / "logs"), "--json"]
    )  # fmt: skip
    stdout = io.StringIO()
    error = ""
    with contextlib.redirect_stdout(stdout):
        try:
            args.run(args)
        except BootFailed as failure:
            error = str(failure)
    return CommandRun(json.loads(stdout.getvalue()), error, before, sha256_of(image))


@pytest.mark.integration
@pytest.mark.boot
def test_the_default_image_boots_and_reaches_its_default_target(good_boot: CommandRun) -> None:
    assert good_boot.json["booted"], good_boot.json["reason"]
    assert good_boot.json["reason"].startswith("reached graphical.target (failed units: ")
    console = Path(good_boot.json["serial_log"]).read_text(errors="replace")
    assert "hotsauce-probe: reached graphical.target" in console
    assert "Reached target" in console and "graphical.target" in console


@pytest.mark.integration
@pytest.mark.boot
def test_checks_run_inside_the_guest_and_the_failing_one_is_named(good_boot: CommandRun) -> None:
    checks = {c["command"]: c for c in good_boot.json["checks"]}
    assert checks["id root"]["status"] == 0
    assert checks["id root"]["output"].startswith("uid=0(root)")
    assert checks["id nosuchuser"]["status"] != 0
    assert checks["cat /etc/hotsauce-release"]["status"] == 0  # the default's Python module ran
    assert checks["sudo -n -l -U hotsauce"]["status"] == 0  # ... and its add_user role
    assert "nosuchuser" in checks["id nosuchuser"]["output"]
    assert good_boot.json["ok"] is False
    assert "'id nosuchuser'" in good_boot.error and "'id root'" not in good_boot.error
    assert "'sudo -n -l -U hotsauce'" not in good_boot.error


@pytest.mark.integration
@pytest.mark.boot
def test_booting_never_changes_the_image_file(good_boot: CommandRun) -> None:
    assert good_boot.image_sha_before == good_boot.image_sha_after


@pytest.fixture
def unbootable_set_archive(root_tree: Path, tmp_path: Path) -> Iterator[Path]:
    """A tar.gz set whose root filesystem is labelled `notroot`: the kernel looks for LABEL=root."""
    folder = make_image_set(root_tree, tmp_path / "set", fs_label="notroot", empty_root=True)
    archive = tmp_path / "unbootable.tar.gz"
    with tarfile.open(archive, "w:gz", compresslevel=1) as tar:
        for path in sorted(folder.iterdir()):
            tar.add(path, arcname=path.name)
    yield archive


def qemu_processes_mentioning(text: str) -> list[str]:
    found = subprocess.run(
        ["pgrep", "-a", "-f", f"qemu-system.*{text}"], capture_output=True, text=True
    )
    return found.stdout.splitlines()


@pytest.mark.integration
@pytest.mark.boot
def test_a_kernel_that_cannot_find_its_root_fails_fast_leaves_no_qemu_and_says_its_accelerator(
    unbootable_set_archive: Path, kvm_runs_it: bool, tmp_path: Path
) -> None:
    log_dir = tmp_path / "unbootable-logs"
    events: list[Event] = []
    started = time.monotonic()
    result = boot_image_set(
        unbootable_set_archive,
        checks=["true"],
        timeout=BAD_BOOT_TIMEOUT,
        log_dir=log_dir,
        emit=events.append,
        accel=Accel.AUTO,
    )
    assert time.monotonic() - started < BAD_BOOT_TIMEOUT  # the console showed it: no waiting out
    # --accel auto takes KVM only where it runs the kernel, and says which it took.
    said = [e.message for e in events if e.message.startswith("booting ")]
    assert len(said) == 1 and f"({'kvm' if kvm_runs_it else 'tcg'})" in said[0], said
    assert not result.booted and not result.ok
    assert "root" in result.reason and "timed out" not in result.reason
    assert result.serial_log == log_dir / "console.log" and result.serial_log.stat().st_size > 0
    assert str(result.serial_log) in result.failure_message()
    assert result.checks == (CheckResult("true", -1, "(did not run)"),)
    assert qemu_processes_mentioning(str(log_dir)) == []


# `hotsauce boot SET --console` in a child, through the command's own parser.
CONSOLE_SCRIPT = """
import argparse, sys
from hotsauce.commands import boot
parser = argparse.ArgumentParser()
boot.add_command(parser.add_subparsers())
args = parser.parse_args(["boot", sys.argv[1], "--console"])
sys.exit(args.run(args))
"""


@pytest.mark.integration
@pytest.mark.boot
def test_the_console_shows_the_kernel_booting_and_quits_on_ctrl_a_x(
    unbootable_set_archive: Path,
) -> None:
    worktree = Path(__file__).resolve().parents[1]
    console = subprocess.Popen(
        [sys.executable, "-c", CONSOLE_SCRIPT, str(unbootable_set_archive)],
        cwd=worktree,
        env={**os.environ, "PYTHONPATH": str(worktree)},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        seen = _read_until(console, b"Linux version", seconds=60)
        assert b"Linux version" in seen
        assert console.stdin is not None
        console.stdin.write(b"\x01x")  # QEMU's serial mux: Ctrl-A X quits
        console.stdin.flush()
        assert console.wait(timeout=30) == 0
    finally:
        if console.poll() is None:  # SIGTERM: the command stops its QEMU on the way out
            console.send_signal(signal.SIGTERM)
            console.wait(timeout=30)


def _read_until(process: subprocess.Popen[bytes], wanted: bytes, *, seconds: float) -> bytes:
    assert process.stdout is not None
    os.set_blocking(process.stdout.fileno(), False)
    seen = b""
    deadline = time.monotonic() + seconds
    while wanted not in seen and time.monotonic() < deadline and process.poll() is None:
        seen += process.stdout.read() or b""
        time.sleep(0.2)
    return seen


@pytest.mark.integration
@pytest.mark.boot
def test_the_kvm_probe_answers_within_its_bound_with_the_verdict_an_independent_boot_finds(
    boot_kernel: Path, kvm_runs_it: bool, tmp_path: Path
) -> None:
    # Under TCG the same kernel reaches the panic the probe looks for: a "no" from
    # the probe is about KVM, not about a kernel or console that never says anything.
    assert panics_without_a_root(boot_kernel, "tcg", tmp_path / "tcg-console.log", seconds=120)
    started = time.monotonic()
    verdict = qemu._probe_kvm(boot_kernel, seconds=10)  # the probe itself: a remembered verdict would answer at once
    assert time.monotonic() - started < 10 + 10  # the bound plus QEMU's stop grace
    assert verdict == kvm_runs_it
    assert kvm_runs_kernel(boot_kernel) == kvm_runs_it  # remembered or probed again, the same answer
    assert choose_accel(Accel.AUTO, boot_kernel) is (Accel.KVM if kvm_runs_it else Accel.TCG)
    if not kvm_runs_it:
        with pytest.raises(KvmUnusable, match="use --accel tcg"):
            choose_accel(Accel.KVM, boot_kernel)
