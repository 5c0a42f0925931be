"""What a build would do, worked out as data without doing it (`hotsauce plan`).

Nothing is allocated, installed, fetched or written: the modules are
resolved as a build resolves them, with roles from requirements.yml taken
from the cache when a build already installed them, and named as pending
when not. The cache keys are the build's own (hotsauce.bases.debian,
hotsauce.modules.galaxy, hotsauce.modules.result_cache); only whether each
entry exists is looked at. A Debian base's key needs the mirror's Release
dates, read as the build reads them.

Variables are given with the source that wins, in Ansible's order as
hotsauce feeds it (hotsauce.modules.ansible_run): role defaults, then the
build.yaml's `vars` mapping and top-level keys (inventory variables), then the
module's `vars` (play vars), then the role's vars/main.yml. A Python module
gets the build.yaml mapping itself, over the defaults of its CONFIG_KEYS.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from hotsauce.bases.debian import BASES, miss_reason, plan_base
from hotsauce.bases.download import cached_copy
from hotsauce.build import variables_for
from hotsauce.config import (
    NOTHING,
    BuildConfig,
    DebianBase,
    DownloadBase,
    ModuleKind,
    check_unknown_keys,
    read_yaml,
)
from hotsauce.errors import ConfigError
from hotsauce.modules import galaxy, result_cache
from hotsauce.modules.resolve import (
    ModuleSearch,
    ResolvedModule,
    check_python_module,
    module_search,
    plan_runs,
    python_module_keys,
    resolve,
    variables_read_by,
)
from hotsauce.store.cache import Cache

# The version of the --json shape; bumped when a field changes meaning or goes.
PLAN_FORMAT = 1
PENDING = "requirements (not installed yet)"


class Source(StrEnum):
    """Where a variable's value comes from, lowest precedence first for a role."""

    ROLE_DEFAULT = "role default"
    CONFIG_KEYS_DEFAULT = "CONFIG_KEYS default"
    BUILD_YAML_VARS = "build.yaml vars"
    BUILD_YAML = "build.yaml"
    HOTSAUCE = "hotsauce"
    MODULE_VARS = "module vars"
    ROLE_VARS = "role vars"


@dataclass(frozen=True)
class Setting:
    """One source's value of a variable."""

    source: Source
    where: str  # the file (and key) that holds it
    value: Any


@dataclass(frozen=True)
class Variable:
    value: Any
    source: Source
    where: str
    overrides: tuple[Setting, ...] = ()  # what it wins over, lowest first


@dataclass(frozen=True)
class ModulePlan:
    index: int
    name: str
    label: str
    kind: str  # role, playbook, python
    origin: str  # the place it was resolved from, or PENDING
    path: str | None
    run: int  # 1-based: the module run it belongs to
    variables: dict[str, Variable]
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class CacheUse:
    """One cache entry a build would look at: hit, miss, or None when it cannot be told yet."""

    entry: str | None
    hit: bool | None
    reason: str


@dataclass(frozen=True)
class GalaxyPlan:
    requirements: str
    entry: str | None
    installed: bool  # in the cache already: a build uses it as it is
    would_install: dict[str, list[str]]  # roles, collections: empty when nothing would be installed
    reason: str


@dataclass(frozen=True)
class RunPlan:
    run: int
    modules: list[str]
    cache: CacheUse


@dataclass(frozen=True)
class BuildPlan:
    config: str | None
    cache_folder: str
    cache_enabled: bool
    galaxy: GalaxyPlan | None
    base: CacheUse
    modules: list[ModulePlan]
    common_variables: dict[str, Variable]  # what every Ansible module sees from the build.yaml
    runs: list[RunPlan]
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        shaped: dict[str, Any] = json.loads(json.dumps({"format": PLAN_FORMAT, **asdict(self)}, default=str))
        return shaped


# --- the plan ----------------------------------------------------------------------


def make_build_plan(config: BuildConfig, cache: Cache) -> BuildPlan:
    """The plan of building `config` with `cache`; raises ConfigError where the build would."""
    galaxy_plan, roles_dirs, collections_dirs, pending = _galaxy(config, cache)
    search = module_search(config, roles_dirs, collections_dirs)
    modules, notes = _resolve(config, search, pending)
    warnings = _check_keys(config, modules, pending)
    runs = plan_runs(modules)
    run_of = {m.ref.index: number for number, run in enumerate(runs, 1) for m in run}
    base, identity = _base(config, cache)
    return BuildPlan(
        config=str(config.source) if config.source else None,
        cache_folder=str(cache.root),
        cache_enabled=cache.enabled,
        galaxy=galaxy_plan,
        base=base,
        modules=[_module_plan(config, search, m, run_of[m.ref.index], notes.get(m.ref.index, ()))
                 for m in modules],
        common_variables=common_variables(config),
        runs=_runs(config, cache, runs, identity, notes),
        warnings=warnings,
    )


