"""The built-in cloud_init module: cloud-init installed and configured for clouds, the default user
taken from add_users, no password login."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.images import mounted_root_image, run_hotsauce

pytestmark = pytest.mark.integration


def test_cloud_init_is_installed_with_datasources_and_the_first_add_user_as_default_user(
        session_cache: Path, tmp_path: Path) -> None:
    (tmp_path / "build.yaml").write_text("add_users: [alice]\nmodules: [add_user, cloud_init]\n")
    result = run_hotsauce("build", "-s", "2G", "-o", tmp_path / "out", cwd=tmp_path, timeout=1800)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    with mounted_root_image(tmp_path / "out" / "root.qcow2", tmp_path) as root:
        assert (root / "usr/bin/cloud-init").exists()
        config = yaml.safe_load((root / "etc/cloud/cloud.cfg.d/90_hotsauce.cfg").read_text())
        assert not (root / "var/lib/cloud").exists()
    assert config["datasource_list"][-1] == "None" and "Ec2" in config["datasource_list"]
    assert config["ssh_pwauth"] is False
    assert config["system_info"]["default_user"]["name"] == "alice"
    assert config["system_info"]["default_user"]["lock_passwd"] is True
