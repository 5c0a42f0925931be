"""hotsauce's built-in roles as the collection hotsauce.image: built by scripts/build-collection,
installed with ansible-galaxy, and used by plain ansible-playbook against an image root."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from hotsauce import __version__
from hotsauce.config import load_config
from hotsauce.modules.builtins import builtin_folder
from hotsauce.modules.chroot import build_chroot
from hotsauce.modules.resolve import module_search, resolve_all
from tests.image_root import extracted_root

REPOSITORY = Path(__file__).resolve().parents[1]
BUILD_COLLECTION = REPOSITORY / "scripts" / "build-collection"
ANSIBLE_BIN = Path(sys.executable).parent
CAROL_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHotsauceCollectionTestKey carol@example"


def ansible_environment(home: Path, collections: Path) -> dict[str, str]:
    """Ansible as a user outside hotsauce runs it, with nothing of this host's Ansible set-up."""
    home.mkdir(parents=True, exist_ok=True)
    config = home / "ansible.cfg"
    config.write_text("")
    return {
        **os.environ,
        "PATH": f"{ANSIBLE_BIN}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
        "HOME": str(home),
        "ANSIBLE_CONFIG": str(config),
        "ANSIBLE_HOME": str(home / ".ansible"),
        "ANSIBLE_LOCAL_TEMP": str(home / "tmp"),
        "ANSIBLE_COLLECTIONS_PATH": str(collections),
        "ANSIBLE_NOCOLOR": "true",
    }


@pytest.fixture(scope="module")
def installed_collection(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The collection built from this checkout and installed into a temporary path: the
    environment in which Ansible finds it."""
    work = tmp_path_factory.mktemp("collection")
    built = subprocess.run([BUILD_COLLECTION, work / "dist"], capture_output=True, text=True, check=False)
    assert built.returncode == 0, built.stderr
    tarball = Path(built.stdout.strip())
    env = ansible_environment(work / "home", work / "collections")
    installed = subprocess.run(
        ["ansible-galaxy", "collection", "install", str(tarball), "-p", str(work / "collections")],
        capture_output=True, text=True, env=env, check=False,
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr
    yield env


def test_the_collection_tarball_holds_the_roles_and_the_connection_named_chroot(
        installed_collection: dict[str, str]) -> None:
    collection = Path(installed_collection["ANSIBLE_COLLECTIONS_PATH"]) / "ansible_collections/hotsauce/image"
    shipped = sorted(p.name for p in (collection / "roles").iterdir())
    assert shipped == sorted(p.name for p in builtin_folder("roles").iterdir() if p.is_dir())
    doc = subprocess.run(["ansible-doc", "--json", "-t", "connection", "hotsauce.image.chroot"],
                         capture_output=True, text=True, env=installed_collection, check=False)
    assert doc.returncode == 0, doc.stderr
    assert "hotsauce.image.chroot" in yaml.safe_load(doc.stdout)


def test_a_changed_plugin_documentation_name_stops_the_collection_build(tmp_path: Path) -> None:
    """The build renames the plugin's documented name; it refuses a plugin it cannot rename."""
    checkout = tmp_path / "checkout"
    (checkout / "scripts").mkdir(parents=True)
    subprocess.run(["cp", "-a", BUILD_COLLECTION, checkout / "scripts"], check=True)
    subprocess.run(["cp", "-a", REPOSITORY / "collection", REPOSITORY / "roles", checkout], check=True)
    plugin = checkout / "hotsauce/modules/ansible_plugins/connection/hotsauce_chroot.py"
    plugin.parent.mkdir(parents=True)
    source = (REPOSITORY / "hotsauce/modules/ansible_plugins/connection/hotsauce_chroot.py").read_text()
    plugin.write_text(source.replace("name: hotsauce_chroot", "name: image_root"))
    result = subprocess.run([checkout / "scripts/build-collection", "--tree", tmp_path / "tree"],
                            capture_output=True, text=True, check=False)
    assert result.returncode != 0
    assert "expected one 'name: hotsauce_chroot' line" in result.stderr


def test_the_collection_version_is_hotsauces_and_the_changelog_has_it() -> None:
    galaxy = yaml.safe_load((REPOSITORY / "collection/galaxy.yml").read_text())
    changelog = yaml.safe_load((REPOSITORY / "collection/changelogs/changelog.yaml").read_text())
    assert (galaxy["namespace"], galaxy["name"]) == ("hotsauce", "image")
    assert galaxy["version"] == __version__
    assert __version__ in changelog["releases"]


@pytest.mark.parametrize("role", sorted(p.name for p in builtin_folder("roles").iterdir() if p.is_dir()))
def test_each_builtin_role_documents_every_default_in_its_argument_specs(role: str) -> None:
    folder = builtin_folder("roles") / role
    specs = yaml.safe_load((folder / "meta/argument_specs.yml").read_text())
    documented = set(specs["argument_specs"]["main"]["options"])
    defaults_file = folder / "defaults/main.yml"
    defaults = set(yaml.safe_load(defaults_file.read_text()) or {}) if defaults_file.is_file() else set()
    assert defaults <= documented, f"undocumented: {sorted(defaults - documented)}"


def test_the_collection_name_of_a_builtin_role_resolves_to_the_same_role(tmp_path: Path) -> None:
    (tmp_path / "build.yaml").write_text(
        "download: {from: root.tar}\nmodules: [add_user, hotsauce.image.add_user, hotsauce.image.install-packages]\n"
    )
    config = load_config(tmp_path / "build.yaml")
    bare, qualified, dashed = resolve_all(config, module_search(config))
    assert bare.path == qualified.path == builtin_folder("roles") / "add_user"
    assert dashed.path == builtin_folder("roles") / "install_packages"


PLAYBOOK = """\
- name: Users in an image root, with the collection's role and connection
  hosts: image
  roles:
    - role: hotsauce.image.add_user
      vars:
        add_users:
          - name: carol
            ssh_authorized_keys: ["{key}"]
"""


@pytest.mark.integration
def test_plain_ansible_playbook_runs_the_collections_add_user_in_an_image_root(
        installed_collection: dict[str, str], debian_rootfs_tarball: Path, tmp_path: Path) -> None:
    (tmp_path / "playbook.yml").write_text(PLAYBOOK.format(key=CAROL_KEY))
    with extracted_root(debian_rootfs_tarball, tmp_path) as root:
        (tmp_path / "inventory.ini").write_text(
            f"image ansible_host={root} ansible_connection=hotsauce.image.chroot "
            "ansible_python_interpreter=auto_silent\n"
        )
        with build_chroot(root):  # /proc, /sys, /dev and name resolution, as the plugin's tasks need
            result = subprocess.run(
                ["ansible-playbook", "-i", "inventory.ini", "playbook.yml"],
                cwd=tmp_path, capture_output=True, text=True, env=installed_collection, check=False,
            )
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
        passwd = {line.split(":")[0]: line.split(":") for line in (root / "etc/passwd").read_text().splitlines()}
        assert "carol" in passwd
        home = root / passwd["carol"][5].lstrip("/")
        assert (home / ".ssh/authorized_keys").read_text() == CAROL_KEY + "\n"
        assert (root / "etc/sudoers.d/90-hotsauce-carol").is_file()