def _galaxy(config: BuildConfig, cache: Cache) -> tuple[GalaxyPlan | None, list[Path], list[Path], set[str]]:
    """What would be installed from requirements.yml; the folders of what is installed already,
    and the names of roles still to come."""
    if config.requirements is None:
        return None, [], [], set()
    requirements = config.requirements.absolute()
    spec = galaxy.read_requirements(requirements)
    names = {kind: [_requirement_name(e) for e in spec[kind]] for kind in ("roles", "collections")}
    entry = cache.root / galaxy.CACHE_KIND / galaxy.requirements_key(requirements, spec)
    installed = entry.is_dir()
    roles, collections = ([entry / "roles"], [entry / "collections"]) if installed else ([], [])
    if not cache.enabled:
        reason = "would install into the build's work folder: the cache is disabled"
        # What a build installs is what the cache holds under the same key: its roles show what resolves.
        plan = GalaxyPlan(str(requirements), None, False, names, reason)
    elif installed:
        plan = GalaxyPlan(str(requirements), str(entry), True, {"roles": [], "collections": []},
                          "installed in the cache already")
    else:
        plan = GalaxyPlan(str(requirements), str(entry), False, names,
                          "not in the cache: no build installed this requirements.yml (its text and "
                          "the local sources it names) before")
    return plan, roles, collections, set() if installed else {_spelling(n) for n in names["roles"]}


def _requirement_name(entry: Any) -> str:
    if isinstance(entry, dict):
        return str(entry.get("name") or entry.get("src") or entry.get("source") or "?")
    return str(entry)


def _spelling(name: str) -> str:
    return name.replace("-", "_")


def _resolve(config: BuildConfig, search: ModuleSearch,
             pending: set[str]) -> tuple[list[ResolvedModule], dict[int, tuple[str, ...]]]:
    """The modules as a build resolves them; a role that requirements.yml would bring is pending."""
    modules: list[ResolvedModule] = []
    notes: dict[int, tuple[str, ...]] = {}
    for ref in config.modules:
        where = f"{config.name}: modules[{ref.index}]"
        maybe_role = ref.kind in (ModuleKind.AUTO, ModuleKind.ROLE)
        if maybe_role and _spelling(ref.name) in pending:
            modules.append(_pending(ref, config))
            notes[ref.index] = ("resolved once requirements.yml is installed",)
            continue
        try:
            module = resolve(ref, search, where)
        except ConfigError:
            if not (maybe_role and pending):
                raise
            modules.append(_pending(ref, config))
            notes[ref.index] = ("not found yet: it may come with requirements.yml, installed by the build",)
            continue
        if module.kind is ModuleKind.PYTHON:
            check_python_module(module.path, where)
        modules.append(module)
    return modules, notes


def _pending(ref: Any, config: BuildConfig) -> ResolvedModule:
    return ResolvedModule(ref, ModuleKind.ROLE, config.directory / "<requirements>" / ref.name)


def _check_keys(config: BuildConfig, modules: Sequence[ResolvedModule], pending: set[str]) -> list[str]:
    """The build's own check of top-level keys; left to the build while roles are still to come."""
    if pending:
        return ["top-level keys are checked once requirements.yml is installed (the build does)"]
    return check_unknown_keys(config, variables_read_by(modules))


def _origin(module: ResolvedModule, search: ModuleSearch) -> str:
    if module.kind is ModuleKind.PLAYBOOK:
        return search.places[0].name if module.path.is_relative_to(search.base_directory) else "a path"
    for place in search.places:
        folders = [place.python_dir, *place.roles_dirs, *place.collections_dirs]
        if any(folder is not None and module.path.is_relative_to(folder) for folder in folders):
            return place.name
    return PENDING


# --- variables -----------------------------------------------------------------------


def common_variables(config: BuildConfig) -> dict[str, Variable]:
    """The inventory variables every Ansible module sees, each with its source."""
    layers = _inventory_layers(config)
    return _winners(layers, {name for name, _ in layers})


