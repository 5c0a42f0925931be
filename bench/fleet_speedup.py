"""Benchmark: `hotsauce fleet` on one builder against two, on builds that mostly wait.

Run as root from the checkout, after scripts/install-deps.sh:

    .venv/bin/python bench/fleet_speedup.py [--builds 4] [--nap 20]

It starts two builders on this machine the way the tests do (one sshd each on
127.0.0.2 and 127.0.0.3, tests/ssh_builders.py), prepares both with a warm-up
run, then builds the same BUILDS projects (a tiny root tarball over HTTP, no
kernel, a Python module that sleeps NAP seconds) with an inventory of one
builder and with one of two, each run without the cache (`--no-cache`), and
prints both wall times and their ratio.

Caveat: both builders are this machine, so they share its disk and its cores.
The builds are made to wait (the module sleeps) so that the ratio shows what
the fleet's scheduling gives; builds that are busy with the CPU or the disk
would gain nothing here, where a real second host brings its own.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hotsauce.host.mounts import mount_points_below

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.faults.projects import tiny_root_tarball  # noqa: E402
from tests.http_server import serving  # noqa: E402
from tests.ssh_builders import SshBuilders, ssh_builders  # noqa: E402

NAP = "import time\n\ndef modify(name, root, cfg):\n    time.sleep({seconds})\n"


def project(folder: Path, url: str, nap: int) -> Path:
    (folder / "python_modules").mkdir(parents=True)
    (folder / "python_modules" / "nap.py").write_text(NAP.format(seconds=nap))
    (folder / "build.yaml").write_text(
        f"download:\n  from: {url}/tiny.tar\nkernel: false\nhostname: {folder.name}\nmodules:\n  - nap\n")
    return folder


def timed_fleet(builds: list[Path], builders: SshBuilders, count: int, folder: Path) -> float:
    inventory = SshBuilders(builders.builders[:count], builders.key, builders.known_hosts).inventory(
        folder / f"inventory-{count}.yml")
    outdir = folder / f"out-{count}"
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "hotsauce", "fleet", *map(str, builds), "-i", str(inventory),
                             "-o", str(outdir), "-s", "256M", "--build-args=--no-cache"],
                            capture_output=True, text=True, cwd=folder)
    seconds = time.monotonic() - started
    if result.returncode != 0:
        raise SystemExit(f"fleet on {count} builder(s) failed:\n{result.stdout}{result.stderr}")
    print(result.stdout)
    built = json.loads((outdir / "fleet.json").read_text())["builds"]
    assert all(b["status"] == "built" for b in built)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--builds", type=int, default=4)
    parser.add_argument("--nap", type=int, default=20, help="seconds each build's module sleeps")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="fleet-bench-"))
    try:
        (folder / "served").mkdir()
        (folder / "builders").mkdir()
        tiny_root_tarball(folder / "served" / "tiny.tar")
        with serving(folder / "served") as served, ssh_builders(folder / "builders") as builders:
            warm = [project(folder / "warm" / f"warm{i}", served.url, 0) for i in range(2)]
            timed_fleet(warm, builders, 2, folder / "warm")  # installs hotsauce on both builders
            builds = [project(folder / "builds" / f"image{i}", served.url, args.nap) for i in range(args.builds)]
            one = timed_fleet(builds, builders, 1, folder)
            two = timed_fleet(builds, builders, 2, folder)
    finally:
        # Never across a mount: a builder's build that was cut short may have left one below.
        if not mount_points_below(folder):
            subprocess.run(["rm", "-rf", "--one-file-system", folder], check=True)
    print(f"{args.builds} builds, each napping {args.nap} s in a module, set-up already done:")
    print(f"  one builder:  {one:6.1f} s")
    print(f"  two builders: {two:6.1f} s")
    print(f"  speed-up:     {one / two:6.2f}x  (both builders share this machine's disk and cores)")


if __name__ == "__main__":
    main()
