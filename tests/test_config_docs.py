"""What the table of build.yaml keys documents: the README's table, the JSON Schema, `hotsauce init`'s file.

The schema is checked with the jsonschema package, the reference validator
that editors' YAML language servers agree with, so a schema that our own
loader would read differently is caught here.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from hotsauce.config import SCHEMA_FILE_NAME, default_config_text, json_schema, keys_table_markdown, load_config
from hotsauce.errors import ConfigError

README = Path(__file__).resolve().parents[1] / "README.md"
TABLE_START = "<!-- keys table: generated from hotsauce/config.py -->\n"
TABLE_END = "<!-- end of keys table -->"


def readme_section(title: str) -> str:
    text = README.read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end]


def readme_build_yaml_examples() -> list[str]:
    return re.findall(r"```yaml\n(.*?)```", readme_section("build.yaml"), re.DOTALL)


def schema_errors(data: Any) -> list[str]:
    validator = jsonschema.Draft202012Validator(json_schema())
    return [f"{'.'.join(map(str, error.absolute_path))}: {error.message}" for error in validator.iter_errors(data)]


def test_the_schema_is_a_valid_json_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(json_schema())


def test_the_readme_table_of_keys_is_the_tables() -> None:
    text = README.read_text()
    table = text[text.index(TABLE_START) + len(TABLE_START):text.index(TABLE_END)]
    assert table == keys_table_markdown(), "the README's keys table is stale: paste `hotsauce schema --markdown`"


def test_the_readme_examples_validate_against_the_schema_and_load(tmp_path: Path) -> None:
    examples = readme_build_yaml_examples()
    assert len(examples) >= 2
    for example in examples:
        data = yaml.safe_load(example)
        assert schema_errors(data) == []
        (tmp_path / "build.yaml").write_text(example)
        load_config(tmp_path / "build.yaml")


def test_the_default_build_yaml_validates_against_the_schema() -> None:
    assert schema_errors(yaml.safe_load(default_config_text())) == []


def test_the_default_build_yaml_names_the_schema_on_its_first_line() -> None:
    assert default_config_text().splitlines()[0] == f"# yaml-language-server: $schema={SCHEMA_FILE_NAME}"


@pytest.mark.parametrize("text", [
    "hostname: [x]\n",
    "hostname: -bad\n",
    "kernel: maybe\n",
    "modules: add_user\n",
    "modules: [3]\n",
    "modules:\n  - ../x\n",
    "modules:\n  - {role: a, python: b}\n",
    "modules:\n  - {role: a, when: b}\n",
    "add_users: [{name: Bad Name}]\n",
    "add_users: [{groups: [adm]}]\n",
    "download:\n  from: ftp://x/y\n",
    "download:\n  from: x.tar\n  sha256: nothex\n",
    "download:\n  root_file: x\n",
    "base:\n  debian:\n    variant: huge\n",
    "base:\n  debian:\n    architecture: arm64\n",
    "base:\n  debian:\n    suit: trixie\n",
    "base:\n  debian:\n    mirror: not-a-url\n",
    "base: {}\n",
    "base: {debian: {}}\ndownload: {from: x.tar}\n",
    "vars: [1]\n",
    "packages: curl\n",
])
def test_the_schema_and_the_loader_refuse_the_same_input(tmp_path: Path, text: str) -> None:
    (tmp_path / "build.yaml").write_text(text)
    with pytest.raises(ConfigError):
        load_config(tmp_path / "build.yaml")
    assert schema_errors(yaml.safe_load(text)) != []


@pytest.mark.parametrize("text", [
    "",
    "modules:\n",
    "base: {debian: }\n",
    "stamp_text: hello\n",  # a module's own key: the schema cannot know the modules, the build checks it
    "modules:\n  - {playbook: playbooks/site.yml, vars: {port: 80}}\n  - {python: motd}\n",
])
def test_the_schema_and_the_loader_accept_the_same_input(tmp_path: Path, text: str) -> None:
    (tmp_path / "build.yaml").write_text(text)
    load_config(tmp_path / "build.yaml")
    assert schema_errors(yaml.safe_load(text)) == []


def hotsauce(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hotsauce", *args], cwd=cwd, capture_output=True, text=True,
                          check=False)


def test_init_writes_the_default_build_yaml_and_the_schema_it_names(tmp_path: Path) -> None:
    result = hotsauce("init", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "build.yaml").read_text() == default_config_text()
    assert json.loads((tmp_path / SCHEMA_FILE_NAME).read_text()) == json_schema()
    again = hotsauce("init", cwd=tmp_path)
    assert again.returncode == 2 and "already exists (use --force" in again.stderr


def test_the_schema_command_prints_the_schema_and_the_readme_table(tmp_path: Path) -> None:
    assert json.loads(hotsauce("schema", cwd=tmp_path).stdout) == json_schema()
    assert hotsauce("schema", "--markdown", cwd=tmp_path).stdout == keys_table_markdown()
