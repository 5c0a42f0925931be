"""Resolve the `modules` list to files on disk and plan how they run.

A bare name is looked up place by place; within a place a Python module and
a role of the same name are ambiguous, and the first place that has either
wins:

  1. beside the build.yaml: python_modules/NAME.py and roles/NAME
  2. roles installed from the build's requirements.yml
  3. hotsauce's built-in python_modules/ and roles/

`-` and `_` are interchangeable in names (install-rpms is install_rpms).
The built-in roles are also the collection hotsauce.image (scripts/build-collection):
`hotsauce.image.add_user` names the same role as `add_user`, unless a
hotsauce.image collection installed from requirements.yml comes first.
Consecutive Ansible modules (roles, playbooks) run in one ansible-runner
call; a Python module between them splits the run.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from hotsauce.config import BuildConfig, Key, ModuleKeys, ModuleKind, ModuleRef, module_key
from hotsauce.errors import ConfigError
from hotsauce.modules.builtins import builtin_folder

# The module-level name under which a Python module declares its own keys.
CONFIG_KEYS = "CONFIG_KEYS"
# The collection the built-in roles are published as.
BUILTIN_COLLECTION = "hotsauce.image"


@dataclass(frozen=True)
class Place:
    """One place modules are looked up in."""

    name: str
    python_dir: Path | None
    roles_dirs: tuple[Path, ...] = ()
    collections_dirs: tuple[Path, ...] = ()
    collection: str | None = None  # "namespace.name" when these roles are also that collection's


@dataclass(frozen=True)
class ResolvedModule:
    ref: ModuleRef
    kind: ModuleKind  # never AUTO
    path: Path  # the .py file, the role folder, or the playbook file

    @property
    def name(self) -> str:
        return self.ref.name

    @property
    def is_ansible(self) -> bool:
        return self.kind in (ModuleKind.ROLE, ModuleKind.PLAYBOOK)


@dataclass(frozen=True)
class ModuleSearch:
    places: tuple[Place, ...]
    base_directory: Path  # playbook paths are relative to the build.yaml
    roles_path: tuple[Path, ...] = field(default=())  # for ansible: every roles folder
    collections_path: tuple[Path, ...] = field(default=())


def module_search(config: BuildConfig, installed_roles: Sequence[Path] = (),
                  installed_collections: Sequence[Path] = ()) -> ModuleSearch:
    user = Place("beside the build.yaml", config.directory / "python_modules", (config.directory / "roles",))
    installed = Place("installed from requirements", None, tuple(installed_roles), tuple(installed_collections))
    builtin = Place("built into hotsauce", builtin_folder("python_modules"), (builtin_folder("roles"),),
                    collection=BUILTIN_COLLECTION)
    places = (user, installed, builtin) if config.source else (installed, builtin)
    roles_path = tuple(d for p in places for d in p.roles_dirs)
    return ModuleSearch(places, config.directory, roles_path, tuple(installed_collections))


def _spellings(name: str) -> list[str]:
    spellings = [name, name.replace("-", "_"), name.replace("_", "-")]
    return list(dict.fromkeys(spellings))


def _python_in(place: Place, name: str) -> Path | None:
    if place.python_dir is None:
        return None
    for spelling in _spellings(name):
        candidate = place.python_dir / f"{spelling}.py"
        if candidate.is_file():
            return candidate
    return None


def _role_in(place: Place, name: str) -> Path | None:
    if place.collection and name.startswith(f"{place.collection}."):
        name = name.removeprefix(f"{place.collection}.")
    for spelling in _spellings(name):
        for roles_dir in place.roles_dirs:
            candidate = roles_dir / spelling
            if candidate.is_dir():
                return candidate
        if spelling.count(".") == 2:  # namespace.collection.role
            namespace, collection, role = spelling.split(".")
            for collections_dir in place.collections_dirs:
                candidate = collections_dir / "ansible_collections" / namespace / collection / "roles" / role
                if candidate.is_dir():
                    return candidate
    return None


def resolve(ref: ModuleRef, search: ModuleSearch, where: str) -> ResolvedModule:
    if ref.kind is ModuleKind.PLAYBOOK:
        path = (search.base_directory / ref.name).absolute()
        if not path.is_file():
            raise ConfigError(f"{where}: playbook {ref.name!r}: no such file {path}")
        return ResolvedModule(ref, ref.kind, path)
    for place in search.places:
        python = _python_in(place, ref.name) if ref.kind in (ModuleKind.AUTO, ModuleKind.PYTHON) else None
        role = _role_in(place, ref.name) if ref.kind in (ModuleKind.AUTO, ModuleKind.ROLE) else None
        if python and role:
            raise ConfigError(
                f"{where}: {ref.name!r} is both a Python module ({python}) and a role ({role}) "
                f"{place.name}; write 'python: {ref.name}' or 'role: {ref.name}'"
            )
        if python:
            return ResolvedModule(ref, ModuleKind.PYTHON, python)
        if role:
            return ResolvedModule(ref, ModuleKind.ROLE, role)
    raise ConfigError(f"{where}: unknown module {ref.label!r}; available: {', '.join(available_modules(search))}")


def available_modules(search: ModuleSearch) -> list[str]:
    names: set[str] = set()
    for place in search.places:
        if place.python_dir and place.python_dir.is_dir():
            names.update(p.stem for p in place.python_dir.glob("*.py") if not p.name.startswith("_"))
        for roles_dir in place.roles_dirs:
            if roles_dir.is_dir():
                names.update(p.name for p in roles_dir.iterdir() if p.is_dir())
    return sorted(names)


def resolve_all(config: BuildConfig, search: ModuleSearch) -> list[ResolvedModule]:
    resolved = [resolve(ref, search, f"{config.name}: modules[{ref.index}]") for ref in config.modules]
    for module in resolved:
        where = f"{config.name}: modules[{module.ref.index}]"
        if module.kind is ModuleKind.PYTHON:
            check_python_module(module.path, where)
        elif module.is_ansible:
            check_collections_installed(module, search.collections_path, where)
    return resolved


# --- collections a role or playbook calls --------------------------------------------------------

# Collections every ansible-core has: their modules need nothing installed.
CORE_COLLECTIONS = frozenset({"ansible.builtin", "ansible.legacy"})
# A fully qualified module name: namespace.collection.module.
_FQCN = re.compile(r"^([a-z0-9_]+)\.([a-z0-9_]+)\.([A-Za-z0-9_.]+)$")
_TASK_LISTS = ("tasks", "pre_tasks", "post_tasks", "handlers", "block", "rescue", "always")
_INCLUDES = frozenset({"include_tasks", "import_tasks", "ansible.builtin.include_tasks",
                       "ansible.builtin.import_tasks", "include", "ansible.builtin.include"})


@dataclass(frozen=True)
class CollectionCall:
    collection: str  # namespace.collection
    module: str  # the full name as the task wrote it
    file: Path


def check_collections_installed(module: ResolvedModule, collections_path: Sequence[Path], where: str) -> None:
    """Every namespace.collection.module a role or playbook calls is installed, or the
    build stops here, before a byte is allocated, naming the requirements.yml entry to add."""
    roots = [*collections_path, *bundled_collection_roots()]
    for call in collection_calls(module):
        collection = collection_folder(call.collection, roots)
        kind = "role" if module.kind is ModuleKind.ROLE else "playbook"
        shown = call.file.relative_to(module.path) if call.file.is_relative_to(module.path) else call.file.name
        if collection is None:
            raise ConfigError(
                f"{where}: {kind} {module.name!r} calls {call.module} ({shown}), but collection "
                f"{call.collection} is not installed; add to requirements.yml: "
                f"collections: [{{name: {call.collection}}}]"
            )
        if not collection_has_module(collection, call.module.split(".", 2)[2]):
            raise ConfigError(
                f"{where}: {kind} {module.name!r} calls {call.module} ({shown}), which the installed "
                f"collection {call.collection} ({collection}) does not have"
            )


def bundled_collection_roots() -> list[Path]:
    """Where the Python environment's own collections are (the `ansible` package brings many)."""
    import importlib.util

    spec = importlib.util.find_spec("ansible_collections")
    if spec is None or spec.submodule_search_locations is None:
        return []
    return [Path(location).parent for location in spec.submodule_search_locations]


