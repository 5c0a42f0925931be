"""Boot an image set in QEMU and check it from inside the running guest.

`boot_image_set` boots the set's kernel and ramdisk with the root image as a
virtio disk (never changed: QEMU's snapshot), waits for the guest's default
target, runs each check inside the guest through the probe (see
hotsauce.boot.probe), and stops the guest. A guest that hangs, panics or
never finds its root fails within the timeout; when the serial console
already shows such a failure, it fails at once. The serial console is kept
in a log whose path is in the result.
"""

from __future__ import annotations

import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

from hotsauce.boot.firmware import Firmware, FirmwareMachine, choose_firmware, firmware_machine
from hotsauce.boot.probe import (
    PROBE_SERIAL,
    ProbeReport,
    autologin_script,
    fatal_console_line,
    last_console_line,
    parse_report,
    probe_cmdline,
    write_probe_disk,
)
from hotsauce.boot.qemu import Accel, Drive, Machine, choose_accel
from hotsauce.errors import BootFailed, ConfigError, QemuFailed
from hotsauce.events import Emit, Event, ignore, stage
from hotsauce.host.proc import child_process
from hotsauce.output.imageset import Manifest, opened_set, verify_set

# Under software emulation a bookworm guest reaches its target in 40-65 s on
# a quiet 2-core machine; other work on the machine can double that.
DEFAULT_TIMEOUT_SECONDS = 300.0
POLL_SECONDS = 0.5
CONSOLE_LOG_NAME = "console.log"
# Added to the set's own command line: the console, and a panic ends QEMU (-no-reboot).
BOOT_CMDLINE = "console=ttyS0,115200 panic=-1 systemd.show_status=1"


@dataclass(frozen=True)
class CheckResult:
    command: str
    status: int  # the command's exit status inside the guest; -1: it never ran
    output: str  # stdout and stderr together


@dataclass(frozen=True)
class BootResult:
    booted: bool  # the guest reached its default target
    reason: str  # one line: what happened
    checks: tuple[CheckResult, ...]
    serial_log: Path
    seconds: float

    @property
    def ok(self) -> bool:
        return self.booted and all(check.status == 0 for check in self.checks)

    def failed_checks(self) -> tuple[CheckResult, ...]:
        return tuple(check for check in self.checks if check.status != 0)

    def failure_message(self) -> str:
        """One line naming what went wrong and where the serial log is."""
        if not self.booted:
            return f"the guest did not boot: {self.reason} (serial log: {self.serial_log})"
        failed = self.failed_checks()
        if not failed:
            return ""
        named = ", ".join(f"{check.command!r} (status {check.status})" for check in failed)
        return f"check failed inside the guest: {named} (serial log: {self.serial_log})"

    def raise_for_failure(self) -> None:
        """For the build pipeline's --boot-check: a BootFailed unless ok."""
        if not self.ok:
            raise BootFailed(self.failure_message())

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "booted": self.booted,
            "reason": self.reason,
            "checks": [
                {"command": c.command, "status": c.status, "ok": c.status == 0, "output": c.output}
                for c in self.checks
            ],
            "serial_log": str(self.serial_log),
            "seconds": round(self.seconds, 1),
        }


