"""build.yaml: every key declared once, with its type, default and help.

The declarations (`BUILD_YAML`, a tree of `Key`s) are the one source for
loading and validating a build.yaml, for the defaults, for the commented
build.yaml that `hotsauce init` writes, for the README's table of keys and
for the JSON Schema that `hotsauce schema` prints. Adding a key is adding one
`Key`; code reads it with `BuildConfig.value("name")`.

`load_config` reads and validates the whole file before anything is
allocated; every problem is one line, `FILE: KEY: what was expected`. The
command-line flags of `hotsauce build` live in `BuildOptions`.
"""

from __future__ import annotations

import copy
import difflib
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml

from hotsauce.errors import ConfigError
from hotsauce.image.layout import BootMode, Layout
from hotsauce.output.formats import DiskFormat, Qcow2Compression

DEFAULT_CONFIG_NAME = "build.yaml"
SCHEMA_FILE_NAME = "build.schema.json"
JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


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


class DebianVariant(StrEnum):
    """The variants as mmdebstrap names them."""

    EXTRACT = "extract"
    CUSTOM = "custom"
    ESSENTIAL = "essential"
    APT = "apt"
    REQUIRED = "required"
    MINBASE = "minbase"
    BUILDD = "buildd"
    IMPORTANT = "important"
    DEBOOTSTRAP = "debootstrap"
    STANDARD = "standard"


class Architecture(StrEnum):
    """What the pipeline builds: the bootable package set and QEMU boot are amd64's."""

    AMD64 = "amd64"


class KeyType(StrEnum):
    """The types a Python module may declare its own keys with (`CONFIG_KEYS`)."""

    STRING = "string"
    BOOLEAN = "boolean"
    INTEGER = "integer"
    NUMBER = "number"
    LIST = "list"
    MAPPING = "mapping"
    ANY = "any"


class _Nothing:
    """No value: a key without a default, or one `hotsauce init` leaves commented out."""

    def __repr__(self) -> str:
        return "NOTHING"


NOTHING: Any = _Nothing()


# --- value types --------------------------------------------------------------
# Each type checks a value (raising one line that names the file and the key),
# says in words what it expects, and gives its JSON Schema: validation and
# schema cannot disagree because they are written side by side.


def _describe(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, str):
        return f"{value!r}"
    return f"a {type(value).__name__} ({value!r})"[:120]


def _fail(source: str, path: str, expected: str, value: Any) -> ConfigError:
    where = f"{source}: {path}" if path else source
    return ConfigError(f"{where}: expected {expected}, got {_describe(value)}")


