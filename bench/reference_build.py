"""Benchmark: the reference image built cold, warm, and with only the last module changed.

The reference image is the one the diskimage-builder anchors were measured
with: Debian bookworm, bootable, one sudo user `alice`, the extra package
`curl`, and a qcow2 EC2-style set. Run as root:

    sudo .venv/bin/python bench/reference_build.py [--keep DIR]

It prints the wall time of each stage and of each whole build, and the size
of the image. Every run starts from an empty cache of its own. `--sbom off`
builds without the SBOM (`sbom: {enabled: false}`); `--sbom both` runs the
three builds with it and again without it, each series from an empty cache,
and says how much the SBOM adds to the cold and warm builds.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from hotsauce.build import build
from hotsauce.config import BuildOptions, load_config
from hotsauce.events import Event, EventKind
from hotsauce.host.sizes import human_size

BUILD_YAML = """\
base:
  debian:
    suite: bookworm
    bootable: true
modules:
  - add_user
  - install_packages
  - motd
add_users:
  - alice
packages:
  - curl
"""

MOTD_MODULE = """\
from hotsauce.rootpath import inside


def modify(name, root, cfg):
    inside(root, "/etc/motd").write_text("{message}\\n")
"""


def write_project(folder: Path, message: str, sbom: bool = True) -> Path:
    (folder / "python_modules").mkdir(parents=True, exist_ok=True)
    (folder / "python_modules" / "motd.py").write_text(MOTD_MODULE.format(message=message))
    (folder / "build.yaml").write_text(BUILD_YAML + ("" if sbom else "sbom: {enabled: false}\n"))
    return folder / "build.yaml"


def timed_build(project: Path, cache: Path, output: Path) -> dict[str, object]:
    cached: dict[str, bool] = {}

    def collect(event: Event) -> None:
        if event.kind is EventKind.INFO and "cached" in event.data:
            cached[event.stage] = bool(event.data["cached"])

    options = BuildOptions(size=2 << 30, output=output, cache_dir=cache)
    started = time.monotonic()
    result = build(load_config(project / "build.yaml"), options, collect)
    wall = time.monotonic() - started
    image = output / result.manifest.root
    return {
        "wall_seconds": round(wall, 1),
        "stages": {name: round(seconds, 1) for name, seconds in result.times.seconds.items()},
        "image_bytes": image.stat().st_size,
        "served_from_cache": cached,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, help="keep the cache and outputs in this folder")
    parser.add_argument("--sbom", choices=("on", "off", "both"), default="on",
                        help="build with the SBOM (default), without it, or both ways to compare")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("run as root: the benchmark builds real images", file=sys.stderr)
        return 2
    scratch = args.keep or Path(tempfile.mkdtemp(prefix="hotsauce-bench-"))
    scratch.mkdir(parents=True, exist_ok=True)
    ways = {"on": [True], "off": [False], "both": [True, False]}[args.sbom]
    series: dict[bool, dict[str, dict[str, object]]] = {}
    try:
        for sbom in ways:
            series[sbom] = run_series(scratch / ("with-sbom" if sbom else "without-sbom"), sbom)
    finally:
        if args.keep is None:
            shutil.rmtree(scratch, ignore_errors=True)
    for sbom, results in series.items():
        print(f"--- {'with' if sbom else 'without'} the SBOM")
        report(results)
    if len(series) == 2:
        compare_sbom(series[True], series[False])
    return 0


def run_series(folder: Path, sbom: bool) -> dict[str, dict[str, object]]:
    """Cold, warm and last-module-changed builds from an empty cache of their own."""
    cache, project = folder / "cache", folder / "project"
    results: dict[str, dict[str, object]] = {}
    write_project(project, "first", sbom)
    results["cold"] = timed_build(project, cache, folder / "cold")
    results["warm"] = timed_build(project, cache, folder / "warm")
    write_project(project, "changed", sbom)
    results["last module changed"] = timed_build(project, cache, folder / "changed")
    return results


def compare_sbom(with_sbom: dict[str, dict[str, object]], without: dict[str, dict[str, object]]) -> None:
    """What the SBOM costs each build. Its own stage is the whole of its work, and the measure: the
    two series' whole builds differ more by the mirror and the machine (their bootstraps and apt
    runs are separate) than by the SBOM, so that difference is printed beside it, not relied on."""
    for name in with_sbom:
        on, off = float(with_sbom[name]["wall_seconds"]), float(without[name]["wall_seconds"])  # type: ignore[arg-type]
        stage = with_sbom[name]["stages"].get("sbom", 0.0)  # type: ignore[attr-defined]
        share = stage / on * 100 if on else 0.0
        print(f"SBOM {name}: its stage {stage:.1f} s, {share:.1f} % of the build "
              f"(whole builds: {off:.1f} s without, {on:.1f} s with)")


def report(results: dict[str, dict[str, object]]) -> None:
    stages = list(dict.fromkeys(s for r in results.values() for s in r["stages"]))  # type: ignore[attr-defined]
    print(f"{'stage':<12}" + "".join(f"{name:>22}" for name in results))
    for stage_name in stages:
        row = "".join(f"{r['stages'].get(stage_name, 0.0):>21.1f}s" for r in results.values())  # type: ignore[attr-defined]
        print(f"{stage_name:<12}{row}")
    print(f"{'whole build':<12}" + "".join(f"{r['wall_seconds']:>21.1f}s" for r in results.values()))
    print(f"{'image size':<12}" + "".join(f"{human_size(r['image_bytes']):>22}" for r in results.values()))  # type: ignore[arg-type]
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    sys.exit(main())
