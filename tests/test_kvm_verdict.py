"""The KVM probe's verdict is remembered per host boot and kernel in the folder it is given, so folder
builds sharing a cache pay for it once."""

from __future__ import annotations

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
