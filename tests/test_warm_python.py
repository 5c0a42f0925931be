"""The warm Python (hotsauce.modules.warm_python) answering payloads, here on the build host
with this Python (the sandboxed one in an image: test_ansible_run), and the plugin's reading
of Ansible's pipelined module command."""

from __future__ import annotations

import ast
import base64
import io
import json
import os
import socket
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import ansible
import pytest

from hotsauce.modules import warm_python
from hotsauce.modules.ansible_plugins import MODULES
from hotsauce.modules.ansible_plugins.connection.hotsauce_chroot import (
    FRAME_LENGTH,
    pipelined_python,
    read_frame,
)
from hotsauce.modules.module_server import WARM_LAYERS

# A stand-in for an AnsiballZ wrapper: its zip as a base64 literal, written out and put first
# on sys.path, as the real one does; it reports what the module would see.
PAYLOAD = '''
import atexit, base64, json, os, shutil, sys, tempfile
ZIP = """{zip}"""
folder = tempfile.mkdtemp()
atexit.register(shutil.rmtree, folder)  # as the interpreter's shutdown runs it
path = os.path.join(folder, "payload.zip")
with open(path, "wb") as file:
    file.write(base64.b64decode(ZIP))
sys.path.insert(0, path)
from ansible.module_utils import basic
{extra}
print(json.dumps({{"file": basic.__file__, "mark": basic.MARK, "argv": sys.argv,
                  "env": os.environ.get("ONLY_HERE"), "stdin": sys.stdin.read(), "cwd": os.getcwd(),
                  "main_file": hasattr(sys.modules["__main__"], "__file__"), "folder": folder}}))
print("to stderr", file=sys.stderr)
sys.exit({code})
'''


def module_utils(mark: str = "one", **more: str) -> dict[str, str]:
    return {"ansible/__init__.py": "", "ansible/module_utils/__init__.py": "",
            "ansible/module_utils/basic.py": f"MARK = {mark!r}\n",
            **{f"ansible/module_utils/{name}.py": text for name, text in more.items()}}


def zip_of(files: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
        archive.writestr("filler.bin", os.urandom(3000))  # a payload's zip is never this small
    return buffer.getvalue()


def payload(files: dict[str, str] | None = None, extra: str = "", code: int = 0) -> bytes:
    literal = base64.b64encode(zip_of(module_utils() if files is None else files)).decode()
    return PAYLOAD.format(zip=literal, extra=extra, code=code).encode()


# The library the server warms up from: basic, then a second layer.
LIBRARY_FILES = module_utils(second="LAYER = 2\n")
LAYERS = [["ansible.module_utils.basic"], ["ansible.module_utils.second"]]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Path]:
    socket_path = tmp_path / "socket"
    library = tmp_path / "library.zip"
    library.write_bytes(zip_of(LIBRARY_FILES))
    process = subprocess.Popen([sys.executable, "-c", Path(warm_python.__file__).read_text(),
                                str(socket_path), str(library), json.dumps(LAYERS)], cwd="/")
    try:
        deadline = time.monotonic() + 10
        while not socket_path.is_socket():
            assert process.poll() is None and time.monotonic() < deadline, "the warm Python did not start"
            time.sleep(0.01)
        yield socket_path
    finally:
        process.kill()
        process.wait()


def ask(socket_path: Path, script: bytes, env: dict[str, str] | None = None) -> tuple[int, dict[str, object], bytes]:
    request = json.dumps({"env": env or {"PATH": "/usr/bin:/bin"}, "cwd": "/"}).encode()
    with socket.socket(socket.AF_UNIX) as client:
        client.connect(str(socket_path))
        client.sendall(b"".join(FRAME_LENGTH.pack(len(part)) + part for part in (request, script)))
        rc = json.loads(read_frame(client))["rc"]
        stdout, stderr = read_frame(client), read_frame(client)
    return rc, json.loads(stdout) if stdout.strip() else {}, stderr


def test_a_payload_with_the_same_module_utils_runs_with_them_imported_already(server: Path) -> None:
    _, answer, _ = ask(server, payload(LIBRARY_FILES, "from ansible.module_utils import second"))
    assert answer["file"] == str(server.parent / "library.zip/ansible/module_utils/basic.py")
    assert answer["mark"] == "one"


def test_a_payload_whose_module_utils_differ_imports_its_own(server: Path) -> None:
    _, answer, _ = ask(server, payload(module_utils("two")))
    assert answer["mark"] == "two"
    assert not str(answer["file"]).startswith(str(server.parent))


def test_a_payload_without_a_later_layer_keeps_the_first_and_cannot_import_the_rest(server: Path) -> None:
    """As a fresh interpreter: what the payload does not carry cannot be imported, however reached."""
    rc, _, stderr = ask(server, payload(module_utils(), "from ansible.module_utils import second"))
    assert rc == 1 and b"ImportError" in stderr
    rc, _, stderr = ask(server, payload(module_utils(), "import ansible.module_utils.second"))
    assert rc == 1 and b"ModuleNotFoundError" in stderr
    _, answer, _ = ask(server, payload(module_utils()))
    assert answer["file"] == str(server.parent / "library.zip/ansible/module_utils/basic.py")


def test_a_module_only_in_the_payload_is_found_in_it(server: Path) -> None:
    extra = "from ansible.module_utils import extra\nassert extra.WHERE == 'payload'"
    rc, answer, stderr = ask(server, payload(module_utils(extra="WHERE = 'payload'\n"), extra))
    assert rc == 0, stderr
    assert str(answer["file"]).startswith(str(server.parent / "library.zip"))


