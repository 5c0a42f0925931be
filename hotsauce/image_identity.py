"""The image's identity (stand-in; the Debian base work replaces it)."""

from __future__ import annotations

from pathlib import Path

from hotsauce.rootpath import inside


def set_identity(root: Path, hostname: str) -> None:
    inside(root, "/etc/hostname").write_text(hostname + "\n")
    inside(root, "/etc/hosts").write_text(f"127.0.0.1\tlocalhost\n127.0.1.1\t{hostname}\n")


def scrub_image(root: Path) -> None:
    inside(root, "/etc/resolv.conf").unlink(missing_ok=True)
