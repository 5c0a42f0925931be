"""A Python module written to the prototype's README reads its own top-level keys, with nothing declared.

Real builds from the session's Debian root tarball (a `download:` base), raw
and without a kernel to stay cheap.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.images import mounted_root_image, run_hotsauce

pytestmark = pytest.mark.integration

# As the prototype's README has it: cfg is "the build configuration dictionary
# (useful for extracting any module configuration specifics)".
PROTOTYPE_STAMP = '''
import os

def modify(name, root, cfg):
    with open(os.path.join(root, "etc", "stamp"), "w") as out:
        out.write(cfg["stamp_text"] + "\\n")
'''

# Reads cfg through a loop: which keys it wants cannot be told from its source.
OPAQUE_DUMP = '''
import os

def modify(name, root, cfg):
    with open(os.path.join(root, "etc", "dumped"), "w") as out:
        for key in sorted(cfg):
            out.write(key + "\\n")
'''


def project(folder: Path, tarball: Path, module: str, source: str, extra: str) -> Path:
    (folder / "python_modules").mkdir(parents=True)
    (folder / "python_modules" / f"{module}.py").write_text(source)
    (folder / "build.yaml").write_text(
        f"download:\n  from: {tarball}\nkernel: false\nmodules:\n  - {module}\n{extra}")
    return folder


def test_a_prototype_module_reading_an_undeclared_key_builds(debian_rootfs_tarball: Path, tmp_path: Path) -> None:
    folder = project(tmp_path / "project", debian_rootfs_tarball, "stamp", PROTOTYPE_STAMP,
                     "stamp_text: hot sauce inside\n")
    result = run_hotsauce("build", "-s", "2G", "--format", "raw", "-o", "out", cwd=folder)
    assert result.returncode == 0, result.stderr
    assert "unknown key" not in result.stderr
    with mounted_root_image(folder / "out" / "root.raw", tmp_path) as root:
        assert (root / "etc" / "stamp").read_text() == "hot sauce inside\n"


def test_an_unknown_key_beside_a_module_that_reads_cfg_opaquely_is_a_warning(
    debian_rootfs_tarball: Path, tmp_path: Path
) -> None:
    folder = project(tmp_path / "project", debian_rootfs_tarball, "dump", OPAQUE_DUMP, "hostnme: typo\n")
    result = run_hotsauce("build", "-s", "2G", "--format", "raw", "-o", "out", cwd=folder)
    assert result.returncode == 0, result.stderr
    [warning] = [line for line in result.stderr.splitlines() if "unknown key" in line]
    assert warning.strip().startswith("warning: ") and "hostnme: unknown key (did you mean 'hostname'?)" in warning
    with mounted_root_image(folder / "out" / "root.raw", tmp_path) as root:
        assert "hostnme" in (root / "etc" / "dumped").read_text().split()
