"""build.yaml is validated whole, and every problem names the file and the key."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import pytest

import hotsauce.config as config_module
from hotsauce.config import (
    BUILD_YAML,
    Choice,
    DebianBase,
    DownloadBase,
    FsType,
    Key,
    ModuleKind,
    default_config_text,
    find_key,
    json_schema,
    keys_table_markdown,
    load_config,
)
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
    ("modules:\n  - ../x\n", "modules[0]: expected a module name (a name, not a path), got '../x'"),
    ("modules:\n  - /etc/x\n", "modules[0]: expected a module name"),
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


@pytest.mark.parametrize(("text", "named"), [
    ("modules: {a: 1}\n", "modules: expected a list of module names or mappings"),
    ("modules: [3]\n", "modules[0]: expected a module name or a mapping, got a int"),
    ("modules:\n  - {role: web, vars: [1]}\n", "modules[0].vars: expected a mapping"),
    ("modules:\n  - {role: web, when: x}\n", "modules[0].when: unknown key"),
    ("modules:\n  - {vars: {}}\n", "modules[0]: expected exactly one of 'role', 'playbook', 'python'"),
    ("modules:\n  - {python: ''}\n", "modules[0].python: expected a module name"),
])
def test_the_modules_declaration_refuses_what_cannot_be_a_module(tmp_path: Path, text: str, named: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(named)):
        load_config(write(tmp_path, text))


def test_an_unsupported_architecture_is_refused_naming_the_key(tmp_path: Path) -> None:
    path = write(tmp_path, "base:\n  debian:\n    architecture: arm64\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value) == (f"{path}: base.debian.architecture: expected amd64 (the only architecture "
                                 "hotsauce builds), got 'arm64'")


def test_a_misspelt_nested_key_suggests_the_nearest_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"base\.debian\.suit: unknown key \(did you mean 'suite'\?\)"):
        load_config(write(tmp_path, "base:\n  debian:\n    suit: trixie\n"))


def test_absent_keys_take_the_tables_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "base: {debian: }\n"))
    for path in ("hostname", "kernel", "modules", "base.debian.suite", "base.debian.variant",
                 "base.debian.bootable", "base.debian.architecture", "base.debian.include"):
        assert config.value(path) == find_key(path).default
    assert config.hostname == find_key("hostname").default
    assert config.base == DebianBase()
    assert (DebianBase().suite, DebianBase().variant) == (find_key("base.debian.suite").default,
                                                          find_key("base.debian.variant").default)


def test_the_default_build_yaml_is_what_the_table_says_init_writes() -> None:
    config = load_config(None)
    assert config.data["modules"] == find_key("modules").init
    assert config.data["add_users"] == find_key("add_users").init
    assert config.data["base"] == {"debian": {"suite": "bookworm", "variant": "minbase", "include": [],
                                              "bootable": True}}
    assert set(config.data) == {"base", "modules", "hostname", "add_users"}


def test_a_key_added_to_the_table_is_validated_defaulted_and_documented(monkeypatch: pytest.MonkeyPatch,
                                                                         tmp_path: Path) -> None:
    added = Key("flavor", Choice.of(FsType), "an example of a new key", default="ext4")
    monkeypatch.setattr(config_module, "BUILD_YAML", dataclasses.replace(BUILD_YAML, keys=(*BUILD_YAML.keys, added)))
    assert load_config(write(tmp_path, "modules: []\n")).value("flavor") == "ext4"
    with pytest.raises(ConfigError, match="flavor: expected one of ext4, xfs, btrfs"):
        load_config(write(tmp_path, "flavor: zfs\n"))
    assert "| `flavor` |" in keys_table_markdown()
    assert "flavor" in json_schema()["properties"]
    assert "# flavor: ext4" in default_config_text()


def test_hotsauce_build_refuses_an_unsupported_architecture_before_allocating(tmp_path: Path) -> None:
    write(tmp_path, "base:\n  debian:\n    architecture: arm64\n")
    result = subprocess.run([sys.executable, "-m", "hotsauce", "build", "-s", "1G", "-o", "out"], cwd=tmp_path,
                            capture_output=True, text=True, check=False)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"hotsauce: {tmp_path / 'build.yaml'}: base.debian.architecture: expected amd64 (the only architecture "
        "hotsauce builds), got 'arm64'"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["build.yaml"]
