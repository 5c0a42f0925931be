"""A built-in Python module: record what built the image in /etc/hotsauce-release."""

from __future__ import annotations

import json
from typing import Any

from hotsauce import __version__
from hotsauce.rootpath import inside

CONFIG_KEYS = ("build_info",)


def modify(name: str, root: str, cfg: dict[str, Any]) -> None:
    modules = [m if isinstance(m, str) else json.dumps(m, sort_keys=True) for m in cfg.get("modules", [])]
    release = inside(root, "/etc/hotsauce-release")
    release.write_text(
        f"HOTSAUCE_VERSION={__version__}\n"
        f"HOTSAUCE_MODULES={json.dumps(modules)}\n"
    )
