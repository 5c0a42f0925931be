"""Small build projects for fault tests: a tiny root tarball and a few Python modules.

The tiny root is enough for the whole pipeline (an os-release, a fake kernel
and ramdisk), so a build takes seconds and faults can be tried at every stage.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

TINY_ROOT_FILES = {
    "etc/os-release": b'ID=tiny\nVERSION_ID="1"\n',
    "etc/passwd": b"root:x:0:0:root:/root:/bin/sh\n",
    "boot/vmlinuz-1": b"not really a kernel\n",
    "boot/initrd.img-1": b"not really a ramdisk\n",
}

MODULES = {
    # Fails the modules stage the way a user's module does.
    "boom": 'def modify(name, root, cfg):\n    raise RuntimeError("injected failure in a module")\n',
    # Hangs in the modules stage, after telling the test it runs.
    "sleepy": (
        "import os, pathlib, time\n\n"
        "def modify(name, root, cfg):\n"
        "    pathlib.Path(os.environ['HOTSAUCE_TEST_MARKER']).write_text('started')\n"
        "    time.sleep(600)\n"
    ),
    # Makes the image (and what is converted from it) hold HOTSAUCE_TEST_FILL_MB of random data.
    "fill": (
        "import os\n\n"
        "def modify(name, root, cfg):\n"
        "    with open(os.path.join(root, 'filler'), 'wb') as out:\n"
        "        for _ in range(int(os.environ.get('HOTSAUCE_TEST_FILL_MB', '0'))):\n"
        "            out.write(os.urandom(1 << 20))\n"
        "        out.flush()\n"
        "        os.fsync(out.fileno())\n"
    ),
}


def tiny_root_tarball(path: Path, extra: dict[str, bytes] | None = None) -> Path:
    with tarfile.open(path, "w") as tar:
        for folder in ("etc", "boot", "root", "tmp"):
            info = tarfile.TarInfo(folder)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        for name, data in {**TINY_ROOT_FILES, **(extra or {})}.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return path


def write_project(folder: Path, base: Path | str, modules: list[str], extra: str = "") -> Path:
    """A build.yaml over `base` (a path or URL) with the listed modules; returns its folder."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "python_modules").mkdir(exist_ok=True)
    for name, source in MODULES.items():
        (folder / "python_modules" / f"{name}.py").write_text(source)
    listed = "modules:\n" + "".join(f"  - {name}\n" for name in modules) if modules else "modules: []\n"
    (folder / "build.yaml").write_text(f"download:\n  from: {base}\n{listed}{extra}")
    return folder