def _inventory_layers(config: BuildConfig) -> list[tuple[str, Setting]]:
    """The build.yaml as ansible_run hands it to Ansible (variables_of): the `vars` mapping spread
    out, then every other key over it, and hotsauce's own."""
    cfg = variables_for(config)
    spread = [(str(name), Setting(Source.BUILD_YAML_VARS, f"{config.name}: vars", value))
              for name, value in (cfg.get("vars") or {}).items()]
    top = [(name, Setting(*_build_source(config, name), value)) for name, value in cfg.items() if name != "vars"]
    return spread + top


def _build_source(config: BuildConfig, name: str) -> tuple[Source, str]:
    if name in config.data:
        return Source.BUILD_YAML, config.name
    return Source.HOTSAUCE, "hotsauce"


def _module_plan(config: BuildConfig, search: ModuleSearch, module: ResolvedModule, run: int,
                 notes: tuple[str, ...]) -> ModulePlan:
    origin = _origin(module, search)
    variables: dict[str, Variable] = {}
    extra_notes: list[str] = []
    if origin == PENDING:
        variables = _winners(_module_vars_layer(config, module), _names_of(module, set()))
    elif module.kind is ModuleKind.PYTHON:
        variables = _python_variables(config, module)
        if module.ref.vars:
            extra_notes.append("its `vars` are not given to a Python module: cfg is the build.yaml")
    else:
        variables = _ansible_variables(config, module)
    return ModulePlan(module.ref.index, module.name, module.ref.label, module.kind.value, origin,
                      None if origin == PENDING else str(module.path), run, variables, (*notes, *extra_notes))


def _ansible_variables(config: BuildConfig, module: ResolvedModule) -> dict[str, Variable]:
    layers: list[tuple[str, Setting]] = []
    if module.kind is ModuleKind.ROLE:
        layers += _file_layer(module.path / "defaults", Source.ROLE_DEFAULT)
    layers += _inventory_layers(config)
    layers += _module_vars_layer(config, module)
    if module.kind is ModuleKind.ROLE:
        layers += _file_layer(module.path / "vars", Source.ROLE_VARS)
    own = {name for name, setting in layers if setting.source not in _INVENTORY_SOURCES}
    return _winners(layers, _names_of(module, own))


_INVENTORY_SOURCES = frozenset({Source.BUILD_YAML, Source.BUILD_YAML_VARS, Source.HOTSAUCE})


def _python_variables(config: BuildConfig, module: ResolvedModule) -> dict[str, Variable]:
    layers = [(key.name, Setting(Source.CONFIG_KEYS_DEFAULT, str(module.path), key.default))
              for key in python_module_keys(module.path, str(module.path)) if key.default is not NOTHING]
    layers += [(name, Setting(*_build_source(config, name), value))
               for name, value in variables_for(config).items()]
    return _winners(layers, _names_of(module, set()))


def _names_of(module: ResolvedModule, own: set[str]) -> set[str]:
    """The variables shown for a module: those it declares or reads, and those set for it alone."""
    if not module.path.exists():
        return own | set(module.ref.vars)
    return own | set(variables_read_by([module]).names()) | set(module.ref.vars)


def _module_vars_layer(config: BuildConfig, module: ResolvedModule) -> list[tuple[str, Setting]]:
    where = f"{config.name}: modules[{module.ref.index}].vars"
    return [(name, Setting(Source.MODULE_VARS, where, value)) for name, value in module.ref.vars.items()]


def _file_layer(folder: Path, source: Source) -> list[tuple[str, Setting]]:
    """A role's defaults/ or vars/: main.yml (or main.yaml)."""
    for name in ("main.yml", "main.yaml"):
        path = folder / name
        if path.is_file():
            data = read_yaml(path)
            if isinstance(data, dict):
                return [(str(key), Setting(source, str(path), value)) for key, value in data.items()]
    return []


def _winners(layers: Sequence[tuple[str, Setting]], names: set[str]) -> dict[str, Variable]:
    """For each name, the last layer that sets it (layers run lowest precedence first)."""
    variables = {}
    for name in sorted(names):
        settings = [setting for key, setting in layers if key == name]
        if not settings:
            continue  # read, but set nowhere: the module's own default or an error at run time
        winner = settings[-1]
        variables[name] = Variable(winner.value, winner.source, winner.where, tuple(settings[:-1]))
    return variables


