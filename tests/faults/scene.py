"""A scene for a build that is meant to fail: a tiny project and its own work, output, run and cache folders.

All of them lie under the test's tmp folder, so the after-fault checks can
tell what the build left from anything else on the machine.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tests.faults.projects import tiny_root_tarball, write_project


@dataclass(frozen=True)
class Scene:
    scratch: Path
    project: Path
    work: Path
    output: Path
    run_dir: Path
    cache: Path

    def build_args(self, *extra: str) -> list[str | Path]:
        return ["build", "-s", "128M", "-o", self.output, "--work-dir", self.work, "--cache-dir", self.cache, *extra]

    def env(self, **extra: str) -> dict[str, str]:
        return {"HOTSAUCE_RUN_DIR": str(self.run_dir), **extra}


def make_scene(tmp_path: Path, modules: list[str]) -> Scene:
    tarball = tiny_root_tarball(tmp_path / "tiny-root.tar")
    scene = Scene(
        tmp_path,
        write_project(tmp_path / "project", tarball, modules),
        tmp_path / "work",
        tmp_path / "out" / "set.tar.gz",
        tmp_path / "run",
        tmp_path / "cache",
    )
    for folder in (scene.work, scene.output.parent, scene.run_dir):
        folder.mkdir(parents=True, exist_ok=True)
    return scene