def test_the_child_runs_as_python_reading_its_script_from_stdin_would(server: Path) -> None:
    rc, answer, stderr = ask(server, payload(code=3), {"PATH": "/usr/bin:/bin", "ONLY_HERE": "yes"})
    assert rc == 3
    assert answer["argv"] == [""] and answer["stdin"] == "" and answer["cwd"] == "/"
    assert answer["env"] == "yes" and answer["main_file"] is False
    assert not Path(str(answer["folder"])).exists()  # its atexit ran
    assert stderr == b"to stderr\n"
    _, again, _ = ask(server, payload())
    assert again["env"] is None  # one request's environment is its own


def test_an_exception_exits_1_with_its_traceback_on_stderr(server: Path) -> None:
    rc, _, stderr = ask(server, b"raise RuntimeError('broken module')\n")
    assert rc == 1
    assert b"RuntimeError: broken module" in stderr


def test_an_exit_with_a_message_prints_it_and_exits_1(server: Path) -> None:
    rc, _, stderr = ask(server, b"import sys\nsys.exit('no such package')\n")
    assert rc == 1
    assert stderr == b"no such package\n"


# Run as `python3 < script`: the thread ends, then the finalizer of what __main__ held runs.
ENDING = b"""
import json, sys, threading, time
class Last:
    def __del__(self):
        sys.stdout.write(json.dumps(events + ["finalized"]))
events = []
def late():
    time.sleep(0.2)
    events.append("thread ended")
threading.Thread(target=late).start()
kept = Last()
"""


def test_a_module_ends_as_python_would_its_threads_waited_for_and_its_objects_finalized(server: Path) -> None:
    fresh = subprocess.run([sys.executable], input=ENDING, capture_output=True, check=True)
    rc, answer, stderr = ask(server, ENDING)
    assert rc == 0, stderr
    assert answer == json.loads(fresh.stdout) == ["thread ended", "finalized"]


@pytest.mark.parametrize(("command", "expected"), [
    ("/bin/sh -c '/usr/bin/python3.11 && sleep 0'", ("/usr/bin/python3.11", {})),
    ("/bin/sh -c 'LANG=C.UTF-8 LC_ALL=C.UTF-8 /usr/bin/python3 && sleep 0'",
     ("/usr/bin/python3", {"LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"})),
    ("/bin/sh -c 'GREETING='\"'\"'a b'\"'\"' /usr/bin/python3'", ("/usr/bin/python3", {"GREETING": "a b"})),
])
def test_the_pipelined_module_command_is_read(command: str, expected: tuple[str, dict[str, str]]) -> None:
    assert pipelined_python(command) == expected


@pytest.mark.parametrize("command", [
    "/bin/sh -c 'echo ~ && sleep 0'",  # not a module
    "/bin/sh -c 'sudo -H -S -n -u root /bin/sh -c '\"'\"'echo BECOME-SUCCESS-x ; /usr/bin/python3'\"'\"' && sleep 0'",
    "/bin/sh -c 'HOME=$HOME /usr/bin/python3 && sleep 0'",  # the shell would expand it
    "/bin/sh -c '/usr/bin/python3; rm -rf /tmp/x'",
    "/bin/bash -c '/usr/bin/python3 && sleep 0'",
    "/bin/sh -c 'python3 && sleep 0'",
])
def test_any_other_command_is_left_to_a_sandbox_of_its_own(command: str) -> None:
    assert pipelined_python(command) is None


def gone(pid: int, seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return True
        if state == "Z":
            return True
        time.sleep(0.05)
    return False


def test_what_a_module_leaves_running_is_stopped_when_it_ends(server: Path, tmp_path: Path) -> None:
    left = tmp_path / "left.pid"
    script = f"import subprocess\nopen({str(left)!r}, 'w').write(str(subprocess.Popen(['sleep', '60']).pid))\n"
    rc, _, stderr = ask(server, script.encode())
    assert rc == 0, stderr
    assert gone(int(left.read_text()))


def test_a_client_that_goes_away_takes_its_module_with_it(server: Path, tmp_path: Path) -> None:
    started = tmp_path / "module.pid"
    script = f"import os, time\nopen({str(started)!r}, 'w').write(str(os.getpid()))\ntime.sleep(60)\n"
    request = json.dumps({"env": {}, "cwd": "/"}).encode()
    with socket.socket(socket.AF_UNIX) as client:
        client.connect(str(server))
        client.sendall(b"".join(FRAME_LENGTH.pack(len(part)) + part for part in (request, script.encode())))
        deadline = time.monotonic() + 10
        while not started.exists() or not started.read_text():
            assert time.monotonic() < deadline, "the module did not start"
            time.sleep(0.02)
    assert gone(int(started.read_text()))


def test_the_second_layer_is_what_the_facts_module_imports() -> None:
    """Every run's first payload is hotsauce's facts module: its imports are what is warmed."""
    installed = Path(ansible.__file__).parent.parent
    imported = set()
    for node in ast.walk(ast.parse((MODULES / "setup.py").read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("ansible.module_utils."):
            for alias in node.names:  # `from package import submodule` imports the submodule
                submodule = f"{node.module}.{alias.name}"
                is_module = (installed / submodule.replace(".", "/")).with_suffix(".py").is_file()
                imported.add(submodule if is_module else node.module)
    assert imported - {"ansible.module_utils.basic"} == set(WARM_LAYERS[1])