def _child(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


@dataclass(frozen=True)
class ValueType:
    """What a key holds. `nullable`: an empty value (`key:` alone) reads as the default."""

    expected: str
    nullable: bool = False

    json_type = "any"  # the JSON type a value of this kind has; Either dispatches on it

    def check(self, value: Any, source: str, path: str) -> None:
        if value is None and self.nullable:
            return
        self.check_value(value, source, path)

    def check_value(self, value: Any, source: str, path: str) -> None:
        raise NotImplementedError

    def schema(self) -> dict[str, Any]:
        own = self.own_schema()
        if self.nullable and "type" in own:
            own["type"] = [own["type"], "null"]
        return own

    def own_schema(self) -> dict[str, Any]:
        raise NotImplementedError


@dataclass(frozen=True)
class Anything(ValueType):
    expected: str = "any value"

    def check_value(self, value: Any, source: str, path: str) -> None:
        return

    def own_schema(self) -> dict[str, Any]:
        return {}


@dataclass(frozen=True)
class Text(ValueType):
    """A non-empty string; `pattern` is both Python's and JSON Schema's (ECMA 262) regex."""

    expected: str = "a string"
    pattern: str | None = None

    json_type = "string"

    def check_value(self, value: Any, source: str, path: str) -> None:
        ok = isinstance(value, str) and value != ""
        if ok and self.pattern is not None:
            ok = re.fullmatch(self.pattern, value) is not None
        if not ok:
            raise _fail(source, path, self.expected, value)

    def own_schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": "string", "minLength": 1}
        if self.pattern is not None:
            schema["pattern"] = self.pattern
        return schema


@dataclass(frozen=True)
class Flag(ValueType):
    expected: str = "true or false"

    json_type = "boolean"

    def check_value(self, value: Any, source: str, path: str) -> None:
        if not isinstance(value, bool):
            raise _fail(source, path, self.expected, value)

    def own_schema(self) -> dict[str, Any]:
        return {"type": "boolean"}


@dataclass(frozen=True)
class Number(ValueType):
    expected: str = "a number"
    integer: bool = False

    json_type = "number"

    def check_value(self, value: Any, source: str, path: str) -> None:
        kinds: tuple[type, ...] = (int,) if self.integer else (int, float)
        if isinstance(value, bool) or not isinstance(value, kinds):
            raise _fail(source, path, self.expected, value)

    def own_schema(self) -> dict[str, Any]:
        return {"type": "integer" if self.integer else "number"}


@dataclass(frozen=True)
class Choice(ValueType):
    """One of an enumeration's values."""

    values: tuple[str, ...] = ()

    json_type = "string"

    @classmethod
    def of(cls, enum: type[StrEnum], expected: str | None = None) -> Choice:
        values = tuple(member.value for member in enum)
        return cls(expected or f"one of {', '.join(values)}", values=values)

    def check_value(self, value: Any, source: str, path: str) -> None:
        if value not in self.values:
            raise _fail(source, path, self.expected, value)

    def own_schema(self) -> dict[str, Any]:
        return {"enum": list(self.values)}


@dataclass(frozen=True)
class ListOf(ValueType):
    item: ValueType = field(default_factory=Anything)

    json_type = "array"

    def check_value(self, value: Any, source: str, path: str) -> None:
        if not isinstance(value, list):
            raise _fail(source, path, self.expected, value)
        for index, entry in enumerate(value):
            self.item.check(entry, source, f"{path}[{index}]")

    def own_schema(self) -> dict[str, Any]:
        return {"type": "array", "items": self.item.schema()}


@dataclass(frozen=True)
class FreeMapping(ValueType):
    """A mapping of any string keys to any values (`vars`)."""

    expected: str = "a mapping"

    json_type = "object"

    def check_value(self, value: Any, source: str, path: str) -> None:
        if not isinstance(value, dict) or not all(isinstance(key, str) for key in value):
            raise _fail(source, path, self.expected + " with string keys", value)

    def own_schema(self) -> dict[str, Any]:
        return {"type": "object"}


@dataclass(frozen=True)
class Section(ValueType):
    """A mapping whose keys are declared; `open` allows others (checked elsewhere)."""

    expected: str = "a mapping"
    keys: tuple[Key, ...] = ()
    open: bool = False
    exactly_one_of: tuple[str, ...] = ()
    not_together: tuple[str, ...] = ()

    json_type = "object"

    def key(self, name: str) -> Key | None:
        return next((key for key in self.keys if key.name == name), None)

    def check_value(self, value: Any, source: str, path: str) -> None:
        if not isinstance(value, dict):
            raise _fail(source, path, self.expected, value)
        for name in value:
            if not isinstance(name, str):
                raise _fail(source, path, "string keys", name)
            if self.key(name) is None and not self.open:
                raise ConfigError(unknown_key_message(source, _child(path, name), [k.name for k in self.keys]))
        self._check_combinations(value, source, path)
        for key in self.keys:
            if key.name in value:
                key.type.check(value[key.name], source, _child(path, key.name))
            elif key.required:
                raise _fail(source, _child(path, key.name), key.type.expected, None)

    def _check_combinations(self, value: dict[str, Any], source: str, path: str) -> None:
        if self.exactly_one_of and sum(name in value for name in self.exactly_one_of) != 1:
            choices = ", ".join(repr(name) for name in self.exactly_one_of)
            raise _fail(source, path, f"exactly one of {choices}", value)
        if self.not_together and all(name in value for name in self.not_together):
            names = " or ".join(repr(name) for name in self.not_together)
            raise ConfigError(f"{source}: {_child(path, self.not_together[-1])}: give either {names}, not both")

    def own_schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = {
            "type": "object",
            "properties": {key.name: key.schema() for key in self.keys},
            "additionalProperties": self.open,
        }
        if required := [key.name for key in self.keys if key.required]:
            schema["required"] = required
        if self.exactly_one_of:
            schema["oneOf"] = [{"required": [name]} for name in self.exactly_one_of]
        if self.not_together:
            schema["not"] = {"type": "object", "required": list(self.not_together)}
        return schema


@dataclass(frozen=True)
class Either(ValueType):
    """One of several types told apart by their JSON type (a name, or a mapping)."""

    choices: tuple[ValueType, ...] = ()

    def check_value(self, value: Any, source: str, path: str) -> None:
        for choice in self.choices:
            if _has_json_type(value, choice.json_type):
                choice.check(value, source, path)
                return
        raise _fail(source, path, self.expected, value)

    def own_schema(self) -> dict[str, Any]:
        return {"anyOf": [choice.schema() for choice in self.choices]}


def _has_json_type(value: Any, json_type: str) -> bool:
    if json_type == "string":
        return isinstance(value, str)
    if json_type == "object":
        return isinstance(value, dict)
    if json_type == "array":
        return isinstance(value, list)
    if json_type == "boolean":
        return isinstance(value, bool)
    if json_type == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    return True


@dataclass(frozen=True)
class Key:
    """One build.yaml key: its name within its mapping, type, default and help.

    `default` is what the key means when absent (NOTHING: no value, or one
    found at run time that `default_text` describes). `init` is what `hotsauce
    init` writes for it; keys without one are written commented out, showing
    `example` (or the default).
    """

    name: str
    type: ValueType
    help: str
    default: Any = NOTHING
    default_text: str | None = None
    required: bool = False
    init: Any = NOTHING
    example: Any = NOTHING

    def schema(self) -> dict[str, Any]:
        schema = {"description": self.help, **self.type.schema()}
        if self.default is not NOTHING:
            schema["default"] = self.default
        return schema

    def describe_default(self) -> str:
        if self.default_text is not None:
            return self.default_text
        if self.default is NOTHING:
            return "required" if self.required else ""
        return _flow(self.default)


# --- the table ------------------------------------------------------------------

# Role names may carry a Galaxy namespace (acme.webserver); none may be a path.
MODULE_NAME = Text("a module name (a name, not a path)", pattern=r"^(?!.*\.\.)[A-Za-z0-9_][A-Za-z0-9_.-]*$")
USER_NAME = Text("a user name", pattern=r"^[a-z_][a-z0-9_-]{0,31}$")
STRINGS = ListOf("a list of strings", item=Text())

DOWNLOAD = Section("a mapping", keys=(
    Key("from", Text("a path, or a file://, http:// or https:// URL",
                     pattern=r"^((file|https?)://.+|(?![A-Za-z][A-Za-z0-9+.-]*://).+)$"),
        "the root tarball: a file://, http:// or https:// URL, or a path", required=True,
        example="http://example.invalid/roots/root.tar.gz"),
    Key("root_file", Text(), "the root archive inside the download, when the download wraps it",
        example="root.tar"),
    Key("cache_dir", Text(), "where downloads are kept", default_text="the cache folder's downloads",
        example="downloads"),
    Key("sha256", Text("64 hexadecimal digits", pattern=r"^[0-9a-fA-F]{64}$"),
        "refuse a download with any other SHA-256", example="0" * 64),
))

DEBIAN = Section("a mapping", nullable=True, keys=(
    Key("suite", Text(), "the Debian suite", default="bookworm", init="bookworm"),
    Key("mirror", Text("a URL", pattern=r"^[A-Za-z][A-Za-z0-9+.-]*://.+$"),
        "the mirror, used alone",
        default_text="the mirror this host's apt uses, with its updates and security suites",
        example="http://mirror.example.invalid/debian"),
    Key("variant", Choice.of(DebianVariant), "the package set, as mmdebstrap names it",
        default=DebianVariant.MINBASE.value, init=DebianVariant.MINBASE.value),
    Key("include", STRINGS, "more packages in the base", default=[], init=[]),
    Key("bootable", Flag(), "add a kernel, initramfs, systemd, udev, login, DHCP networking, sudo and python3",
        default=True, init=True),
    Key("architecture", Choice.of(Architecture, "amd64 (the only architecture hotsauce builds)"),
        "the Debian architecture", default=Architecture.AMD64.value),
))

USER = Section("a mapping", keys=(
    Key("name", USER_NAME, "the user's name", required=True),
    Key("ssh_authorized_keys", STRINGS, "lines for ~/.ssh/authorized_keys"),
    Key("password_hash", Text(), "a crypt(3) hash for /etc/shadow (default: no password)"),
    Key("groups", STRINGS, "more groups to join"),
    Key("shell", Text(), "the login shell"),
    Key("sudo", Flag(), "passwordless sudo", default=True),
))

MODULE = Section("a mapping", keys=(
    Key("role", MODULE_NAME, "an Ansible role, by name"),
    Key("playbook", Text(), "an Ansible playbook, by path relative to the build.yaml"),
    Key("python", MODULE_NAME, "a Python module, by name"),
    Key("vars", FreeMapping(), "variables for this module only", default={}),
), exactly_one_of=("role", "playbook", "python"))

SBOM = Section("a mapping", keys=(
    Key("enabled", Flag(), "write sbom.spdx.json into the set", default=True),
    Key("in_image", Flag(), "copy it into the image too, as /usr/share/os-manifests/sbom.spdx.json", default=True),
))

_FORMAT_NAMES = "|".join(member.value for member in DiskFormat)
_FORMATS_PATTERN = f"^({_FORMAT_NAMES})(,({_FORMAT_NAMES}))*$"
_FORMATS_EXPECTED = "formats of " + ", ".join(member.value for member in DiskFormat) + ", comma-separated"

BUILD_YAML = Section("a mapping of keys at the top level", nullable=True, open=True, not_together=("base", "download"),
                     keys=(
    Key("base", Section("a mapping", exactly_one_of=("debian", "download"), keys=(
        Key("debian", DEBIAN, "a Debian root bootstrapped with mmdebstrap from a mirror (cached)"),
        Key("download", DOWNLOAD, "a root tarball (cached when fetched over http or https)"),
    )), "where the root comes from", default_text="base.debian with its defaults"),
    Key("download", DOWNLOAD, "the original tool's form of base.download"),
    Key("modules", ListOf("a list of module names or mappings", nullable=True, item=Either(
        "a module name or a mapping", choices=(MODULE_NAME, MODULE))),
        "the modules, in order: names, or {role|playbook|python: NAME, vars: {...}}",
        default=[], init=["add_user", "build_info"]),
    Key("hostname", Text("a host name (letters, digits, '-')", pattern=r"^[A-Za-z0-9][A-Za-z0-9-]{0,62}$"),
        "the image's /etc/hostname", default="hotsauce", init="hotsauce"),
    Key("kernel", Flag(), "false when the image set has no kernel and ramdisk", default=True),
    Key("cache_dir", Text(), "the cache folder", default_text="$HOTSAUCE_CACHE or ~/.cache/hotsauce",
        example="cache"),
    Key("requirements", Text(), "ansible-galaxy requirements: roles and collections to install",
        default_text="requirements.yml beside the build.yaml, if any", example="requirements.yml"),
    Key("vars", FreeMapping(), "free-form variables for every role and Python module", default={},
        example={"motd_text": "hello"}),
    Key("add_users", ListOf("a list of user names or mappings", item=Either(
        "a user name or a mapping", choices=(USER_NAME, USER))),
        "add_user: users to create, each a name or a mapping", default=[], init=[{"name": "hotsauce"}]),
    Key("rpms", STRINGS, "install_rpms: rpm files, or folders of them", default=[], example=["rpms/"]),
    Key("packages", STRINGS, "install_packages: packages for the image's package manager", default=[],
        example=["curl"]),
    Key("layout", Choice.of(Layout), "ec2: a root image, kernel and ramdisk; disk: one GPT disk that BIOS and "
        "UEFI firmware boot through GRUB (--layout)", default=Layout.EC2.value),
    Key("boot", Choice.of(BootMode), "layout disk: the firmware that boots the disk (--boot)",
        default=BootMode.HYBRID.value),
    Key("format", Either(f"{_FORMATS_EXPECTED} or a list of them", choices=(
        Text(_FORMATS_EXPECTED, pattern=_FORMATS_PATTERN),
        ListOf(f"a list of {_FORMATS_EXPECTED}", item=Choice.of(DiskFormat)))),
        "the image's formats (--format): qcow2 or raw; a disk also vmdk, vhdx, vhd, one file each",
        default=DiskFormat.QCOW2.value, example=["qcow2", "vmdk"]),
    Key("qcow2_compression", Choice.of(Qcow2Compression), "layout disk: how the qcow2 file is compressed "
        "(--qcow2-compression)", default=Qcow2Compression.NONE.value),
    Key("sbom", SBOM, "the set's software bill of materials, sbom.spdx.json (see \"What is in an image\")",
        default_text="written, and copied into the image"),
    Key("reproducible", Flag(), "true: byte-identical ext4 root images (the ext4 made again from the finished "
        "tree, qemu-img writing in order), a few seconds slower (--reproducible)", default=False),
))


def _default(section: Section, name: str, convert: Callable[[Any], Any] = copy.deepcopy) -> Any:
    """A key's declared default, as the dataclasses below hold it."""
    key = section.key(name)
    if key is None or key.default is NOTHING:
        raise LookupError(f"{name} has no declared default")
    return convert(key.default)


def find_key(path: str) -> Key:
    """The declaration of a dotted build.yaml path (`base.debian.suite`)."""
    *parents, last = path.split(".")
    section: Section = BUILD_YAML
    for name in parents:
        parent = section.key(name)
        if parent is None or not isinstance(parent.type, Section):
            raise LookupError(f"no key {path!r} in build.yaml's table")
        section = parent.type
    key = section.key(last)
    if key is None:
        raise LookupError(f"no key {path!r} in build.yaml's table")
    return key


def value_at(data: Mapping[str, Any], path: str) -> Any:
    """The value at a dotted path as written, or its declared default."""
    here: Any = data
    for name in path.split("."):
        here = here.get(name) if isinstance(here, dict) else None
    if here is None:
        default = find_key(path).default
        return None if default is NOTHING else copy.deepcopy(default)
    return here


# --- what the rest of hotsauce reads --------------------------------------------


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
    """A Debian root bootstrapped with mmdebstrap from a mirror (cached). Defaults: the table's
    (read once, at import; each is immutable, so sharing it between instances is safe)."""

    suite: str = _default(DEBIAN, "suite")
    mirror: str | None = None  # None: the mirror this host's apt uses
    variant: DebianVariant = _default(DEBIAN, "variant", DebianVariant)  # noqa: RUF009
    include: tuple[str, ...] = _default(DEBIAN, "include", tuple)
    bootable: bool = _default(DEBIAN, "bootable")
    architecture: Architecture = _default(DEBIAN, "architecture", Architecture)  # noqa: RUF009


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

    def value(self, path: str) -> Any:
        """A declared key's value (dotted path), its default when the file leaves it out."""
        return value_at(self.data, path)


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
    # A shell in the image root for a person (hotsauce.modules.debug_shell): when a module fails,
    # and just before the named module runs.
    shell_on_failure: bool = False
    shell_before: str | None = None
    # True: the slower steps that make the root image byte-identical; None: build.yaml's key.
    reproducible: bool | None = None


# --- loading --------------------------------------------------------------------


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

    Top-level keys outside the table are kept for `check_unknown_keys`, which
    runs once the modules are resolved and can say which keys they read.
    """
    if path is None:
        data = parse_yaml(default_config_text(), "the default build.yaml")
        return config_from_mapping(data, source=None, directory=Path.cwd())
    path = path.absolute()
    data = read_yaml(path)
    return config_from_mapping(data, source=path, directory=path.parent)


def config_from_mapping(data: Any, *, source: Path | None, directory: Path) -> BuildConfig:
    name = str(source) if source else "the default build.yaml"
    BUILD_YAML.check(data, name, "")
    data = data or {}
    cache_dir = value_at(data, "cache_dir")
    return BuildConfig(
        source=source,
        directory=directory,
        data=data,
        modules=_module_refs(value_at(data, "modules")),
        base=_base(data, directory),
        hostname=value_at(data, "hostname"),
        kernel=value_at(data, "kernel"),
        cache_dir=_relative_path(directory, cache_dir) if cache_dir is not None else None,
        requirements=_requirements_path(data, directory),
    )


def _relative_path(directory: Path, value: str) -> Path:
    return (directory / Path(value).expanduser()).absolute()


def _requirements_path(data: Mapping[str, Any], directory: Path) -> Path | None:
    if "requirements" in data:
        return _relative_path(directory, data["requirements"])
    beside = directory / "requirements.yml"
    return beside if beside.is_file() else None


def _module_refs(entries: Sequence[Any]) -> tuple[ModuleRef, ...]:
    """The validated `modules` list as ModuleRefs."""
    refs = []
    for index, entry in enumerate(entries):
        if isinstance(entry, str):
            refs.append(ModuleRef(ModuleKind.AUTO, entry, {}, index))
            continue
        kind = next(ModuleKind(name) for name in MODULE.exactly_one_of if name in entry)
        refs.append(ModuleRef(kind, entry[kind.value], dict(entry.get("vars") or {}), index))
    return tuple(refs)


def _base(data: Mapping[str, Any], directory: Path) -> Base:
    if "download" in data:
        return _download_base(data["download"], directory)
    base = data.get("base") or {}
    if "download" in base:
        return _download_base(base["download"], directory)
    spec = base.get("debian") or {}
    return DebianBase(
        suite=spec.get("suite", DebianBase.suite),
        mirror=spec.get("mirror"),
        variant=DebianVariant(spec.get("variant", DebianBase.variant)),
        include=tuple(spec.get("include", DebianBase.include)),
        bootable=spec.get("bootable", DebianBase.bootable),
        architecture=Architecture(spec.get("architecture", DebianBase.architecture)),
    )


def _download_base(spec: Mapping[str, Any], directory: Path) -> DownloadBase:
    url = spec["from"]
    if "://" not in url:  # a plain path, relative to the build.yaml
        url = _relative_path(directory, url).as_uri()
    cache_dir = spec.get("cache_dir")
    sha256 = spec.get("sha256")
    return DownloadBase(
        url=url,
        root_file=spec.get("root_file"),
        cache_dir=_relative_path(directory, cache_dir) if cache_dir else None,
        sha256=sha256.lower() if sha256 else None,
    )


# --- keys that modules declare and read ---------------------------------------

# How a Python module's CONFIG_KEYS types are checked.
MODULE_KEY_TYPES: dict[KeyType, ValueType] = {
    KeyType.STRING: Text(),
    KeyType.BOOLEAN: Flag(),
    KeyType.INTEGER: Number("an integer", integer=True),
    KeyType.NUMBER: Number(),
    KeyType.LIST: ListOf("a list"),
    KeyType.MAPPING: FreeMapping(),
    KeyType.ANY: Anything(),
}


def module_key(name: str, declaration: Any, where: str) -> Key:
    """One entry of a Python module's CONFIG_KEYS: NAME: {type: T, default: V, help: TEXT}."""
    if not isinstance(declaration, dict) or not isinstance(declaration.get("help"), str):
        raise ConfigError(f"{where}: CONFIG_KEYS[{name!r}]: expected {{'type': ..., 'default': ..., 'help': ...}}"
                          f" with a help text, got {_describe(declaration)}")
    unknown = set(declaration) - {"type", "default", "help"}
    if unknown:
        raise ConfigError(f"{where}: CONFIG_KEYS[{name!r}]: unknown fields {sorted(unknown)}; "
                          "expected type, default, help")
    try:
        key_type = KeyType(declaration.get("type", KeyType.ANY))
    except ValueError:
        raise ConfigError(f"{where}: CONFIG_KEYS[{name!r}].type: expected one of "
                          f"{', '.join(KeyType)}, got {_describe(declaration.get('type'))}") from None
    key = Key(name, MODULE_KEY_TYPES[key_type], declaration["help"], default=declaration.get("default", NOTHING))
    if key.default is not NOTHING and key.default is not None:
        key.type.check(key.default, where, f"CONFIG_KEYS[{name!r}].default")
    return key


@dataclass(frozen=True)
class ModuleKeys:
    """What the listed modules say about top-level keys.

    `declared`: keys with a type (a Python module's CONFIG_KEYS), by module.
    `read`: names read or declared without a type (role defaults, argument
    specs, a Python module's literal `cfg["x"]` and `cfg.get("x")`).
    `unreadable`: modules that read `cfg` in ways their source cannot tell
    (`cfg[name]`, `cfg.items()`, cfg passed on), so any key may be theirs.
    """

    declared: tuple[tuple[str, Key], ...] = ()
    read: frozenset[str] = frozenset()
    unreadable: tuple[str, ...] = ()

    def names(self) -> frozenset[str]:
        return self.read | {key.name for _, key in self.declared}


def check_unknown_keys(config: BuildConfig, modules: ModuleKeys) -> list[str]:
    """Every top-level key is in the table or is a key a listed module reads.

    Keys a module declares with a type are checked against it. An unknown
    key is an error, unless a listed module reads cfg in ways its source
    cannot tell: then it is a warning, returned for the caller to emit.
    """
    for owner, key in modules.declared:
        if key.name in config.data and BUILD_YAML.key(key.name) is None:
            key.type.check(config.data[key.name], config.name, f"{key.name} (declared by {owner})")
    known = {key.name for key in BUILD_YAML.keys} | modules.names()
    warnings = []
    for name in config.data:
        if name in known:
            continue
        message = unknown_key_message(config.name, name, sorted(known))
        if not modules.unreadable:
            raise ConfigError(message)
        readers = ", ".join(repr(module) for module in modules.unreadable)
        warnings.append(f"{message}; kept, as {readers} may read it")
    return warnings


def unknown_key_message(source: str, path: str, known: Sequence[str]) -> str:
    name = path.rsplit(".", 1)[-1]
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    top_level = "." not in path
    tail = " (put free-form variables under 'vars')" if top_level else ""
    return f"{source}: {path}: unknown key{hint}; known keys: {', '.join(sorted(known))}{tail}"


# --- what the table documents -------------------------------------------------


def json_schema() -> dict[str, Any]:
    """build.yaml's JSON Schema, for editors (yaml-language-server) and checkers."""
    return {
        "$schema": JSON_SCHEMA_DIALECT,
        "title": "hotsauce build.yaml",
        "description": "A base and an ordered list of modules; other top-level keys are variables that the "
        "listed modules read.",
        **BUILD_YAML.schema(),
    }


def walk_keys(section: Section | None = None, path: str = "") -> Iterator[tuple[str, Key]]:
    """Every declared key with its dotted path, depth first; a section met again is not repeated."""
    yield from _walk(section or BUILD_YAML, path, set())


def _walk(section: Section, path: str, seen: set[int]) -> Iterator[tuple[str, Key]]:
    seen.add(id(section))
    for key in section.keys:
        key_path = _child(path, key.name)
        yield key_path, key
        inner = _section_in(key.type)
        if inner is not None and id(inner) not in seen:
            suffix = "[]" if isinstance(key.type, ListOf) else ""
            yield from _walk(inner, key_path + suffix, seen)


def _section_in(value_type: ValueType) -> Section | None:
    """The declared mapping a key holds: itself, in a list, or as one of its choices."""
    if isinstance(value_type, Section):
        return value_type
    if isinstance(value_type, ListOf):
        return _section_in(value_type.item)
    if isinstance(value_type, Either):
        return next((c for c in value_type.choices if isinstance(c, Section)), None)
    return None


def keys_table_markdown() -> str:
    """The README's table of build.yaml keys."""
    rows = ["| key | type | default | what |", "|---|---|---|---|"]
    for path, key in walk_keys():
        cells = (f"`{path}`", key.type.expected, _markdown_default(key), key.help)
        rows.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(rows) + "\n"


def _markdown_default(key: Key) -> str:
    text = key.describe_default()
    if key.default_text is None and text not in ("", "required"):
        return f"`{text}`"
    return text


# --- the default build.yaml -------------------------------------------------------

_INIT_HEADER = f"""\
# yaml-language-server: $schema={SCHEMA_FILE_NAME}
# hotsauce build.yaml: the default image, a starting point to edit.
# `hotsauce build -s 2G -o default.tar.gz -x` builds it. Every key is listed;
# one commented out keeps its default. Editors check this file against
# {SCHEMA_FILE_NAME}, which `hotsauce init` writes beside it (or run
# `hotsauce schema > {SCHEMA_FILE_NAME}`). Top-level keys not listed here are
# variables that a listed module reads.
"""


def default_config_text() -> str:
    """The commented build.yaml used when there is none, and written by `hotsauce init`."""
    lines = _INIT_HEADER.splitlines()
    seen = {id(BUILD_YAML)}
    for key in BUILD_YAML.keys:
        lines.append("")
        lines += _render_key(key, "", seen)
    return "\n".join(lines) + "\n"


def _is_written(key: Key) -> bool:
    """Whether init writes the key (not commented out): it has an init value, or a part that has."""
    if key.init is not NOTHING:
        return True
    return isinstance(key.type, Section) and any(_is_written(child) for child in key.type.keys)


def _render_key(key: Key, indent: str, seen: set[int]) -> list[str]:
    """A key with its help above it; a section key with its keys below it."""
    default = key.describe_default()
    note = f" (default: {default})" if default and default != "required" else ""
    lines = [f"{indent}# {key.help}{note}."]
    inner = key.type if isinstance(key.type, Section) else None
    if inner is not None and id(inner) in seen:  # already shown in full: once is enough
        required = {child.name: _shown_value(child) for child in inner.keys if child.required}
        return [f"{indent}# {key.help}, with the same keys.", f"{indent}# {key.name}: {_flow(required)}"]
    if inner is not None:
        seen.add(id(inner))
    if not _is_written(key):
        return lines + [f"{indent}# {line}" for line in _commented_lines(key)]
    if inner is not None and key.init is NOTHING:
        lines.append(f"{indent}{key.name}:")
        for child in inner.keys:
            lines += _render_key(child, indent + "  ", seen)
        return lines
    return [*lines, f"{indent}{key.name}: {_flow(_shown_value(key))}"]


def _commented_lines(key: Key, indent: str = "") -> list[str]:
    """A key init leaves out, as it would be written: a section's keys each with their help beside."""
    if not isinstance(key.type, Section):
        return [f"{indent}{key.name}: {_flow(_shown_value(key))}"]
    lines = [f"{indent}{key.name}:"]
    for child in key.type.keys:
        lines += [f"{line}    # {child.help}" for line in _commented_lines(child, indent + "  ")]
    return lines


def _shown_value(key: Key) -> Any:
    """What init shows for a key: its init value, else an example, else its default."""
    return next((value for value in (key.init, key.example, key.default) if value is not NOTHING), None)


def _flow(value: Any) -> str:
    """A value as YAML on one line."""
    text = yaml.safe_dump(value, default_flow_style=True, width=1000)
    return text.removesuffix("\n").removesuffix("\n...").strip()
