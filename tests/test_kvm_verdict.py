"""The KVM probe's verdict is remembered per host boot and kernel, so a folder build pays for it once."""

from __future__ import annotations

from pathlib import Path

import pytest

from hotsauce.boot import qemu
from hotsauce.store.cache import CACHE_ENV


@pytest.fixture
def kernel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    # Whether /dev/kvm opens is this host's business; what is under test is the remembering.
    monkeypatch.setattr(qemu, "kvm_device_usable", lambda: True)
    path = tmp_path / "vmlinuz"
    path.write_bytes(b"not really a kernel")
    return path


def test_a_remembered_verdict_is_used_without_booting_anything(kernel: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    probes: list[Path] = []
    monkeypatch.setattr(qemu, "_probe_kvm", lambda k, seconds: probes.append(k) or False)
    assert qemu.kvm_runs_kernel(kernel) is False
    assert qemu.kvm_runs_kernel(kernel) is False
    assert probes == [kernel]
    qemu._verdict_file(kernel).write_text("kvm")
    assert qemu.kvm_runs_kernel(kernel) is True


def test_another_kernel_is_probed_anew(kernel: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    probes: list[Path] = []
    monkeypatch.setattr(qemu, "_probe_kvm", lambda k, seconds: probes.append(k) or False)
    other = kernel.with_name("vmlinuz-other")
    other.write_bytes(b"another kernel")
    qemu.kvm_runs_kernel(kernel)
    qemu.kvm_runs_kernel(other)
    assert probes == [kernel, other]


def test_verdicts_of_earlier_host_boots_are_dropped(kernel: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(qemu, "_probe_kvm", lambda k, seconds: False)
    earlier_boot = qemu._verdict_file(kernel).parent.parent / "an-earlier-boot-id"
    earlier_boot.mkdir(parents=True)
    (earlier_boot / "some-kernel").write_text("kvm")
    qemu.kvm_runs_kernel(kernel)
    assert not earlier_boot.exists()
    assert qemu._verdict_file(kernel).read_text() == "tcg"
