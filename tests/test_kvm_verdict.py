"""The KVM probe's verdict is remembered per host boot and kernel in the folder it is given, so folder
builds sharing a cache pay for it once."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from hotsauce.boot import qemu


@pytest.fixture
def kernel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(qemu, "_kvm_verdicts", {})
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
    qemu._verdict_file(kernel.parent / 'probe', kernel).write_text("kvm")
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
    earlier_boot = qemu._verdict_file(kernel.parent / 'probe', kernel).parent.parent / "an-earlier-boot-id"
    earlier_boot.mkdir(parents=True)
    (earlier_boot / "some-kernel").write_text("kvm")
    qemu.kvm_runs_kernel(kernel, remember_in=kernel.parent / 'probe')
    assert not earlier_boot.exists()
    assert qemu._verdict_file(kernel.parent / 'probe', kernel).read_text() == "tcg"
