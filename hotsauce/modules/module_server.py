"""The warm Python of an Ansible run (hotsauce.modules.warm_python), started in the image's
sandbox before ansible-runner starts and stopped after it ends, with the library it imports
from: the controller's module_utils, as payloads carry them.

The connection plugin sends it the run's pipelined module payloads while the sandbox it was
started in is still the one a task would get (hotsauce_chroot.warm_key); any other command, and
every command once that changed, runs in a sandbox of its own as before. Without the build's
sandbox state or bwrap, or with no /usr/bin/python3 in the image yet, nothing is started.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import zipfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from hotsauce.host.proc import child_process
from hotsauce.modules import warm_python
from hotsauce.modules.sandbox import _before_importing_the_plugin

# The interpreter Ansible discovers first on Debian, Ubuntu and Fedora images.
IMAGE_PYTHON = "/usr/bin/python3"
START_SECONDS = 10.0
POLL_SECONDS = 0.005
LIBRARY = "library.zip"
# What the warm Python imports, in layers (hotsauce.modules.warm_python): what every module
# starts with (ansible-core 2.19's payload loader, or basic before it, and the serialization
# profile every payload carries and each module imported when it started), then what hotsauce's
# facts module (ansible_plugins/modules/setup.py) imports, the costliest of a run's payloads.
WARM_LAYERS = (
    ("ansible.module_utils._internal._ansiballz._loader", "ansible.module_utils.basic",
     "ansible.module_utils._internal._json._profiles._module_legacy_m2c",
     "ansible.module_utils._internal._json._profiles._module_legacy_c2m"),
    ("ansible.module_utils.facts.ansible_collector", "ansible.module_utils.facts.default_collectors",
     "ansible.module_utils.facts.collector", "ansible.module_utils.facts.hardware.linux",
     "ansible.module_utils.facts.namespace"),
)


@contextmanager
def warm_python_in(root: Path) -> Iterator[None]:
    """The warm Python runs in the image `root` while the block runs, when it can."""
    _before_importing_the_plugin()
    from hotsauce.modules.ansible_plugins.connection import hotsauce_chroot as plugin

    state = plugin.state_folder(str(root))
    real = plugin.resolve_in_root(str(root), IMAGE_PYTHON)
    if not (os.path.isdir(state) and plugin.bwrap_available() and real and os.path.isfile(f"{root}{real}")):
        yield
        return
    folder = Path(state, plugin.STATE_SERVER)
    with ExitStack() as stack:
        folder.mkdir(mode=0o700)
        stack.callback(_remove_folder, folder)
        write_library(folder / LIBRARY)
        argv = plugin.sandbox_argv(
            str(root),
            [IMAGE_PYTHON, "-c", Path(warm_python.__file__).read_text(),
             f"{plugin.SANDBOX_SERVER}/{plugin.WARM_SOCKET}", f"{plugin.SANDBOX_SERVER}/{LIBRARY}",
             json.dumps(WARM_LAYERS)],
            options=["--bind", str(folder), plugin.SANDBOX_SERVER],
        )
        process = stack.enter_context(child_process(argv, env=plugin.image_environment(),
                                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        if _listening(process, folder / plugin.WARM_SOCKET):
            # Written last: the plugin uses the warm Python only once this file is there.
            key = plugin.warm_key(os.path.realpath(root), state, IMAGE_PYTHON)
            (folder / plugin.WARM_KEY).write_text(json.dumps(key))
        yield


def write_library(path: Path) -> None:
    """The controller's module_utils as AnsiballZ payloads carry them: the files as installed,
    and ansible-core's own two package inits (ansible.executor.module_common writes these instead
    of the installed ones). A payload whose files differ runs without the warm imports."""
    import ansible
    from ansible.release import __author__, __version__

    installed = Path(ansible.__file__).parent
    namespace = "from pkgutil import extend_path\n__path__=extend_path(__path__,__name__)\n"
    inits = {
        "ansible/__init__.py": f'{namespace}__version__="{__version__}"\n__author__="{__author__}"\n',
        "ansible/module_utils/__init__.py": namespace,
    }
    # Stored, not deflated: written for every run, read once.
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as library:
        for name, text in inits.items():
            library.writestr(name, text)
        for file in sorted((installed / "module_utils").rglob("*.py")):
            name = f"ansible/{file.relative_to(installed)}"
            if name not in inits:
                library.write(file, name)


def _listening(process: subprocess.Popen[bytes], socket_path: Path) -> bool:
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline and process.poll() is None:
        if socket_path.is_socket():
            return True
        time.sleep(POLL_SECONDS)
    return False


def _remove_folder(folder: Path) -> None:
    for entry in folder.iterdir():
        entry.unlink()
    folder.rmdir()
