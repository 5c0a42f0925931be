"""Whole builds whose module lists mix Ansible roles, playbooks and Python modules."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.images import mounted_root_image, run_hotsauce

pytestmark = pytest.mark.integration

DATA = Path(__file__).parent / "data" / "ansible"

MIXED_BUILD_YAML = """\
base:
  debian: {}
modules:
  - prepare                        # a Python module: plants an absolute symlink the role copies through
  - add_user                       # a built-in role
  - role: greeter                  # a user role with a template and a handler
    vars: {per_module: only-greeter}
  - role: acme.webserver           # installed from requirements.yml (a local tarball)
  - playbook: playbooks/site.yml   # the user's playbook
  - finale                         # a Python module that sees what the roles did
  - daemon                         # a public-style role: installs cron, enables and starts it
add_users:
  - alice
  - name: bob
    ssh_authorized_keys: ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHotSauceTestKeyOnlyForTests bob@test"]
vars:
  greeting: from-build-yaml
  color: blue
"""

PREPARE = """\
import os


def modify(name, root, cfg):
    os.makedirs(os.path.join(root, "srv/linked-target"), exist_ok=True)
    os.symlink("/srv/linked-target", os.path.join(root, "opt/linked"))
"""

FINALE = """\
from hotsauce.rootpath import inside


def modify(name, root, cfg):
    order = inside(root, "/etc/hotsauce-order").read_text().split()
    inside(root, "/etc/python-saw").write_text(",".join(order) + "\\n")
"""


def cron_processes() -> set[str]:
    return set(subprocess.run(["pgrep", "-x", "cron"], capture_output=True, text=True, check=False).stdout.split())


@pytest.fixture(scope="module")
def cron_before_the_build() -> set[str]:
    return cron_processes()


@pytest.fixture(scope="module")
def mixed_image(
    cron_before_the_build: set[str], debian_rootfs_tarball: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    work = tmp_path_factory.mktemp("mixed")
    project = work / "project"
    shutil.copytree(DATA / "build", project)
    shutil.copytree(DATA / "roles" / "daemon", project / "roles" / "daemon")
    (project / "python_modules").mkdir()
    (project / "python_modules" / "prepare.py").write_text(PREPARE)
    (project / "python_modules" / "finale.py").write_text(FINALE)
    (project / "build.yaml").write_text(MIXED_BUILD_YAML)
    subprocess.run(["tar", "-C", DATA / "galaxy", "-czf", work / "acme_web.tar.gz", "acme_web"], check=True)
    (project / "requirements.yml").write_text("- src: ../acme_web.tar.gz\n  name: acme.webserver\n")
    result = run_hotsauce("build", "-s", "2G", "-o", "out", cwd=project)
    assert result.returncode == 0, result.stderr[-3000:]
    return project / "out" / "root.qcow2"


def test_each_module_ran_in_order_and_saw_the_earlier_ones(mixed_image: Path, tmp_path: Path) -> None:
    with mounted_root_image(mixed_image, tmp_path) as root:
        assert (root / "etc/hotsauce-order").read_text().split() == ["greeter", "galaxy-role", "playbook"]
        assert (root / "etc/python-saw").read_text().strip() == "greeter,galaxy-role,playbook"
        assert (root / "etc/playbook-saw").read_text().startswith("saw=greeter,galaxy-role\n")
        assert "per_module=unset" in (root / "etc/playbook-saw").read_text()
        assert (root / "etc/greeter-handler").read_text() == "handler ran\n"
        assert (root / "srv/linked-target/through-symlink").read_text() == "inside the image\n"


def test_configuration_beats_role_defaults_and_set_fact_beats_configuration(mixed_image: Path,
                                                                            tmp_path: Path) -> None:
    with mounted_root_image(mixed_image, tmp_path) as root:
        greeting = (root / "etc/greeting").read_text()
    assert "from-build-yaml" in greeting and "red" in greeting and "role-default" not in greeting


def test_add_user_makes_sudo_users_with_their_keys(mixed_image: Path, tmp_path: Path) -> None:
    with mounted_root_image(mixed_image, tmp_path) as root:
        passwd = (root / "etc/passwd").read_text()
        assert "\nalice:" in passwd and "\nbob:" in passwd
        keys = root / "home/bob/.ssh/authorized_keys"
        assert "bob@test" in keys.read_text()
        assert oct(keys.stat().st_mode & 0o777) == "0o600"
        bob_uid = next(line for line in passwd.splitlines() if line.startswith("bob:")).split(":")[2]
        assert str(keys.stat().st_uid) == bob_uid
        drop_ins = {p.name for p in (root / "etc/sudoers.d").iterdir()}
        assert {"90-hotsauce-alice", "90-hotsauce-bob"} <= drop_ins
        # The image's own visudo, reading the image's own sudoers and drop-ins.
        checked = subprocess.run(["chroot", root, "visudo", "-c"], capture_output=True, text=True, check=False)
        assert checked.returncode == 0, checked.stdout + checked.stderr


def test_a_service_a_role_started_is_enabled_in_the_image_and_never_ran_on_the_host(
    mixed_image: Path, cron_before_the_build: set[str], tmp_path: Path
) -> None:
    with mounted_root_image(mixed_image, tmp_path) as root:
        assert (root / "etc/systemd/system/multi-user.target.wants/cron.service").is_symlink()
    assert cron_processes() <= cron_before_the_build, "the build started cron on the host"


def test_nothing_of_ansible_is_left_in_the_image(mixed_image: Path, tmp_path: Path) -> None:
    with mounted_root_image(mixed_image, tmp_path) as root:
        assert not (root / "root/.ansible").exists()
        assert not (root / "tmp/.hotsauce-ansible").exists()
        assert not (root / "usr/sbin/policy-rc.d").exists()
        assert (root / "etc/hostname").read_text().strip() == "hotsauce"
