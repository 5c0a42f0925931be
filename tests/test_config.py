"""build.yaml is validated whole, and every problem names the file and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from hotsauce.config import DebianBase, DownloadBase, ModuleKind, load_config
from hotsauce.errors import ConfigError
from hotsauce.host.sizes import parse_size


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "build.yaml"
    path.write_text(text)
    return path


def test_the_original_format_still_loads(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, (
        "modules:\n  - install-rpms\n  - add_user\nadd_users:\n  - harlowja\n"
        "download:\n  from: http://example.invalid/root.tar.gz\n  root_file: root.tar\n  cache_dir: cache\n"
    )))
    assert [m.name for m in config.modules] == ["install-rpms", "add_user"]
    assert isinstance(config.base, DownloadBase)
    assert config.base.root_file == "root.tar"
    assert config.base.cache_dir == tmp_path / "cache"


def test_a_build_yaml_without_a_base_means_debian(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "modules: []\n")).base == DebianBase()


def test_a_relative_download_path_is_relative_to_the_build_yaml(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "download:\n  from: roots/root.tar\n"))
    assert isinstance(config.base, DownloadBase)
    assert config.base.url == (tmp_path / "roots" / "root.tar").as_uri()


def test_explicit_module_kinds_carry_their_vars(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, (
        "modules:\n  - role: acme.webserver\n    vars: {webserver_port: 8080}\n"
        "  - playbook: playbooks/site.yml\n  - python: motd\n"
    )))
    kinds = [(m.kind, m.name) for m in config.modules]
    assert kinds == [(ModuleKind.ROLE, "acme.webserver"), (ModuleKind.PLAYBOOK, "playbooks/site.yml"),
                     (ModuleKind.PYTHON, "motd")]
    assert config.modules[0].vars == {"webserver_port": 8080}


@pytest.mark.parametrize(("text", "named"), [
    ("modules: [a\n", "malformed YAML"),
    ("modules: add_user\n", "modules: expected a list"),
    ("hostname: [x]\n", "hostname: expected a host name"),
    ("add_users: [{name: Bad Name}]\n", "add_users[0].name"),
    ("modules:\n  - ../x\n", "modules[0]: '../x' is not a module name"),
    ("modules:\n  - /etc/x\n", "modules[0]: '/etc/x' is not a module name"),
    ("modules:\n  - {role: a, python: b}\n", "exactly one of"),
    ("download:\n  from: ftp://x/y\n", "download.from"),
    ("download:\n  from: x.tar\n  sha256: nothex\n", "download.sha256"),
    ("base:\n  debian:\n    variant: huge\n", "base.debian.variant"),
    ("base: {debian: {}}\ndownload: {from: x.tar}\n", "not both"),
])
def test_bad_input_names_the_file_and_the_key(tmp_path: Path, text: str, named: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert str(path) in message and named in message
    assert "\n" not in message


@pytest.mark.parametrize(("text", "size"), [("512M", 512 << 20), ("4G", 4 << 30), ("1.5G", 3 << 29), ("4096", 4096)])
def test_sizes_read_as_qemu_img_reads_them(text: str, size: int) -> None:
    assert parse_size(text) == size


def test_an_unreadable_size_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="--size"):
        parse_size("lots")
