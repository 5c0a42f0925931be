"""`hotsauce fleet` over real SSH: two builders, each its own sshd on a loopback address.

The builds are cheap on purpose: a tiny root tarball served over HTTP, no kernel, a
small disk and a Python module that naps, so that two builds at once show. The
builders share this machine: their first run installs hotsauce into a venv of each
(module fixture), and later runs reuse it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.faults.projects import tiny_root_tarball
from tests.http_server import ServedFolder, serving
from tests.images import REPO, run_hotsauce
from tests.ssh_builders import SshBuilders, ssh_builders

pytestmark = pytest.mark.integration

NAP = "import time\n\ndef modify(name, root, cfg):\n    time.sleep({seconds})\n"
BOOM = 'def modify(name, root, cfg):\n    raise RuntimeError("this build fails on purpose")\n'


@pytest.fixture(scope="module")
def served_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedFolder]:
    folder = tmp_path_factory.mktemp("served")
    tiny_root_tarball(folder / "tiny.tar")
    with serving(folder) as served:
        yield served


@pytest.fixture(scope="module")
def builders(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshBuilders]:
    with ssh_builders(tmp_path_factory.mktemp("builders")) as started:
        yield started


def project(folder: Path, url: str, module: str = NAP.format(seconds=5)) -> Path:
    """A build folder; its hostname differs per build so that no builder's module cache answers for another."""
    (folder / "python_modules").mkdir(parents=True)
    (folder / "python_modules" / "work.py").write_text(module)
    (folder / "build.yaml").write_text(
        f"download:\n  from: {url}/tiny.tar\nkernel: false\nhostname: {folder.name}\nmodules:\n  - work\n")
    return folder


def fleet(builds: list[Path], inventory: Path, outdir: Path) -> subprocess.CompletedProcess[str]:
    return run_hotsauce("fleet", *builds, "-i", inventory, "-o", outdir, "-s", "256M", cwd=outdir.parent, timeout=1200)


def report(outdir: Path) -> dict[str, dict[str, Any]]:
    return {build["name"]: build for build in json.loads((outdir / "fleet.json").read_text())["builds"]}


def sha256sum_checks(folder: Path) -> None:
    sums = sorted(p.name for p in folder.glob("*.sha256"))
    assert sums
    subprocess.run(["sha256sum", "--strict", "-c", *sums], cwd=folder, check=True, capture_output=True)


@pytest.fixture(scope="module")
def four(builders: SshBuilders, served_root: ServedFolder, tmp_path_factory: pytest.TempPathFactory
         ) -> tuple[list[Path], Path, Path, subprocess.CompletedProcess[str]]:
    folder = tmp_path_factory.mktemp("four")
    builds = [project(folder / name, served_root.url) for name in ("alpha", "bravo", "charlie", "delta")]
    inventory = builders.inventory(folder / "inventory.yml")
    outdir = folder / "out"
    return builds, inventory, outdir, fleet(builds, inventory, outdir)


def test_four_builds_on_two_builders_all_arrive_verified(four: tuple[list[Path], Path, Path, Any]) -> None:
    builds, _, outdir, result = four
    assert result.returncode == 0, result.stdout + result.stderr
    records = report(outdir)
    assert sorted(records) == sorted(b.name for b in builds)
    for name, record in records.items():
        sha256sum_checks(outdir / name)
        assert record["status"] == "built" and not record["rerouted"]
        assert record["size"] == sum(p.stat().st_size for p in (outdir / name).iterdir())
        assert (outdir / f"{name}.log").is_file()
    assert {r["builder"] for r in records.values()} == {"builder-a", "builder-b"}


def test_the_table_says_what_fleet_json_and_the_disk_say(four: tuple[list[Path], Path, Path, Any]) -> None:
    _, _, outdir, result = four
    rows = {line.split()[0]: line.split() for line in result.stdout.splitlines()[1:] if line.strip()
            and not line.startswith("report:")}
    for name, record in report(outdir).items():
        assert rows[name][1] == record["builder"] and rows[name][2] == "built"
    assert result.stdout.splitlines()[0].split() == ["BUILD", "BUILDER", "STATUS", "TIME", "SIZE"]


