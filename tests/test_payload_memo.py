"""The payload memo (callback hotsauce_payload_memo): ansible-core's own payload builder, run in a
fresh Python per build as each ansible-playbook is, with and without what earlier builds kept."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from hotsauce.modules.ansible_plugins import CALLBACK_PLUGINS
from hotsauce.modules.ansible_run import runner_environment

# Builds one module's payload with ansible-core's builder and prints its zip's files, and how
# many sources were compiled to a syntax tree on the way (what the memo saves).
BUILD_PAYLOAD = r"""
import ast, base64, builtins, json, sys
from ansible.plugins.loader import init_plugin_loader
init_plugin_loader()
sys.path.insert(0, sys.argv[1])
import hotsauce_payload_memo
if sys.argv[2] != "-":
    assert hotsauce_payload_memo.install(sys.argv[2])
compiled = 0
real_compile = builtins.compile
def counting_compile(source, filename, mode, flags=0, *args, **kwargs):
    global compiled
    compiled += bool(flags & ast.PyCF_ONLY_AST)
    return real_compile(source, filename, mode, flags, *args, **kwargs)
builtins.compile = counting_compile
from ansible.executor import module_common
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar
path = sys.argv[3]
with open(path, "rb") as module_file:
    data = module_file.read()
built = module_common._find_module_utils(
    module_name="probe", b_module_data=data, module_path=path, module_args={},
    task_vars={"ansible_python_interpreter": "/usr/bin/python3"}, templar=Templar(loader=DataLoader()),
    module_compression="ZIP_STORED", async_timeout=0, become_plugin=None, environment={})
print(json.dumps({"wrapper": built.b_module_data.decode(), "compiled": compiled}))
"""

MODULE = """\
from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.probe_util import ANSWER

AnsibleModule(argument_spec={}).exit_json(answer=ANSWER)
"""


def build_payload(memo: Path | None, module: Path, module_utils: Path) -> tuple[dict[str, bytes], int]:
    """The payload's files (name -> bytes) and how many sources were compiled, in a fresh Python."""
    env = {**os.environ, "ANSIBLE_MODULE_UTILS": str(module_utils), "ANSIBLE_LOCAL_TEMP": str(module.parent / "tmp")}
    done = subprocess.run([sys.executable, "-c", BUILD_PAYLOAD, str(CALLBACK_PLUGINS), str(memo or "-"), str(module)],
                          env=env, capture_output=True, text=True, check=True)
    report = json.loads(done.stdout.splitlines()[-1])
    encoded = re.search(r"zip_data='([^']+)'", report["wrapper"])
    assert encoded, "the wrapper carries its zip as zip_data"
    with zipfile.ZipFile(io.BytesIO(base64.b64decode(encoded.group(1)))) as payload:
        files = {name: payload.read(name) for name in payload.namelist()}
    return files, report["compiled"]


@pytest.fixture
def project(tmp_path: Path) -> tuple[Path, Path]:
    utils = tmp_path / "module_utils"
    utils.mkdir()
    (utils / "probe_util.py").write_text("ANSWER = 42\n")
    module = tmp_path / "probe.py"
    module.write_text(MODULE)
    return module, utils


def test_a_remembered_payload_is_the_payload_built_without_the_memo_and_compiles_nothing(
        tmp_path: Path, project: tuple[Path, Path]) -> None:
    module, utils = project
    memo = tmp_path / "memo"
    without, compiled_without = build_payload(None, module, utils)
    first, compiled_first = build_payload(memo, module, utils)
    again, compiled_again = build_payload(memo, module, utils)
    assert "ansible/module_utils/probe_util.py" in without
    assert first == without and again == without
    assert compiled_first == compiled_without > 10  # basic.py and what it imports, the module itself
    assert compiled_again == 0
    assert len(list(memo.iterdir())) == compiled_first


def test_a_changed_source_is_walked_again_and_brings_what_it_now_imports(
        tmp_path: Path, project: tuple[Path, Path]) -> None:
    module, utils = project
    memo = tmp_path / "memo"
    build_payload(memo, module, utils)
    (utils / "probe_extra.py").write_text("EXTRA = 1\n")
    (utils / "probe_util.py").write_text("from ansible.module_utils.probe_extra import EXTRA\nANSWER = EXTRA\n")
    files, compiled = build_payload(memo, module, utils)
    assert files["ansible/module_utils/probe_util.py"].startswith(b"from ansible.module_utils.probe_extra")
    assert "ansible/module_utils/probe_extra.py" in files
    assert compiled == 2  # only the changed source and the new one


def test_an_unreadable_memo_entry_is_computed_again(tmp_path: Path, project: tuple[Path, Path]) -> None:
    module, utils = project
    memo = tmp_path / "memo"
    without, _ = build_payload(None, module, utils)
    build_payload(memo, module, utils)
    for entry in memo.iterdir():
        entry.write_text("not json")
    files, compiled = build_payload(memo, module, utils)
    assert files == without
    assert compiled > 10


def test_runs_enable_the_memo_only_with_a_folder(tmp_path: Path) -> None:
    with_memo, without = tmp_path / "with", tmp_path / "without"
    with_memo.mkdir()
    without.mkdir()
    env = runner_environment(with_memo, [], [], tmp_path / "memo")
    assert env["ANSIBLE_CALLBACKS_ENABLED"] == "hotsauce_payload_memo"
    assert env["HOTSAUCE_PAYLOAD_MEMO"] == str(tmp_path / "memo")
    assert (Path(env["ANSIBLE_CALLBACK_PLUGINS"]) / "hotsauce_payload_memo.py").is_file()
    assert "HOTSAUCE_PAYLOAD_MEMO" not in runner_environment(without, [], [])
