"""The KVM probe's verdict is remembered per host boot and kernel in the folder it is given, so folder
builds sharing a cache pay for it once."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from subprocess import Popen

import pytest

from hotsauce.boot import qemu
from hotsauce.host.proc import child_process


@pytest.fixture
def kernel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(qemu, "_kvm_verdicts", {})
    monkeypatch.setattr(qemu, "_probes_running", {})
    # Whether /dev/kvm opens is this host's business; what is under test is the remembering.
    monkeypatch.setattr(qemu, "kvm_device_usable", lambda: True)
    path = tmp_path / "vmlinuz"
    path.write_bytes(b"not really a kernel")
    return path


def probe_recording_into(probes: list[Path]) -> Callable[[Path, float], bool]:
    """A stand-in for the QEMU probe that notes each kernel it is asked about and answers no."""

    def probe(kernel: Path, seconds: float) -> bool:
        probes.append(kernel)
        return False

    return probe


def test_a_remembered_verdict_is_used_without_booting_anything(kernel: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    probes: list[Path] = []
    monkeypatch.setattr(qemu, "_probe_kvm", probe_recording_into(probes))
    assert qemu.kvm_runs_kernel(kernel, remember_in=kernel.parent / 'probe') is False
    assert qemu.kvm_runs_kernel(kernel, remember_in=kernel.parent / 'probe') is False
    assert probes == [kernel]
    qemu._verdict_file(kernel.parent / 'probe', qemu._kernel_digest(kernel)).write_text("kvm")
    monkeypatch.setattr(qemu, "_kvm_verdicts", {})  # as a new process sees it
    assert qemu.kvm_runs_kernel(kernel, remember_in=kernel.parent / 'probe') is True


def test_another_kernel_is_probed_anew(kernel: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    probes: list[Path] = []
    monkeypatch.setattr(qemu, "_probe_kvm", probe_recording_into(probes))
    other = kernel.with_name("vmlinuz-other")
    other.write_bytes(b"another kernel")
    qemu.kvm_runs_kernel(kernel, remember_in=kernel.parent / 'probe')
    qemu.kvm_runs_kernel(other, remember_in=kernel.parent / 'probe')
    assert probes == [kernel, other]


def test_verdicts_of_earlier_host_boots_are_dropped(kernel: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(qemu, "_probe_kvm", lambda k, seconds: False)
    this_boot = qemu._verdict_file(kernel.parent / 'probe', qemu._kernel_digest(kernel)).parent
    earlier_boot = this_boot.parent / "an-earlier-boot-id"
    earlier_boot.mkdir(parents=True)
    (earlier_boot / "some-kernel").write_text("kvm")
    qemu.kvm_runs_kernel(kernel, remember_in=kernel.parent / 'probe')
    assert not earlier_boot.exists()
    assert qemu._verdict_file(kernel.parent / 'probe', qemu._kernel_digest(kernel)).read_text() == "tcg"


def guest_that_panics(kernel: Path, temp: Path) -> AbstractContextManager[Popen[bytes]]:
    """A stand-in for the probe's QEMU: what a guest under working KVM prints, a moment later."""
    return child_process(["sh", "-c", f"sleep 0.3; echo 'Kernel panic - not syncing' > {temp}/console.log"])