def collection_folder(collection: str, roots: Sequence[Path]) -> Path | None:
    namespace, name = collection.split(".")
    for root in roots:
        candidate = root / "ansible_collections" / namespace / name
        if candidate.is_dir():
            return candidate
    return None


def collection_has_module(collection: Path, module: str) -> bool:
    plugins = collection / "plugins"
    path = module.replace(".", "/")
    if any((plugins / kind / f"{path}.py").is_file() for kind in ("modules", "action")):
        return True
    routing = _yaml_mapping(collection / "meta" / "runtime.yml").get("plugin_routing") or {}
    routed = routing.get("modules") if isinstance(routing, dict) else None
    return isinstance(routed, dict) and module in routed


def collection_calls(module: ResolvedModule) -> list[CollectionCall]:
    """The namespace.collection.module keys of the module's tasks and handlers, in the task
    files it includes too (a role's tasks/ and handlers/ folders are read whole)."""
    if module.kind is ModuleKind.ROLE:
        files = [p for folder in ("tasks", "handlers") for p in sorted((module.path / folder).rglob("*.y*ml"))]
    else:
        files = [module.path]
    calls: list[CollectionCall] = []
    seen: set[Path] = set()
    while files:
        path = files.pop(0)
        if path in seen or not path.is_file():
            continue
        seen.add(path)
        try:
            data = yaml.safe_load(path.read_text())
        except (yaml.YAMLError, OSError, UnicodeDecodeError):
            continue  # Ansible reports a file it cannot read, with its own words
        for task in _tasks_in(data):
            calls.extend(CollectionCall(name, key, path) for key in task
                         if (name := _collection_of(key)) is not None)
            files.extend(path.parent / included for included in _included_files(task))
    return calls


