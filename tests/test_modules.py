"""Module names resolve place by place; Python and Ansible modules are planned into runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from hotsauce.config import ModuleKind, load_config
from hotsauce.errors import ConfigError
from hotsauce.modules.resolve import ResolvedModule, module_search, plan_runs, resolve_all, variables_read_by

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
    assert "web_port" in variables_read_by(resolve(project(tmp_path, "  - web\n")))
