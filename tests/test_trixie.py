"""Debian 13 (trixie) bases, bootstrapped from this bookworm host with its own keyring: a whole disk
boots through SeaBIOS and OVMF, and the EC2-style set boots directly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.disk_boots import BootRun, boot, boots_at_once
from tests.images import run_hotsauce

pytestmark = [pytest.mark.integration, pytest.mark.boot]

TRIXIE_YAML = "base:\n  debian:\n    suite: trixie\nadd_users: [alice]\nmodules: [add_user]\n"


def build_trixie(project: Path, *args: str) -> Path:
    (project / "build.yaml").write_text(TRIXIE_YAML)
    output = project / "out"
    result = run_hotsauce("build", "-s", "2G", "-o", output, *args, cwd=project, timeout=1800)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return output


@pytest.fixture(scope="module")
def trixie_disk(session_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_trixie(tmp_path_factory.mktemp("trixie-disk"), "--layout", "disk")


@pytest.fixture(scope="module")
def trixie_disk_boots(trixie_disk: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, BootRun]:
    """The disk booted through SeaBIOS and OVMF at once, each checked from inside."""
    checks = ("--check", "grep -q '^13' /etc/debian_version", "--check", "id alice")
    return boots_at_once(trixie_disk, tmp_path_factory.mktemp("trixie-boots"), {
        "bios": ("--firmware", "bios", "--check", "test ! -d /sys/firmware/efi", *checks),
        "uefi": ("--firmware", "uefi", "--check", "test -d /sys/firmware/efi", *checks),
    })


@pytest.mark.parametrize("firmware", ["bios", "uefi"])
def test_a_trixie_disk_boots_through_each_firmware(trixie_disk: Path, trixie_disk_boots: dict[str, BootRun],
                                                    firmware: str) -> None:
    verdict = trixie_disk_boots[firmware].booted()
    assert [check["status"] for check in verdict["checks"]] == [0, 0, 0], verdict["checks"]
    manifest = json.loads((trixie_disk / "manifest.json").read_text())
    assert manifest["os_version"] == "13" and manifest["boot_modes"] == ["bios", "uefi"]


def test_a_trixie_ec2_set_boots_directly(session_cache: Path, tmp_path_factory: pytest.TempPathFactory,
                                         tmp_path: Path) -> None:
    image_set = build_trixie(tmp_path_factory.mktemp("trixie-ec2"))
    verdict = boot(image_set, tmp_path, "--check", "grep -q '^13' /etc/debian_version")
    assert verdict["checks"][0]["status"] == 0