# --- the cache -----------------------------------------------------------------------


def _base(config: BuildConfig, cache: Cache) -> tuple[CacheUse, str | None]:
    """How the build would get its base, and the base's identity for the module cache (None: not
    known before the build fetches it)."""
    base = config.base
    if isinstance(base, DebianBase):
        if not cache.enabled:
            return CacheUse(None, False, "bootstrapped: the cache is disabled"), None
        planned = plan_base(base)
        entry = cache.root / BASES / planned.entry_name
        if entry.is_file():
            return CacheUse(str(entry), True, "base served from the cache"), planned.entry_name
        return CacheUse(str(entry), False, f"would bootstrap: {miss_reason(cache, planned.key)}"), \
            planned.entry_name
    return _download(base, cache)


def _download(base: DownloadBase, cache: Cache) -> tuple[CacheUse, str | None]:
    if base.url.startswith("file://"):
        path = Path(urllib.parse.unquote(urllib.parse.urlparse(base.url).path))
        if not path.is_file():
            raise ConfigError(f"download.from: {base.url}: no such file")
        return CacheUse(str(path), None, "read in place (file:// is never copied)"), \
            result_cache.download_identity(base, path)
    known = result_cache.download_identity(base, Path()) if base.sha256 else None
    if not cache.enabled:
        return CacheUse(None, False, f"would fetch {base.url}: the cache is disabled"), known
    entry, reason = cached_copy(base, cache)
    if reason is None:
        return CacheUse(str(entry), True, "download served from the cache"), \
            result_cache.download_identity(base, entry)
    return CacheUse(str(entry), False, f"would fetch {base.url}: {reason}"), known


def _runs(config: BuildConfig, cache: Cache, runs: Sequence[Sequence[ResolvedModule]],
          identity: str | None, notes: Mapping[int, tuple[str, ...]]) -> list[RunPlan]:
    """Which module runs a build would restore from the cache and which it would run, and why."""
    names = [[m.name for m in run] for run in runs]
    first_pending = next((i for i, run in enumerate(runs) if any(m.ref.index in notes for m in run)), len(runs))
    if not cache.enabled:
        return [RunPlan(i + 1, names[i], CacheUse(None, False, "would run: the cache is disabled"))
                for i in range(len(runs))]
    if identity is None:
        return [RunPlan(i + 1, names[i], CacheUse(None, None, "not known until the build has fetched its base"))
                for i in range(len(runs))]
    layers = result_cache.layers_for(cache, identity, config, runs)
    folder = cache.root / result_cache.KIND
    entries = [folder / layers.entry_name(i) for i in range(len(runs))]
    newest = next((i for i in reversed(range(first_pending)) if entries[i].is_file()), None)
    plans = []
    for i in range(len(runs)):
        plans.append(RunPlan(i + 1, names[i], _run_use(i, newest, first_pending, entries)))
    last = len(runs) - 1
    ran = folder / layers.ran_name(last) if runs else None
    restored = -1 if newest is None else newest  # a single run has nothing before it to restore
    if ran is not None and ran.is_file() and last < first_pending and restored == last - 1:
        plans[last] = RunPlan(last + 1, names[last], _quick_last_run(ran))
    return plans


def _quick_last_run(record: Path) -> CacheUse:
    """A last run the cache knows completed but did not archive (result_cache.worth_keeping)."""
    seconds = (Cache.read_key(record) or {}).get("seconds", "?")
    return CacheUse(str(record), True, f"completed before in {seconds} s and not archived: an identical build "
                                       "copies its kept set; with other output options it runs again")


def _run_use(i: int, newest: int | None, first_pending: int, entries: Sequence[Path]) -> CacheUse:
    restored = -1 if newest is None else newest
    if i <= restored:
        how = "restored from the cache" if i == restored else f"inside the restored result of runs 1-{restored + 1}"
        return CacheUse(str(entries[i]), True, how)
    if i >= first_pending:
        return CacheUse(None, None, "not known until requirements.yml is installed")
    if i == restored + 1:
        if newest is None:
            why = "none ran before with this base, configuration and first module"
        else:
            why = (f"runs 1-{restored + 1} are cached, so a module of run {i + 1} changed since "
                   "(its kind, name, vars or files), or this run never completed")
        return CacheUse(str(entries[i]), False, f"would run: {why}")
    return CacheUse(str(entries[i]), False, f"would run: it follows run {i}, which runs")
