"""build.yaml: one declaration per key, used to load, validate, default and document.

`load_config` reads and validates the whole file before anything is
allocated; every problem is reported as `FILE: KEY: what was expected`.
The command-line flags of `hotsauce build` live in `BuildOptions`.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from hotsauce.errors import ConfigError
from hotsauce.image.layout import BootMode, Layout
from hotsauce.output.formats import DiskFormat, Qcow2Compression

DEFAULT_CONFIG_NAME = "build.yaml"


class FsType(StrEnum):
    EXT4 = "ext4"
    XFS = "xfs"
    BTRFS = "btrfs"


class ImageFormat(StrEnum):
    QCOW2 = "qcow2"
    RAW = "raw"


class ModuleKind(StrEnum):
    AUTO = "auto"  # a bare name: a Python module or a role, resolved by search order
    PYTHON = "python"
    ROLE = "role"
    PLAYBOOK = "playbook"


@dataclass(frozen=True)
class ModuleRef:
    """One entry of `modules`, as written; resolution happens in hotsauce.modules.resolve."""

    kind: ModuleKind
    name: str
    vars: Mapping[str, Any] = field(default_factory=dict)
    index: int = 0

    @property
    def label(self) -> str:
        return self.name if self.kind is ModuleKind.AUTO else f"{self.kind}:{self.name}"


@dataclass(frozen=True)
class DownloadBase:
    """A root tarball fetched from file://, http:// or https:// (cached)."""

    url: str
    root_file: str | None = None
    cache_dir: Path | None = None
    sha256: str | None = None


@dataclass(frozen=True)
class DebianBase:
    """A Debian root bootstrapped with mmdebstrap from a mirror (cached)."""

    suite: str = "bookworm"
    mirror: str | None = None  # None: the mirror this host's apt uses
    variant: str = "minbase"
    include: tuple[str, ...] = ()
    bootable: bool = True
    architecture: str = "amd64"


Base = DownloadBase | DebianBase


@dataclass(frozen=True)
class BuildConfig:
    source: Path | None  # the build.yaml read; None for the built-in default
    directory: Path  # relative paths in the file are relative to this
    data: Mapping[str, Any]  # the whole mapping as written: what modules receive as cfg
    modules: tuple[ModuleRef, ...]
    base: Base
    hostname: str
    kernel: bool
    cache_dir: Path | None
    requirements: Path | None

    @property
    def name(self) -> str:
        return str(self.source) if self.source else "the default build.yaml"


@dataclass(frozen=True)
class BuildOptions:
    """The flags of `hotsauce build`."""

    size: int
    output: Path
    compress: bool = False
    fs_type: FsType = FsType.EXT4
    strip: bool = True
    image_format: ImageFormat = ImageFormat.QCOW2
    force: bool = False
    use_cache: bool = True
    cache_dir: Path | None = None
    work_dir: Path | None = None
    boot_checks: tuple[str, ...] | None = None  # None: no boot; () boots and only waits for the target
    # The whole-disk flags; None: build.yaml's key, else the default (see hotsauce.image.whole_disk).
    layout: Layout | None = None
    boot: BootMode | None = None
    formats: tuple[DiskFormat, ...] | None = None
    qcow2_compression: Qcow2Compression | None = None


# --- the key table ---------------------------------------------------------

Where = str  # "FILE: KEY" prefix for messages


def _expect(condition: bool, where: Where, expected: str, value: Any) -> None:
    if not condition:
        raise ConfigError(f"{where}: expected {expected}, got {_describe(value)}")


def _describe(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, str):
        return f"{value!r}"
    return f"a {type(value).__name__} ({value!r})"[:120]


def _string_list(value: Any, where: Where) -> list[str]:
    _expect(isinstance(value, list), where, "a list of strings", value)
    for index, item in enumerate(value):
        _expect(isinstance(item, str) and item != "", f"{where}[{index}]", "a string", item)
    return list(value)