def test_each_builder_keeps_its_own_cache(four: tuple[list[Path], Path, Path, Any], builders: SshBuilders) -> None:
    for builder in builders.builders:
        downloads = [p for p in builder.cache.rglob("*") if p.is_file() and "tiny" in p.name]
        assert downloads, f"{builder.name} cached no download in {builder.cache}"


def test_a_second_run_skips_every_set_already_there(four: tuple[list[Path], Path, Path, Any]) -> None:
    builds, inventory, outdir, _ = four
    before = {p: p.stat().st_mtime_ns for p in outdir.rglob("*") if p.is_file() and p.name != "fleet.json"}
    again = fleet(builds, inventory, outdir)
    assert again.returncode == 0, again.stderr
    assert {r["status"] for r in report(outdir).values()} == {"skipped"}
    assert "building on" not in again.stderr
    assert {p: p.stat().st_mtime_ns for p in before} == before


def test_a_damaged_set_is_built_again_on_the_next_run(four: tuple[list[Path], Path, Path, Any]) -> None:
    builds, inventory, outdir, _ = four
    (outdir / "alpha" / "manifest.json").write_text("{}\n")
    again = fleet(builds, inventory, outdir)
    assert again.returncode == 0, again.stderr
    statuses = {name: r["status"] for name, r in report(outdir).items()}
    assert statuses == {"alpha": "built", "bravo": "skipped", "charlie": "skipped", "delta": "skipped"}
    sha256sum_checks(outdir / "alpha")


def test_a_failing_build_is_retried_once_elsewhere_and_reported_with_its_log(
        builders: SshBuilders, served_root: ServedFolder, tmp_path: Path) -> None:
    broken = project(tmp_path / "broken", served_root.url, BOOM)
    fine = project(tmp_path / "fine", served_root.url)
    inventory = builders.inventory(tmp_path / "inventory.yml")
    result = fleet([broken, fine], inventory, tmp_path / "out")
    assert result.returncode == 1, result.stderr
    records = report(tmp_path / "out")
    assert records["fine"]["status"] == "built"
    sha256sum_checks(tmp_path / "out" / "fine")
    failed = records["broken"]
    assert failed["status"] == "failed" and failed["attempts"] == 2
    assert sorted(failed["failed_on"]) == ["builder-a", "builder-b"]
    log = Path(failed["log"])
    assert log == tmp_path / "out" / "broken.log" and "this build fails on purpose" in log.read_text()
    assert not (tmp_path / "out" / "broken").exists()
    assert f"log {log}" in result.stdout


def test_a_builder_whose_sshd_dies_mid_run_loses_only_its_builds(
        builders: SshBuilders, served_root: ServedFolder, tmp_path: Path) -> None:
    # The nap outlasts the moment between the build's start and the kill by far (the poll is 0.2 s).
    builds = [project(tmp_path / name, served_root.url, NAP.format(seconds=6)) for name in ("w", "x", "y", "z")]
    inventory = builders.inventory(tmp_path / "inventory.yml")
    outdir = tmp_path / "out"
    doomed = builders.by_name("builder-b")
    run = subprocess.Popen([sys.executable, "-m", "hotsauce", "fleet", *map(str, builds), "-i", str(inventory),
                            "-o", str(outdir), "-s", "256M"], cwd=tmp_path, text=True,
                           env={**os.environ, "PYTHONPATH": str(REPO)},
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 600
        while not doomed.running_builds():
            assert run.poll() is None and time.monotonic() < deadline, "builder-b never started a build"
            time.sleep(0.2)
        doomed.kill()
        stdout, stderr = run.communicate(timeout=1200)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
        doomed.wait_idle()  # its build goes on alone, as on a real host cut off from the controller
    assert run.returncode == 0, stdout + stderr
    records = report(outdir)
    assert {r["status"] for r in records.values()} == {"built"}
    for name in records:
        sha256sum_checks(outdir / name)
    rerouted = [r for r in records.values() if r["rerouted"]]
    assert rerouted and all(r["lost_on"] == ["builder-b"] and r["builder"] == "builder-a" for r in rerouted)
    assert all("re-routed from builder-b" in line for line in stdout.splitlines()
               if line.split() and line.split()[0] in {r["name"] for r in rerouted})
    lost = {b["name"]: b for b in json.loads((outdir / "fleet.json").read_text())["builders"]}["builder-b"]
    assert lost["lost"] and "lost during" in lost["reason"]
