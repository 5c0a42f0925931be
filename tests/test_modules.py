"""Module names resolve place by place; Python and Ansible modules are planned into runs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from hotsauce.config import ModuleKeys, ModuleKind, check_unknown_keys, load_config
from hotsauce.errors import ConfigError
from hotsauce.modules.builtins import builtin_folder
from hotsauce.modules.resolve import (
    CfgReads,
    ResolvedModule,
    cfg_reads,
    module_search,
    plan_runs,
    python_module_keys,
    resolve_all,
    variables_read_by,
)

MODIFY = "def modify(name, root, cfg):\n    pass\n"


def project(tmp_path: Path, modules: str, extra: str = "") -> Path:
    (tmp_path / "python_modules").mkdir(exist_ok=True)
    (tmp_path / "roles").mkdir(exist_ok=True)
    path = tmp_path / "build.yaml"
    path.write_text(f"download: {{from: root.tar}}\nmodules:\n{modules}{extra}")
    return path


def resolve(path: Path) -> list[ResolvedModule]:
    config = load_config(path)
    return resolve_all(config, module_search(config))


def test_dashes_and_underscores_name_the_same_module(tmp_path: Path) -> None:
    path = project(tmp_path, "  - my-module\n")
    (tmp_path / "python_modules" / "my_module.py").write_text(MODIFY)
    [module] = resolve(path)
    assert module.kind is ModuleKind.PYTHON and module.path.name == "my_module.py"


def test_a_user_module_wins_over_a_builtin_of_the_same_name(tmp_path: Path) -> None:
    path = project(tmp_path, "  - build_info\n")
    (tmp_path / "python_modules" / "build_info.py").write_text(MODIFY)
    [module] = resolve(path)
    assert module.path == tmp_path / "python_modules" / "build_info.py"


def test_builtin_python_modules_are_found(tmp_path: Path) -> None:
    [module] = resolve(project(tmp_path, "  - build_info\n"))
    assert module.kind is ModuleKind.PYTHON and module.path.parent.name == "python_modules"


def test_a_name_that_is_both_kinds_in_one_place_is_an_error_naming_both(tmp_path: Path) -> None:
    path = project(tmp_path, "  - motd\n")
    (tmp_path / "python_modules" / "motd.py").write_text(MODIFY)
    (tmp_path / "roles" / "motd" / "tasks").mkdir(parents=True)
    with pytest.raises(ConfigError, match=r"both a Python module .*motd.py.* and a role .*roles/motd"):
        resolve(path)


def test_an_unknown_module_lists_the_available_ones(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"modules\[0\]: unknown module 'nope'; available: .*build_info"):
        resolve(project(tmp_path, "  - nope\n"))


def test_a_python_module_without_modify_is_refused(tmp_path: Path) -> None:
    path = project(tmp_path, "  - broken\n")
    (tmp_path / "python_modules" / "broken.py").write_text("def something():\n    pass\n")
    with pytest.raises(ConfigError, match="has no function modify"):
        resolve(path)


def test_a_python_module_with_the_wrong_signature_is_refused(tmp_path: Path) -> None:
    path = project(tmp_path, "  - broken\n")
    (tmp_path / "python_modules" / "broken.py").write_text("def modify(root):\n    pass\n")
    with pytest.raises(ConfigError, match=r"modify takes \(root\)"):
        resolve(path)


def test_consecutive_ansible_modules_share_a_run_and_python_splits_them(tmp_path: Path) -> None:
    for role in ("one", "two", "three"):
        (tmp_path / "roles" / role / "tasks").mkdir(parents=True)
    path = project(tmp_path, "  - one\n  - two\n  - stamp\n  - three\n")
    (tmp_path / "python_modules" / "stamp.py").write_text(MODIFY)
    runs = plan_runs(resolve(path))
    assert [[m.name for m in run] for run in runs] == [["one", "two"], ["stamp"], ["three"]]


def test_role_defaults_declare_the_keys_a_build_yaml_may_set(tmp_path: Path) -> None:
    defaults = tmp_path / "roles" / "web" / "defaults"
    defaults.mkdir(parents=True)
    (defaults / "main.yml").write_text("web_port: 80\n")
    assert "web_port" in variables_read_by(resolve(project(tmp_path, "  - web\n"))).names()


PROTOTYPE_MODULE = '''
def modify(name, root, cfg):
    with open(root + "/etc/stamp", "w") as out:
        out.write(cfg["stamp_text"] + cfg.get("stamp_suffix", ""))
    if "stamp_extra" in cfg:
        pass
'''

OPAQUE_MODULE = '''
def modify(name, root, cfg):
    for key, value in cfg.items():
        print(key, value)
'''


def keys_of(tmp_path: Path, modules: str, extra: str = "") -> tuple[ModuleKeys, list[str]]:
    path = project(tmp_path, modules, extra)
    config = load_config(path)
    keys = variables_read_by(resolve_all(config, module_search(config)))
    return keys, check_unknown_keys(config, keys)


def test_a_key_read_in_a_helper_of_the_same_file_is_found(tmp_path: Path) -> None:
    (tmp_path / "m.py").write_text("def text_of(settings):\n    return settings['stamp_text']\n\n"
                                   "def modify(name, root, cfg):\n    return text_of(cfg)\n")
    assert cfg_reads(tmp_path / "m.py") == CfgReads(frozenset({"stamp_text"}), True)


def test_keys_a_python_module_reads_by_literal_name_count_as_declared(tmp_path: Path) -> None:
    (tmp_path / "python_modules").mkdir(exist_ok=True)
    (tmp_path / "python_modules" / "stamp.py").write_text(PROTOTYPE_MODULE)
    keys, warnings = keys_of(tmp_path, "  - stamp\n", "stamp_text: hi\nstamp_suffix: '!'\nstamp_extra: 1\n")
    assert keys.read == {"stamp_text", "stamp_suffix", "stamp_extra"} and keys.unreadable == ()
    assert warnings == []


def test_an_unknown_key_is_refused_when_every_module_reads_cfg_legibly(tmp_path: Path) -> None:
    (tmp_path / "python_modules").mkdir(exist_ok=True)
    (tmp_path / "python_modules" / "stamp.py").write_text(PROTOTYPE_MODULE)
    with pytest.raises(ConfigError, match=r"stamp_txt: unknown key \(did you mean 'stamp_text'\?\)"):
        keys_of(tmp_path, "  - stamp\n", "stamp_txt: hi\n")


def test_an_unknown_key_is_a_warning_naming_the_nearest_key_when_a_module_reads_cfg_opaquely(
    tmp_path: Path,
) -> None:
    (tmp_path / "python_modules").mkdir(exist_ok=True)
    (tmp_path / "python_modules" / "dump.py").write_text(OPAQUE_MODULE)
    keys, warnings = keys_of(tmp_path, "  - dump\n", "hostnme: x\n")
    assert keys.unreadable == ("dump",)
    [warning] = warnings
    assert "hostnme: unknown key (did you mean 'hostname'?)" in warning and "'dump' may read it" in warning


@pytest.mark.parametrize(("source", "complete"), [
    ("def modify(name, root, cfg):\n    return cfg['a'], cfg.get('b'), 'c' in cfg\n", True),
    ("def modify(name, root, config):\n    return config['a']\n", True),
    ("def modify(name, root, cfg):\n    k = 'a'\n    return cfg[k]\n", False),
    ("def modify(name, root, cfg):\n    helper(cfg)\n", False),
    ("def helper(c):\n    return c['a']\n\ndef modify(name, root, cfg):\n    return helper(cfg)\n", True),
    ("def helper(c):\n    return c.items()\n\ndef modify(name, root, cfg):\n    return helper(c=cfg)\n", False),
    ("def again(c):\n    return again(c)\n\ndef modify(name, root, cfg):\n    return again(cfg)\n", True),
    ("def modify(name, root, cfg):\n    return dict(**cfg)\n", False),
    ("def modify(*args):\n    return args[2]['a']\n", False),
    ("def modify(name, root, cfg):\n    return name\n", True),
])
def test_what_a_module_reads_is_told_from_its_source(tmp_path: Path, source: str, complete: bool) -> None:
    (tmp_path / "m.py").write_text(source)
    assert cfg_reads(tmp_path / "m.py").complete is complete


def test_a_declared_key_is_checked_against_its_type(tmp_path: Path) -> None:
    (tmp_path / "python_modules").mkdir(exist_ok=True)
    (tmp_path / "python_modules" / "motd.py").write_text(
        'CONFIG_KEYS = {"motd_lines": {"type": "integer", "default": 3, "help": "lines"}}\n' + MODIFY)
    with pytest.raises(ConfigError, match=r"motd_lines \(declared by motd\): expected an integer, got 'many'"):
        keys_of(tmp_path, "  - motd\n", "motd_lines: many\n")


@pytest.mark.parametrize(("declaration", "named"), [
    ('CONFIG_KEYS = ("motd_text",)\n', "CONFIG_KEYS: expected a mapping"),
    ('CONFIG_KEYS = {"motd_text": {"type": "string"}}\n', "with a help text"),
    ('CONFIG_KEYS = {"motd_text": {"type": "text", "help": "h"}}\n', "CONFIG_KEYS['motd_text'].type"),
    ('CONFIG_KEYS = {"motd_text": {"type": "string", "default": 3, "help": "h"}}\n', "default: expected a string"),
])
def test_a_python_modules_declaration_needs_type_default_and_help(tmp_path: Path, declaration: str,
                                                                   named: str) -> None:
    (tmp_path / "python_modules").mkdir(exist_ok=True)
    (tmp_path / "python_modules" / "motd.py").write_text(declaration + MODIFY)
    with pytest.raises(ConfigError, match=re.escape(named)):
        keys_of(tmp_path, "  - motd\n")


def test_every_builtin_python_module_reads_each_key_it_declares() -> None:
    modules = sorted(builtin_folder("python_modules").glob("*.py"))
    assert modules
    for path in modules:
        declared = {key.name for key in python_module_keys(path, str(path))}
        assert declared <= cfg_reads(path).names, f"{path.name} declares keys it never reads"


def test_build_info_declares_its_key_with_type_default_and_help() -> None:
    path = builtin_folder("python_modules") / "build_info.py"
    [key] = python_module_keys(path, str(path))
    assert (key.name, key.default) == ("build_info_file", "/etc/hotsauce-release") and key.help