def test_a_probe_started_beforehand_gives_the_verdict_without_a_second_probe(
    kernel: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    probes: list[Path] = []
    monkeypatch.setattr(qemu, "_probe_kvm", probe_recording_into(probes))
    monkeypatch.setattr(qemu, "_probe_qemu", guest_that_panics)
    with qemu.kvm_probe_started(kernel, remember_in=kernel.parent / "probe"):
        assert qemu.kvm_runs_kernel(kernel, remember_in=kernel.parent / "probe") is True
    assert probes == []
    assert qemu._verdict_file(kernel.parent / "probe", qemu._kernel_digest(kernel)).read_text() == "kvm"
    assert qemu._probes_running == {}


def test_no_probe_starts_when_the_verdict_is_remembered(kernel: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[Path] = []

    def recording(kernel: Path, temp: Path) -> AbstractContextManager[Popen[bytes]]:
        started.append(kernel)
        return guest_that_panics(kernel, temp)

    monkeypatch.setattr(qemu, "_probe_qemu", recording)
    remembered = qemu._verdict_file(kernel.parent / "probe", qemu._kernel_digest(kernel))
    remembered.parent.mkdir(parents=True)
    remembered.write_text("tcg")
    with qemu.kvm_probe_started(kernel, remember_in=kernel.parent / "probe"):
        assert qemu.kvm_runs_kernel(kernel, remember_in=kernel.parent / "probe") is False
    assert started == []


def probe_of(process: Popen[bytes], console: Path, deadline_in: float, first_line_in: float) -> qemu._RunningProbe:
    now = time.monotonic()
    return qemu._RunningProbe(process, console, now + deadline_in, now + first_line_in)


SPIN = [sys.executable, "-c", "while True: pass"]


def test_a_probe_starved_of_cpu_says_nothing_and_is_not_remembered(
        kernel: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A guest still running at the deadline with hardly any CPU had no chance to boot: the build beside
    it had the cores. The build gets TCG; the verdict is left for a later probe."""
    with child_process(["sleep", "30"]) as idle:
        assert probe_of(idle, kernel.parent / "no-console.log", 0.5, 0.2).verdict() is None
    probes: list[Path] = []

    def starved_probe(kernel: Path, seconds: float) -> None:
        probes.append(kernel)

    monkeypatch.setattr(qemu, "_probe_kvm", starved_probe)
    assert qemu.kvm_runs_kernel(kernel, remember_in=kernel.parent / "probe") is False
    assert qemu.kvm_runs_kernel(kernel, remember_in=kernel.parent / "probe") is False
    assert probes == [kernel, kernel]
    assert not qemu._verdict_file(kernel.parent / "probe", qemu._kernel_digest(kernel)).exists()


def test_a_guest_that_spins_without_a_kernel_line_is_hung_long_before_the_deadline(
        kernel: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(qemu, "KVM_PROBE_FIRST_LINE_CPU_SECONDS", 0.3)
    with child_process(SPIN) as spinning:
        started = time.monotonic()
        assert probe_of(spinning, kernel.parent / "no-console.log", 60, 0.5).verdict() is False
        assert time.monotonic() - started < 5
        assert qemu.cpu_seconds(spinning.pid) >= 0.3


def test_a_guest_that_printed_its_first_line_is_given_until_the_deadline_to_panic(kernel: Path) -> None:
    console = kernel.parent / "console.log"
    slow_boot = ["sh", "-c", f"echo 'Linux version 6.1' > {console}; sleep 1.5; echo 'Kernel panic' >> {console}"]
    with child_process(slow_boot) as guest:
        assert probe_of(guest, console, 10, 0.2).verdict() is True


def test_a_guest_that_spins_until_the_deadline_is_hung(kernel: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(qemu, "KVM_PROBE_MIN_CPU_SECONDS", 0.4)
    console = kernel.parent / "console.log"
    console.write_text("Linux version 6.1\n")  # booting, as far as the first line goes
    with child_process(SPIN) as spinning:
        assert probe_of(spinning, console, 1.0, 0.1).verdict() is False


def test_a_silent_probe_beside_the_build_is_stopped_and_remembered_as_hung(
        kernel: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(qemu, "KVM_PROBE_FIRST_LINE_SECONDS", 0.5)
    monkeypatch.setattr(qemu, "KVM_PROBE_FIRST_LINE_CPU_SECONDS", 0.3)
    monkeypatch.setattr(qemu, "_probe_qemu", lambda kernel, temp: child_process(SPIN))
    with qemu.kvm_probe_started(kernel, remember_in=kernel.parent / "probe"):
        guest = qemu._probes_running[qemu._kernel_digest(kernel)].qemu
        stopped_by = time.monotonic() + 10
        while guest.poll() is None and time.monotonic() < stopped_by:
            time.sleep(0.1)
        assert guest.poll() is not None  # stopped while the build's block still runs
        assert qemu.kvm_runs_kernel(kernel, remember_in=kernel.parent / "probe") is False
    assert qemu._verdict_file(kernel.parent / "probe", qemu._kernel_digest(kernel)).read_text() == "tcg"


def test_the_probe_qemu_runs_at_the_lowest_priority(kernel: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[list[str]] = []

    def recording(argv: list[str], **options: object) -> AbstractContextManager[Popen[bytes]]:
        started.append([str(arg) for arg in argv])
        return child_process(["true"])

    monkeypatch.setattr(qemu, "child_process", recording)
    monkeypatch.setattr(qemu, "qemu_binary", lambda: "qemu-system-x86_64")
    with qemu._probe_qemu(kernel, kernel.parent):
        pass
    [argv] = started
    assert argv[:3] == ["nice", "-n", "19"] and Path(argv[3]).name == "qemu-system-x86_64"
