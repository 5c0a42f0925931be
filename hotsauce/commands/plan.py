"""`hotsauce plan`: what `hotsauce build` would do with the same -c and cache flags, done by nothing."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from hotsauce.commands.build import config_path
from hotsauce.config import DEFAULT_CONFIG_NAME, BuildOptions, FsType, load_config
from hotsauce.errors import ConfigError
from hotsauce.image.layout import parse_boot_mode, parse_layout
from hotsauce.image.whole_disk import plan_layout
from hotsauce.modules.plan import BuildPlan, CacheUse, Variable, make_build_plan
from hotsauce.store.cache import Cache, default_cache_dir

# Values longer than this are cut in the text output (--json has them whole).
VALUE_WIDTH = 60


def add_command(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "plan", help="show what a build would do, without doing it",
        description="Resolve the modules as `hotsauce build` does and print, allocating, installing and "
        "fetching nothing: each module's origin and kind, the variables it will see and where each value "
        "comes from, which cache entries a build would use and why others would miss, and the Galaxy "
        "installs it would do.",
    )
    parser.add_argument("-c", "--config", type=Path, default=None,
                        help=f"build description (default: ./{DEFAULT_CONFIG_NAME}; without one, the default image)")
    parser.add_argument("--no-cache", dest="use_cache", action="store_false", help="plan a build without the cache")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="cache folder (default: cache_dir in build.yaml, $HOTSAUCE_CACHE, ~/.cache/hotsauce)")
    parser.add_argument("--layout", default=None, help="as for build: ec2 (default) or disk (its base differs)")
    parser.add_argument("--boot", default=None, help="as for build, with --layout disk")
    parser.add_argument("--fs-type", default=FsType.EXT4.value, help="as for build (a disk's base depends on it)")
    parser.add_argument("--json", action="store_true", help="print the plan as JSON (see `format` in it)")
    parser.set_defaults(run=run_plan)


def run_plan(args: argparse.Namespace) -> int:
    config = load_config(config_path(args))
    try:
        fs_type = FsType(args.fs_type)
    except ValueError:
        raise ConfigError(f"--fs-type: unsupported {args.fs_type!r}; choose one of "
                          + ", ".join(f.value for f in FsType)) from None
    options = BuildOptions(  # size and output shape nothing a plan shows
        size=0, output=Path("plan"), fs_type=fs_type,
        layout=parse_layout(args.layout, "--layout") if args.layout is not None else None,
        boot=parse_boot_mode(args.boot, "--boot") if args.boot is not None else None,
    )
    config, _, _ = plan_layout(config, options)
    cache = Cache(args.cache_dir or config.cache_dir or default_cache_dir(), enabled=args.use_cache)
    plan = make_build_plan(config, cache)
    if args.json:
        print(json.dumps(plan.to_json(), indent=2))
    else:
        print("\n".join(render(plan)))
    return 0


def render(plan: BuildPlan) -> list[str]:
    cache = plan.cache_folder if plan.cache_enabled else f"{plan.cache_folder} (disabled: --no-cache)"
    lines = [f"plan of {plan.config or 'the default build.yaml'}; cache: {cache}"]
    if plan.galaxy is not None:
        g = plan.galaxy
        wanted = ", ".join(f"{kind} {', '.join(names)}" for kind, names in g.would_install.items() if names)
        lines.append(f"galaxy: {g.requirements}: {g.reason}" + (f"; would install {wanted}" if wanted else ""))
        if g.entry:
            lines.append(f"  entry: {g.entry}")
    lines.append(f"base: {_use(plan.base)}")
    lines.append("modules:")
    for module in plan.modules:
        lines.append(f"  {module.index + 1}. {module.label} ({module.kind}) from {module.origin}"
                     + (f": {module.path}" if module.path else "") + f" [run {module.run}]")
        lines += [f"       note: {note}" for note in module.notes]
        lines += [f"       {name} = {_variable(v)}" for name, v in module.variables.items()]
    if plan.common_variables:
        lines.append("every Ansible module also sees: " + ", ".join(
            f"{name} ({v.source})" for name, v in plan.common_variables.items()))
    lines.append("module runs:")
    for run in plan.runs:
        lines.append(f"  run {run.run} ({', '.join(run.modules)}): {_use(run.cache)}")
    lines += [f"warning: {warning}" for warning in plan.warnings]
    return lines


def _use(use: CacheUse) -> str:
    verdict = {True: "hit", False: "miss", None: "unknown"}[use.hit]
    return f"{verdict}: {use.reason}" + (f" ({use.entry})" if use.entry else "")


def _variable(variable: Variable) -> str:
    text = f"{_value(variable.value)}  <- {variable.source} ({variable.where})"
    if variable.overrides:
        text += "; over " + ", ".join(f"{s.source} {_value(s.value)}" for s in reversed(variable.overrides))
    return text


def _value(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= VALUE_WIDTH else text[: VALUE_WIDTH - 3] + "..."