def _check_user_list(value: Any, where: Where) -> Any:
    _expect(isinstance(value, list), where, "a list of user names or mappings", value)
    for index, entry in enumerate(value):
        item_where = f"{where}[{index}]"
        if isinstance(entry, str):
            _expect(_is_user_name(entry), item_where, "a user name", entry)
            continue
        _expect(isinstance(entry, dict), item_where, "a user name or a mapping", entry)
        _expect(_is_user_name(entry.get("name")), f"{item_where}.name", "a user name", entry.get("name"))
        unknown = set(entry) - USER_FIELDS
        _expect(not unknown, item_where, f"only the fields {sorted(USER_FIELDS)}", sorted(unknown))
        if "ssh_authorized_keys" in entry:
            _string_list(entry["ssh_authorized_keys"], f"{item_where}.ssh_authorized_keys")
        if "groups" in entry:
            _string_list(entry["groups"], f"{item_where}.groups")
    return value


USER_FIELDS = {"name", "ssh_authorized_keys", "password_hash", "groups", "shell", "sudo"}
_USER_NAME = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")


def _is_user_name(value: Any) -> bool:
    return isinstance(value, str) and bool(_USER_NAME.match(value))


def _check_hostname(value: Any, where: Where) -> str:
    ok = isinstance(value, str) and re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9-]{0,62}", value)
    _expect(bool(ok), where, "a host name (letters, digits, '-')", value)
    return str(value)


def _check_bool(value: Any, where: Where) -> bool:
    _expect(isinstance(value, bool), where, "true or false", value)
    return bool(value)


def _check_string(value: Any, where: Where) -> str:
    _expect(isinstance(value, str) and value != "", where, "a string", value)
    return str(value)


def _check_mapping(value: Any, where: Where) -> dict[str, Any]:
    _expect(isinstance(value, dict), where, "a mapping", value)
    return dict(value)


@dataclass(frozen=True)
class Key:
    name: str
    check: Callable[[Any, Where], Any]
    help: str


KEYS: tuple[Key, ...] = (
    Key("base", _check_mapping, "where the root comes from: {debian: {...}} or {download: {...}}"),
    Key("download", _check_mapping, "a root tarball: {from: URL, root_file: NAME, cache_dir: DIR, sha256: HEX}"),
    Key("modules", lambda v, w: v, "the ordered list of modules: names, or {role|playbook|python: NAME, vars: {...}}"),
    Key("hostname", _check_hostname, "the image's /etc/hostname (default: hotsauce)"),
    Key("kernel", _check_bool, "false when the image set has no kernel and ramdisk (default: true)"),
    Key("cache_dir", _check_string, "the cache folder (default: $HOTSAUCE_CACHE or ~/.cache/hotsauce)"),
    Key("requirements", _check_string, "ansible-galaxy requirements (default: requirements.yml beside build.yaml)"),
    Key("vars", _check_mapping, "free-form variables for every role and Python module"),
    Key("add_users", _check_user_list,
        "add_user: users to create: names or {name, ssh_authorized_keys, password_hash, groups, shell, sudo}"),
    Key("rpms", _string_list, "install_rpms: rpm files or folders of them"),
    Key("packages", _string_list, "install_packages: packages for the image's package manager"),
    Key("layout", _check_string, "ec2 (default): root image, kernel, ramdisk; disk: one GPT disk booted by firmware"),
    Key("boot", _check_string, "layout disk: the firmware that boots it: bios, uefi or hybrid (default)"),
    Key("format", lambda v, w: v, "image formats: qcow2 (default), raw; for a disk also vmdk, vhdx, vhd (a list)"),
    Key("qcow2_compression", _check_string, "layout disk: none (default), zlib or zstd"),
)
KEYS_BY_NAME = {key.name: key for key in KEYS}


# --- loading ----------------------------------------------------------------


def default_config_text() -> str:
    """The commented build.yaml used when there is none, and written by `hotsauce init`."""
    return resources.files("hotsauce").joinpath("default_build.yaml").read_text()


def read_yaml(path: Path) -> Any:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except OSError as error:
        raise ConfigError(f"{path}: cannot read: {error.strerror}") from None
    return parse_yaml(text, str(path))


