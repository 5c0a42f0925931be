"""Which mmdebstrap hooks a bootstrap gets (the hooks' effect on a real base: test_base_debian)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hotsauce.bases import bootstrap_hooks
from hotsauce.bases.bootstrap_hooks import bootstrap_hooks as hooks_for


@pytest.fixture
def host_has_eatmydata(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    library = tmp_path / "libeatmydata.so.1"
    library.write_bytes(b"")
    monkeypatch.setattr(bootstrap_hooks, "HOST_EATMYDATA", (str(library),))
    return library


def test_a_bootable_bootstrap_gets_every_speed_up_each_switched_off_again(host_has_eatmydata: Path) -> None:
    hooks = hooks_for("minbase", ("linux-image-cloud-amd64", "initramfs-tools"))
    on = [hook for hook in hooks if hook.startswith(("--setup-hook=", "--essential-hook="))]
    off = [hook for hook in hooks if hook.startswith("--customize-hook=")]
    assert len(on) == len(off) == 3
    assert any(str(host_has_eatmydata) in hook for hook in on)
    assert any("update-initramfs -c -k all" in hook for hook in off)
    assert any(hook.startswith("--hook-dir=") and hook.endswith("maybe-merged-usr") for hook in hooks) == (
        bootstrap_hooks.MERGED_USR_HOOK_DIR.is_dir())


def test_without_initramfs_tools_nothing_defers_the_initramfs(host_has_eatmydata: Path) -> None:
    assert not [hook for hook in hooks_for("minbase", ("curl",)) if "update-initramfs" in hook]


def test_a_host_without_libeatmydata_bootstraps_without_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(bootstrap_hooks, "HOST_EATMYDATA", (str(tmp_path / "absent.so"),))
    assert not [hook for hook in hooks_for("minbase", ("initramfs-tools",)) if "eatmydata" in hook]


@pytest.mark.parametrize("variant", ["extract", "custom"])
def test_variants_that_install_nothing_with_dpkg_get_only_dpkg_s_own_switch(variant: str) -> None:
    assert hooks_for(variant, ("initramfs-tools",)) == list(bootstrap_hooks.UNSAFE_IO_HOOKS)
