"""Python modules: a file with `def modify(name, root, cfg)`, run in this process.

`name` is the module's name as listed, `root` the mounted root's path (a
str, as it always was), `cfg` a deep copy of the build configuration with
the defaults of the keys the module declares, so a module cannot change what
later modules see. Raising fails the build.
Module authors reach paths inside the image through
`hotsauce.rootpath.inside(root, path)`, which never leaves the root.
"""

from __future__ import annotations

import copy
import importlib.util
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hotsauce.config import NOTHING
from hotsauce.errors import Interrupted, ModuleFailed
from hotsauce.modules.resolve import ResolvedModule, python_module_keys


def run_python_module(module: ResolvedModule, root: Path, cfg: Mapping[str, Any]) -> None:
    modify = _load_modify(module)
    try:
        modify(module.name, str(root), copy.deepcopy(cfg_for(module, cfg)))
    except Interrupted:
        raise  # SIGTERM while the module ran: not the module's failure
    except Exception as error:
        raise ModuleFailed(module.name, _describe(error, module.path)) from error


def cfg_for(module: ResolvedModule, cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The build configuration with the defaults of the keys the module declares."""
    defaults = {key.name: key.default for key in python_module_keys(module.path, str(module.path))
                if key.default is not NOTHING}
    return {**defaults, **cfg}


def _load_modify(module: ResolvedModule) -> Any:
    spec = importlib.util.spec_from_file_location(f"hotsauce_module_{module.path.stem}", module.path)
    assert spec is not None and spec.loader is not None
    loaded = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(loaded)
    except Exception as error:
        raise ModuleFailed(module.name, f"cannot load {module.path}: {_describe(error, module.path)}") from error
    return loaded.modify


def _describe(error: Exception, path: Path) -> str:
    """The error and the module's own line that raised it."""
    frames = [f for f in traceback.extract_tb(error.__traceback__) if f.filename == str(path)]
    where = f" ({path.name}:{frames[-1].lineno})" if frames else ""
    return f"{type(error).__name__}: {error}{where}"
