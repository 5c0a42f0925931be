"""Benchmark: the whole-disk reference image, cold and warm, beside diskimage-builder in the same run.

The reference image is what diskimage-builder's `debian-minimal vm devuser -p curl` makes: Debian
bookworm with a kernel and GRUB, a sudo user `alice`, `curl`, one whole-disk qcow2, zlib-compressed
as diskimage-builder compresses by default. Run as root, with nothing else running:

    sudo .venv/bin/python bench/disk_reference_build.py [--keep DIR] [--no-dib]

It builds with hotsauce from an empty cache of its own (cold), again (warm), then runs
diskimage-builder's anchor script (../shared/anchors/dib/build.sh, or --dib-script) cold and warm,
and prints the times, the ratios against the targets (cold 0.35, warm 0.05) and both qcow2 sizes.
Compare ratios from one run only: the machine's load moves both.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hotsauce.build import build
from hotsauce.config import BuildOptions, load_config
from hotsauce.image.layout import Layout
from hotsauce.output.formats import DiskFormat, Qcow2Compression

BUILD_YAML = """\
base:
  debian:
    suite: bookworm
    bootable: true
layout: disk
modules:
  - add_user
  - install_packages
add_users:
  - alice
packages:
  - curl
"""
ANCHOR = Path("shared") / "anchors" / "dib" / "build.sh"
TARGETS = {"cold": 0.35, "warm": 0.05}
MIB = 1 << 20


def default_dib_script() -> Path:
    """The anchor script in a `shared` folder beside the checkout (or beside a folder holding it)."""
    for parent in Path(__file__).resolve().parents:
        if (parent / ANCHOR).is_file():
            return parent / ANCHOR
    return Path(__file__).resolve().parents[2] / ANCHOR


def hotsauce_build(project: Path, cache: Path, output: Path) -> dict[str, object]:
    options = BuildOptions(size=2 << 30, output=output, cache_dir=cache, layout=Layout.DISK,
                           formats=(DiskFormat.QCOW2,), qcow2_compression=Qcow2Compression.ZLIB)
    started = time.monotonic()
    result = build(load_config(project / "build.yaml"), options)
    return {
        "wall_seconds": round(time.monotonic() - started, 1),
        "stages": {name: round(seconds, 1) for name, seconds in result.times.seconds.items()},
        "qcow2_bytes": (output / result.manifest.root).stat().st_size,
    }


def dib_build(script: Path, work: Path, label: str, warm: bool) -> dict[str, object]:
    env = {**os.environ, "WARM": "1" if warm else "0"}
    started = time.monotonic()
    done = subprocess.run(["bash", str(script), str(work), label], env=env, capture_output=True, text=True,
                          check=False)
    wall = time.monotonic() - started
    if done.returncode != 0:
        raise RuntimeError(f"diskimage-builder failed: {done.stdout[-500:]}{done.stderr[-500:]}")
    image = work / "out" / f"deb-{label}.qcow2"
    return {"wall_seconds": round(wall, 1), "qcow2_bytes": image.stat().st_size if image.exists() else 0}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, help="keep the caches and outputs in this folder")
    parser.add_argument("--no-dib", action="store_true", help="hotsauce only (no ratios)")
    parser.add_argument("--dib-script", type=Path, default=None,
                        help=f"diskimage-builder's anchor script (default: the nearest {ANCHOR})")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("run as root: the benchmark builds real images", file=sys.stderr)
        return 2
    scratch = args.keep or Path(tempfile.mkdtemp(prefix="hotsauce-disk-bench-"))
    scratch.mkdir(parents=True, exist_ok=True)
    project = scratch / "project"
    project.mkdir(exist_ok=True)
    (project / "build.yaml").write_text(BUILD_YAML)
    results: dict[str, dict[str, object]] = {}
    try:
        results["hotsauce cold"] = hotsauce_build(project, scratch / "cache", scratch / "cold")
        results["hotsauce warm"] = hotsauce_build(project, scratch / "cache", scratch / "warm")
        if not args.no_dib:
            script = args.dib_script or default_dib_script()
            results["dib cold"] = dib_build(script, scratch / "dib", "cold", warm=False)
            results["dib warm"] = dib_build(script, scratch / "dib", "warm", warm=True)
    except RuntimeError as error:
        print(error, file=sys.stderr)  # hotsauce's figures are still worth printing
    finally:
        if args.keep is None:
            shutil.rmtree(scratch, ignore_errors=True)
    report(results)
    return 0


def report(results: dict[str, dict[str, object]]) -> None:
    for name, result in results.items():
        size = int(str(result["qcow2_bytes"])) / MIB
        print(f"{name:<16}{float(str(result['wall_seconds'])):>8.1f} s {size:>8.0f} MiB")
    for kind, target in TARGETS.items():
        ours, theirs = results.get(f"hotsauce {kind}"), results.get(f"dib {kind}")
        if ours and theirs:
            ratio = float(str(ours["wall_seconds"])) / float(str(theirs["wall_seconds"]))
            print(f"{kind}: {ratio:.2f} of diskimage-builder's time (target at most {target})")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    sys.exit(main())