def boot_image_set(
    set_path: Path,
    *,
    checks: Sequence[str] = (),
    timeout: float | None = None,
    log_dir: Path | None = None,
    emit: Emit = ignore,
    accel: Accel = Accel.TCG,
    firmware: Firmware | None = None,
    disk_size: int | None = None,
) -> BootResult:
    """Boot the set at `set_path` (a folder or tar.gz that build wrote) and run `checks` inside.

    A whole-disk set boots through `firmware` (default: the first its manifest names), from a
    scratch copy of `disk_size` bytes (default: the disk's own size); see hotsauce.boot.firmware.

    `timeout` bounds the whole boot, checks included (default
    DEFAULT_TIMEOUT_SECONDS). The serial console goes to `log_dir` (default: a
    new folder under the temp dir), which is kept.
    """
    limit = DEFAULT_TIMEOUT_SECONDS if timeout is None else timeout
    if limit <= 0:
        raise ConfigError(f"timeout {timeout}: must be a positive number of seconds")
    if isinstance(checks, str):  # a lone string would run as one check per character
        raise ConfigError(f"checks {checks!r}: expected a list of commands, not one string")
    with stage(emit, "boot"), opened_set(Path(set_path)) as folder:
        manifest = verify_set(folder)
        if manifest.layout == "disk":
            chosen = choose_firmware(manifest, firmware, folder)
            serial_log = _serial_log_path(log_dir)
            with TemporaryDirectory(prefix="hotsauce-boot-") as temp:
                guest = firmware_machine(folder, manifest, chosen, list(checks), Path(temp), serial_log,
                                         BOOT_CMDLINE, disk_size)
                emit(Event("info", "boot", f"booting {set_path} through {chosen.value} firmware "
                           f"({guest.accel.value}); serial log: {serial_log}"))
                return _run_guest(guest, list(checks), limit, emit)
        if firmware is not None or disk_size is not None:
            raise ConfigError(f"{folder}: --firmware and --disk-size are for whole-disk sets (layout: disk)")
        kernel, ramdisk = _kernel_and_ramdisk(folder, manifest)
        serial_log = _serial_log_path(log_dir)
        with TemporaryDirectory(prefix="hotsauce-boot-") as temp:
            work = Path(temp)
            machine = Machine(
                kernel=kernel,
                ramdisk=ramdisk,
                cmdline=f"{manifest.kernel_cmdline} {BOOT_CMDLINE} {probe_cmdline()}",
                drives=(
                    Drive(folder / manifest.root, manifest.image_format, snapshot=True),
                    Drive(
                        write_probe_disk(work / "probe.raw", checks),
                        "raw",
                        snapshot=False,
                        read_only=True,
                        serial=PROBE_SERIAL,
                    ),
                ),
                serial_files=(serial_log, work / "probe-report.log"),
                accel=choose_accel(accel, kernel),
            )
            emit(
                Event(
                    "info",
                    "boot",
                    f"booting {set_path} ({machine.accel.value}); serial log: {serial_log}",
                )
            )
            return _run_guest(machine, list(checks), limit, emit)


def console_command(set_path: Path, *, accel: Accel = Accel.TCG, autologin: bool = False) -> int:
    """An interactive serial console on this terminal, for a person; QEMU's exit status.

    Ctrl-A X quits QEMU. The image is still never changed. With `autologin`, root is logged in
    on the console: the probe disk carries a script that says so to the guest's serial getty
    (hotsauce.boot.probe.autologin_script), as it carries the checks.
    """
    with opened_set(Path(set_path)) as folder, TemporaryDirectory(prefix="hotsauce-boot-") as temp:
        manifest = verify_set(folder)
        if manifest.layout == "disk":
            raise ConfigError(f"{folder}: --console boots EC2-style sets; boot a whole disk with --check instead")
        kernel, ramdisk = _kernel_and_ramdisk(folder, manifest)
        drives = [Drive(folder / manifest.root, manifest.image_format, snapshot=True)]
        cmdline = f"{manifest.kernel_cmdline} {BOOT_CMDLINE}"
        if autologin:
            probe = write_probe_disk(Path(temp) / "autologin.raw", (), script=autologin_script())
            drives.append(Drive(probe, "raw", snapshot=False, read_only=True, serial=PROBE_SERIAL))
            cmdline += f" {probe_cmdline(power_off=False)}"
        machine = Machine(
            kernel=kernel,
            ramdisk=ramdisk,
            cmdline=cmdline,
            drives=tuple(drives),
            accel=choose_accel(accel, kernel),
            interactive=True,
        )
        # The terminal is the person's: QEMU reads it directly.
        with child_process(machine.argv(), stdin=None) as qemu:
            return qemu.wait()