def _tasks_in(data: object) -> Iterable[dict[str, object]]:
    """Every task mapping of a task file or playbook, blocks and plays opened."""
    items = data if isinstance(data, list) else [data]
    for item in items:
        if not isinstance(item, dict):
            continue
        yield item
        for key in _TASK_LISTS:
            if isinstance(item.get(key), list):
                yield from _tasks_in(item[key])


def _collection_of(key: object) -> str | None:
    match = _FQCN.match(key) if isinstance(key, str) else None
    if match is None:
        return None
    collection = f"{match.group(1)}.{match.group(2)}"
    return None if collection in CORE_COLLECTIONS else collection


def _included_files(task: Mapping[str, object]) -> list[str]:
    """Task files a task includes by a literal name (templated names cannot be followed)."""
    names: list[str] = []
    for key in _INCLUDES & set(task):
        value = task[key]
        name = value.get("file") if isinstance(value, dict) else value
        if isinstance(name, str) and "{{" not in name:
            names.append(name)
    return names


def check_python_module(path: Path, where: str) -> None:
    """A Python module defines modify(name, root, cfg); checked without importing it."""
    try:
        tree = ast.parse(path.read_text(), str(path))
    except SyntaxError as error:
        raise ConfigError(f"{where}: {path}:{error.lineno}: syntax error: {error.msg}") from None
    functions = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "modify"]
    if not functions:
        raise ConfigError(f"{where}: {path} has no function modify(name, root, cfg)")
    arguments = functions[-1].args
    positional = [a.arg for a in (*arguments.posonlyargs, *arguments.args)]
    required = len(positional) - len(arguments.defaults)
    if arguments.vararg is None and (len(positional) < 3 or required > 3):
        raise ConfigError(f"{where}: {path}: modify takes ({', '.join(positional)}); expected modify(name, root, cfg)")


def variables_read_by(modules: Iterable[ResolvedModule]) -> ModuleKeys:
    """What the listed modules say about top-level build.yaml keys.

    A role names them in defaults/main.yml or meta/argument_specs.yml. A
    Python module declares them in CONFIG_KEYS ({NAME: {type, default,
    help}}) or reads them with a literal name (`cfg["x"]`, `cfg.get("x")`),
    read from its source without importing it.
    """
    declared: list[tuple[str, Key]] = []
    read: set[str] = set()
    unreadable: list[str] = []
    for module in modules:
        if module.kind is ModuleKind.ROLE:
            read.update(_role_variables(module.path))
        elif module.kind is ModuleKind.PYTHON:
            where = str(module.path)
            declared += [(module.name, key) for key in python_module_keys(module.path, where)]
            reads = cfg_reads(module.path)
            read.update(reads.names)
            if not reads.complete:
                unreadable.append(module.name)
    return ModuleKeys(tuple(declared), frozenset(read), tuple(unreadable))


def _role_variables(role: Path) -> set[str]:
    names: set[str] = set()
    for defaults in (role / "defaults" / "main.yml", role / "defaults" / "main.yaml"):
        names.update(_yaml_keys(defaults))
    for specs in (role / "meta" / "argument_specs.yml", role / "meta" / "argument_specs.yaml"):
        specs_by_entry = _yaml_mapping(specs).get("argument_specs") or {}
        if isinstance(specs_by_entry, dict):
            for entry in specs_by_entry.values():
                names.update((entry or {}).get("options", {}) or {})
    return names


def _yaml_mapping(path: Path) -> dict[str, object]:
    if not path.is_file():
        return {}
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError:
        return {}
    return data if isinstance(data, dict) else {}


def _yaml_keys(path: Path) -> set[str]:
    return {str(key) for key in _yaml_mapping(path)}