def parse_yaml(text: str, name: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{name}:{mark.line + 1}:{mark.column + 1}" if mark else name
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ConfigError(f"{where}: malformed YAML: {problem}") from None


def load_config(path: Path | None) -> BuildConfig:
    """Read and validate a build.yaml; None reads the built-in default.

    Keys outside the table are kept for `check_unknown_keys`, which runs once
    the modules are resolved and can say which variables they read.
    """
    if path is None:
        data = parse_yaml(default_config_text(), "the default build.yaml")
        return config_from_mapping(data, source=None, directory=Path.cwd())
    path = path.absolute()
    data = read_yaml(path)
    return config_from_mapping(data, source=path, directory=path.parent)


def config_from_mapping(data: Any, *, source: Path | None, directory: Path) -> BuildConfig:
    name = str(source) if source else "the default build.yaml"
    if data is None:
        data = {}
    _expect(isinstance(data, dict), name, "a mapping of keys at the top level", data)
    for key, value in data.items():
        _expect(isinstance(key, str), name, "string keys", key)
        if key in KEYS_BY_NAME:
            KEYS_BY_NAME[key].check(value, f"{name}: {key}")
    return BuildConfig(
        source=source,
        directory=directory,
        data=data,
        modules=parse_modules(data.get("modules") or [], f"{name}: modules"),
        base=parse_base(data, name, directory),
        hostname=data.get("hostname", "hotsauce"),
        kernel=data.get("kernel", True),
        cache_dir=_relative_path(directory, data["cache_dir"]) if "cache_dir" in data else None,
        requirements=_requirements_path(data, directory),
    )


def check_unknown_keys(config: BuildConfig, variables_of_modules: frozenset[str]) -> None:
    """Every top-level key is in the table or is a variable a listed module reads."""
    for key in config.data:
        if key not in KEYS_BY_NAME and key not in variables_of_modules:
            raise ConfigError(_unknown_key_message(config.name, key, variables_of_modules))


def _unknown_key_message(name: str, key: str, extra_keys: frozenset[str]) -> str:
    known = sorted(set(KEYS_BY_NAME) | extra_keys)
    close = difflib.get_close_matches(key, known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return (
        f"{name}: {key}: unknown key{hint}; known keys: {', '.join(known)}"
        " (put free-form variables under 'vars')"
    )


def _relative_path(directory: Path, value: str) -> Path:
    return (directory / Path(value).expanduser()).absolute()


def _requirements_path(data: Mapping[str, Any], directory: Path) -> Path | None:
    if "requirements" in data:
        return _relative_path(directory, data["requirements"])
    beside = directory / "requirements.yml"
    return beside if beside.is_file() else None


# --- modules ----------------------------------------------------------------

_EXPLICIT_KINDS = {kind.value: kind for kind in (ModuleKind.PYTHON, ModuleKind.ROLE, ModuleKind.PLAYBOOK)}
# Role names may carry a Galaxy namespace (acme.webserver); none may be a path.
_MODULE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


def parse_modules(value: Any, where: Where) -> tuple[ModuleRef, ...]:
    _expect(isinstance(value, list), where, "a list of module names or mappings", value)
    return tuple(_parse_module(entry, f"{where}[{index}]", index) for index, entry in enumerate(value))


def _parse_module(entry: Any, where: Where, index: int) -> ModuleRef:
    if isinstance(entry, str):
        _check_module_name(entry, where)
        return ModuleRef(ModuleKind.AUTO, entry, {}, index)
    _expect(isinstance(entry, dict), where, "a module name or a mapping", entry)
    kinds = [key for key in entry if key in _EXPLICIT_KINDS]
    _expect(len(kinds) == 1, where, "exactly one of 'role', 'playbook', 'python'", entry)
    unknown = set(entry) - {kinds[0], "vars"}
    _expect(not unknown, where, "only the keys " + repr([kinds[0], "vars"]), sorted(unknown))
    kind = _EXPLICIT_KINDS[kinds[0]]
    name = _check_string(entry[kinds[0]], f"{where}.{kinds[0]}")
    if kind is not ModuleKind.PLAYBOOK:
        _check_module_name(name, f"{where}.{kinds[0]}")
    variables = _check_mapping(entry.get("vars", {}), f"{where}.vars")
    return ModuleRef(kind, name, variables, index)


def _check_module_name(name: str, where: Where) -> None:
    if not _MODULE_NAME.match(name) or ".." in name:
        raise ConfigError(f"{where}: {name!r} is not a module name (a name, not a path)")


# --- bases ------------------------------------------------------------------


def parse_base(data: Mapping[str, Any], name: str, directory: Path) -> Base:
    if "base" in data and "download" in data:
        raise ConfigError(f"{name}: download: give either 'base' or 'download', not both")
    if "download" in data:
        return _parse_download(data["download"], f"{name}: download", directory)
    if "base" not in data:
        return DebianBase()
    base = data["base"]
    where = f"{name}: base"
    _expect(len(base) == 1 and next(iter(base)) in ("debian", "download"), where,
            "exactly one of 'debian' or 'download'", base)
    if "download" in base:
        return _parse_download(base["download"], f"{where}.download", directory)
    return _parse_debian(base["debian"] or {}, f"{where}.debian")


_DOWNLOAD_FIELDS = {"from", "root_file", "cache_dir", "sha256"}


def _parse_download(value: Any, where: Where, directory: Path) -> DownloadBase:
    spec = _check_mapping(value, where)
    unknown = set(spec) - _DOWNLOAD_FIELDS
    _expect(not unknown, where, f"only the fields {sorted(_DOWNLOAD_FIELDS)}", sorted(unknown))
    url = _check_string(spec.get("from"), f"{where}.from")
    if "://" not in url:  # a plain path, relative to the build.yaml
        url = _relative_path(directory, url).as_uri()
    scheme = url.split("://", 1)[0]
    _expect(scheme in ("file", "http", "https"), f"{where}.from", "a file://, http:// or https:// URL", url)
    sha256 = spec.get("sha256")
    if sha256 is not None:
        ok = isinstance(sha256, str) and re.fullmatch(r"[0-9a-fA-F]{64}", sha256)
        _expect(bool(ok), f"{where}.sha256", "64 hexadecimal digits", sha256)
    root_file = spec.get("root_file")
    if root_file is not None:
        _check_string(root_file, f"{where}.root_file")
    cache_dir = spec.get("cache_dir")
    return DownloadBase(
        url=url,
        root_file=root_file,
        cache_dir=_relative_path(directory, _check_string(cache_dir, f"{where}.cache_dir")) if cache_dir else None,
        sha256=sha256.lower() if sha256 else None,
    )


_DEBIAN_FIELDS = {"suite", "mirror", "variant", "include", "bootable", "architecture"}
_VARIANTS = ("extract", "custom", "essential", "apt", "required", "minbase", "buildd", "important",
             "debootstrap", "standard")


def _parse_debian(value: Any, where: Where) -> DebianBase:
    spec = _check_mapping(value, where)
    unknown = set(spec) - _DEBIAN_FIELDS
    _expect(not unknown, where, f"only the fields {sorted(_DEBIAN_FIELDS)}", sorted(unknown))
    variant = spec.get("variant", "minbase")
    _expect(variant in _VARIANTS, f"{where}.variant", f"one of {', '.join(_VARIANTS)}", variant)
    mirror = spec.get("mirror")
    if mirror is not None:
        _expect(isinstance(mirror, str) and "://" in mirror, f"{where}.mirror", "a URL", mirror)
    return DebianBase(
        suite=_check_string(spec.get("suite", "bookworm"), f"{where}.suite"),
        mirror=mirror,
        variant=variant,
        include=tuple(_string_list(spec.get("include", []), f"{where}.include")),
        bootable=_check_bool(spec.get("bootable", True), f"{where}.bootable"),
        architecture=_check_string(spec.get("architecture", "amd64"), f"{where}.architecture"),
    )