def _serial_log_path(log_dir: Path | None) -> Path:
    if log_dir is None:
        log_dir = Path(tempfile.mkdtemp(prefix="hotsauce-boot-log-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    return log_dir / CONSOLE_LOG_NAME


def _kernel_and_ramdisk(folder: Path, manifest: Manifest) -> tuple[Path, Path | None]:
    if manifest.kernel is None:
        raise ConfigError(
            f"{folder}: the image set has no kernel (built with kernel: false); "
            "boot needs one to start the guest"
        )
    ramdisk = folder / manifest.ramdisk if manifest.ramdisk else None
    return folder / manifest.kernel, ramdisk


def _run_guest(machine: Machine | FirmwareMachine, checks: list[str], limit: float, emit: Emit) -> BootResult:
    serial_log, report_file = machine.serial_files
    started = time.monotonic()
    with child_process(machine.argv(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) as qemu:
        progress = _Progress(emit, checks)
        reason = _watch(qemu, serial_log, report_file, started + limit, progress)
    # QEMU is gone, stopped by child_process also when the probe has reported everything: the
    # guest's orderly power-off took 4 s of a 22 s boot, and its disk is a snapshot that goes.
    # Its files are complete.
    report = parse_report(_read(report_file))
    seconds = time.monotonic() - started
    return _result(report, reason, checks, serial_log, seconds)


def _watch(
    qemu: subprocess.Popen[bytes],
    serial_log: Path,
    report_file: Path,
    deadline: float,
    progress: _Progress,
) -> str | None:
    """Wait until the probe is done (None) or the boot has failed (the reason)."""
    while True:
        report = parse_report(_read(report_file))
        progress.tell(report)
        if report.done:
            return None
        console = _read(serial_log)
        if fatal := fatal_console_line(console):
            return fatal
        if qemu.poll() is not None:
            return _early_exit_reason(qemu, report, console)
        if time.monotonic() > deadline:
            return f"timed out; last console line: {last_console_line(console)}"
        time.sleep(POLL_SECONDS)


@dataclass
class _Progress:
    """Turns what the probe has reported so far into events, each said once."""

    emit: Emit
    checks: list[str]
    reached_told: bool = False
    checks_told: int = 0

    def tell(self, report: ProbeReport) -> None:
        if report.reached and not self.reached_told:
            self.reached_told = True
            self.emit(Event("info", "boot", f"the guest reached {report.target}"))
        for reported in report.checks[self.checks_told :]:
            command = self.checks[reported.index]
            self.emit(
                Event(
                    "info",
                    "boot",
                    f"check {command!r}: status {reported.status}",
                    {"command": command, "status": reported.status},
                )
            )
        self.checks_told = len(report.checks)


def _early_exit_reason(qemu: subprocess.Popen[bytes], report: ProbeReport, console: str) -> str:
    if qemu.returncode != 0:
        stderr = qemu.stderr.read().decode(errors="replace").strip() if qemu.stderr else ""
        tail = stderr.splitlines()[-1] if stderr else "no message"
        raise QemuFailed(f"QEMU exited with status {qemu.returncode}: {tail}")
    if not report.started:
        return (
            f"the guest stopped before the probe started; last console line: "
            f"{last_console_line(console)}"
        )
    return "the guest stopped before the probe finished"


def _result(
    report: ProbeReport, reason: str | None, checks: list[str], serial_log: Path, seconds: float
) -> BootResult:
    by_index = {reported.index: reported for reported in report.checks}
    results = tuple(
        CheckResult(command, by_index[i].status, by_index[i].output)
        if i in by_index
        else CheckResult(command, -1, "(did not run)")
        for i, command in enumerate(checks)
    )
    failed_units = ", ".join(report.failed_units) or "none"
    if report.target_failed:
        reason = f"{report.target} failed to start (failed units: {failed_units})"
    elif reason is None:
        reason = f"reached {report.target} (failed units: {failed_units})"
    return BootResult(report.reached, reason, results, serial_log, seconds)


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""