def python_module_keys(path: Path, where: str) -> tuple[Key, ...]:
    """The keys a Python module declares: CONFIG_KEYS = {NAME: {type, default, help}}."""
    for node in ast.parse(path.read_text(), str(path)).body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == CONFIG_KEYS for t in node.targets
        ):
            try:
                declarations = ast.literal_eval(node.value)
            except ValueError:
                raise ConfigError(f"{where}: {CONFIG_KEYS} must be written as a literal mapping") from None
            if not isinstance(declarations, dict):
                raise ConfigError(f"{where}: {CONFIG_KEYS}: expected a mapping of key names to "
                                  f"{{'type': ..., 'default': ..., 'help': ...}}, got a {type(declarations).__name__}")
            return tuple(module_key(str(name), spec, where) for name, spec in declarations.items())
    return ()


@dataclass(frozen=True)
class CfgReads:
    """The keys a module reads from cfg by literal name; `complete`: it reads nothing else."""

    names: frozenset[str]
    complete: bool


# cfg.get("x"), cfg.pop("x"), cfg.setdefault("x", ...): reads of one named key.
_NAMED_READS = {"get", "pop", "setdefault"}


def cfg_reads(path: Path) -> CfgReads:
    """How a Python module's modify reads its `cfg`, from its source.

    `cfg["x"]`, `cfg.get("x")` and `"x" in cfg` name the key they read, and
    cfg handed to a function of the same file is followed there; any other
    use (`cfg[name]`, `cfg.items()`, `json.dumps(cfg)`, cfg handed elsewhere)
    could read any key.
    """
    tree = ast.parse(path.read_text(), str(path))
    functions = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    modify = functions.get("modify")
    if modify is None:
        return CfgReads(frozenset(), True)
    parameters = [*modify.args.posonlyargs, *modify.args.args]
    if len(parameters) < 3:  # modify(*args): cfg has no name to follow
        return CfgReads(frozenset(), modify.args.vararg is None)
    return _reads_in(modify, parameters[2].arg, functions, set())


def _reads_in(function: ast.FunctionDef, cfg: str, functions: Mapping[str, ast.FunctionDef],
              followed: set[tuple[str, str]]) -> CfgReads:
    """The keys `function` reads from its parameter `cfg`, following it into the file's functions."""
    if (function.name, cfg) in followed:  # recursion: already being read
        return CfgReads(frozenset(), True)
    followed.add((function.name, cfg))
    names: set[str] = set()
    complete = True
    understood: set[int] = set()  # ids of the uses of cfg that were accounted for
    for node in ast.walk(function):
        if (read := _named_read(node, cfg)) is not None:
            understood.add(id(read[0]))
            names.add(read[1])
        elif (handed := _handed_to_local_function(node, cfg, functions)) is not None:
            use, callee, parameter = handed
            inner = _reads_in(callee, parameter, functions, followed)
            understood.add(id(use))
            names |= inner.names
            complete = complete and inner.complete
    uses = [n for n in ast.walk(function) if isinstance(n, ast.Name) and n.id == cfg]
    return CfgReads(frozenset(names), complete and all(id(use) in understood for use in uses))


def _handed_to_local_function(node: ast.AST, cfg: str, functions: Mapping[str, ast.FunctionDef]
                              ) -> tuple[ast.Name, ast.FunctionDef, str] | None:
    """(the use of cfg, the function, its parameter) for `helper(..., cfg, ...)` where helper is in the file."""
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in functions):
        return None
    callee = functions[node.func.id]
    parameters = [a.arg for a in (*callee.args.posonlyargs, *callee.args.args)]
    for position, argument in enumerate(node.args):
        if isinstance(argument, ast.Name) and argument.id == cfg and position < len(parameters):
            return argument, callee, parameters[position]
    for keyword in node.keywords:
        if isinstance(keyword.value, ast.Name) and keyword.value.id == cfg and keyword.arg in parameters:
            return keyword.value, callee, keyword.arg
    return None


def _named_read(node: ast.AST, cfg: str) -> tuple[ast.Name, str] | None:
    """(the use of cfg, the key) when `node` reads one key of cfg by a literal name."""
    target: ast.AST | None = None
    key: ast.AST | None = None
    if isinstance(node, ast.Subscript):
        target, key = node.value, node.slice
    elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in _NAMED_READS:
        target, key = node.func.value, node.args[0] if node.args else None
    elif isinstance(node, ast.Compare) and len(node.ops) == 1 and isinstance(node.ops[0], ast.In | ast.NotIn):
        target, key = node.comparators[0], node.left
    if isinstance(target, ast.Name) and target.id == cfg and isinstance(key, ast.Constant) \
            and isinstance(key.value, str):
        return target, key.value
    return None


def plan_runs(modules: Sequence[ResolvedModule]) -> list[list[ResolvedModule]]:
    """Group modules into runs: consecutive Ansible modules share one run."""
    runs: list[list[ResolvedModule]] = []
    for module in modules:
        if module.is_ansible and runs and runs[-1][0].is_ansible:
            runs[-1].append(module)
        else:
            runs.append([module])
    return runs
