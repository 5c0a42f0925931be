"""A real Glance for the upload tests: installed from PyPI, served on 127.0.0.1.

Glance lives in a virtualenv of its own (its dependencies would clash with
hotsauce's), kept between runs under /var/cache/hotsauce-tests so a run pays
the install (about 45 s) once per machine. It runs without Keystone, on
sqlite and the file store, under gunicorn, in a folder of the test run.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from hotsauce.host.proc import child_process, run

GLANCE_VENV_ENV = "HOTSAUCE_GLANCE_VENV"
DEFAULT_GLANCE_VENV = Path("/var/cache/hotsauce-tests/glance-venv")
# Glance's own release line, so a new major on PyPI does not change the tests unannounced.
GLANCE_REQUIREMENTS = ("glance>=33,<34", "gunicorn>=22")
READY_TIMEOUT_SECONDS = 60.0

# Without Keystone every request arrives without roles; this lets it do anything.
POLICY = '"context_is_admin": "@"\n'

API_CONFIG = """\
[DEFAULT]
enabled_backends = files:file
image_cache_dir = {work}/image-cache

[database]
connection = sqlite:///{work}/glance.sqlite

[glance_store]
default_backend = files

[files]
filesystem_store_datadir = {work}/images

[os_glance_staging_store]
filesystem_store_datadir = {work}/staging

[os_glance_tasks_store]
filesystem_store_datadir = {work}/tasks

[oslo_policy]
policy_file = {work}/etc/policy.yaml
"""


def glance_venv() -> Path:
    """The virtualenv holding Glance and gunicorn, created on first use."""
    venv = Path(os.environ.get(GLANCE_VENV_ENV, DEFAULT_GLANCE_VENV))
    venv.parent.mkdir(parents=True, exist_ok=True)
    # Two test runs on one machine must not install into the same folder at once.
    with (venv.parent / f".{venv.name}.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _glance_importable(venv):
            shutil.rmtree(venv, ignore_errors=True)
            run([sys.executable, "-m", "venv", venv])
            run([venv / "bin/pip", "install", "--quiet", *GLANCE_REQUIREMENTS])
            if not _glance_importable(venv):
                raise RuntimeError(f"{venv}: Glance installed but does not import")
    return venv


def _glance_importable(venv: Path) -> bool:
    python = venv / "bin/python"
    if not python.exists():
        return False
    # glance.wsgi.api loads its configuration on import: probe the module beneath it.
    probe = subprocess.run(
        [python, "-c", "import glance.common.wsgi_app, gunicorn"], capture_output=True
    )
    return probe.returncode == 0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class GlanceServer:
    """One Glance API on 127.0.0.1:port; stop() and start() again keep its data and port."""

    def __init__(self, venv: Path, work: Path) -> None:
        self.venv = venv
        self.work = work
        self.port = free_port()
        self._running = ExitStack()
        self._write_config()
        run(
            [
                venv / "bin/glance-manage",
                "--config-file",
                self.config_dir / "glance-api.conf",
                "db_sync",
            ]
        )

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def config_dir(self) -> Path:
        return self.work / "etc"

    @property
    def log_path(self) -> Path:
        return self.work / "glance-api.log"

    def _write_config(self) -> None:
        for folder in ("etc", "images", "staging", "tasks", "image-cache"):
            (self.work / folder).mkdir(parents=True, exist_ok=True)
        (self.config_dir / "glance-api.conf").write_text(API_CONFIG.format(work=self.work))
        (self.config_dir / "policy.yaml").write_text(POLICY)
        # Glance finds its WSGI pipeline beside its configuration; the wheel ships the stock one.
        shutil.copy(self.venv / "etc/glance/glance-api-paste.ini", self.config_dir)

    def start(self) -> None:
        log = self._running.enter_context(self.log_path.open("ab"))
        env = {**os.environ, "OS_GLANCE_CONFIG_DIR": str(self.config_dir)}
        process = self._running.enter_context(
            child_process(
                [
                    self.venv / "bin/gunicorn",
                    "-k",
                    "gthread",
                    "--threads",
                    "4",
                    "--workers",
                    "1",
                    "--bind",
                    f"127.0.0.1:{self.port}",
                    "glance.wsgi.api:application",
                ],
                cwd=self.work,
                env=env,
                stdout=log.fileno(),
                stderr=subprocess.STDOUT,
            )
        )
        self._wait_until_ready(process)

    def stop(self) -> None:
        self._running.close()

    def _wait_until_ready(self, process: subprocess.Popen[bytes]) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if process.poll() is not None:
                self.stop()
                raise RuntimeError(
                    f"gunicorn exited with {process.returncode}; see {self.log_path}"
                )
            if self.answers():
                return
            time.sleep(0.25)
        self.stop()
        raise RuntimeError(
            f"Glance did not answer in {READY_TIMEOUT_SECONDS}s; see {self.log_path}"
        )

    def answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.endpoint}/v2/images", timeout=2) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    def clouds_yaml(self, cloud: str) -> str:
        """A clouds.yaml entry reaching this Glance the way a user's would, without Keystone."""
        return (
            f"clouds:\n  {cloud}:\n    auth_type: none\n"
            f"    auth:\n      endpoint: {self.endpoint}\n"
        )


@contextmanager
def running_glance(work: Path) -> Iterator[GlanceServer]:
    server = GlanceServer(glance_venv(), work)
    server.start()
    try:
        yield server
    finally:
        server.stop()
