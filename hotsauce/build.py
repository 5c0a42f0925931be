"""The build pipeline: config, then disk, then base, then modules, then output.

`build()` is the library entry point; the CLI is a thin layer over it. Each
resource is entered in a `with` block, so on success, on error, on Ctrl-C
and on SIGTERM everything is released in the reverse order it was taken.
"""

from __future__ import annotations

import secrets
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hotsauce import __version__
from hotsauce.bases import download
from hotsauce.bases.debian import PlannedBase, plan_base, provide_debian_base
from hotsauce.boot.boot_set import boot_image_set
from hotsauce.config import BuildConfig, BuildOptions, DebianBase, DownloadBase, check_unknown_keys
from hotsauce.events import Emit, Event, StageTimes, ignore, stage
from hotsauce.host import ledger
from hotsauce.host.signals import interruptible
from hotsauce.image import archive, disk
from hotsauce.image.identity import scrub_image, set_identity
from hotsauce.modules.ansible_run import run_ansible_modules
from hotsauce.modules.chroot import build_chroot
from hotsauce.modules.galaxy import install_requirements
from hotsauce.modules.python_run import run_python_module
from hotsauce.modules.resolve import (
    ResolvedModule,
    module_search,
    plan_runs,
    resolve_all,
    variables_read_by,
)
from hotsauce.modules.result_cache import ModuleLayers, file_digest, layers_for
from hotsauce.output import publish as output
from hotsauce.output.boot_files import copy_boot_files, find_boot_files, read_os_release
from hotsauce.output.imageset import ROOT_LABEL, Manifest, root_image_name
from hotsauce.rootpath import inside
from hotsauce.store.cache import Cache, default_cache_dir
from hotsauce.store.logs import build_log

KERNEL_CMDLINE = f"root=LABEL={ROOT_LABEL} ro console=tty0 console=ttyS0,115200n8"


@dataclass(frozen=True)
class BuildResult:
    output: Path
    build_id: str
    manifest: Manifest
    times: StageTimes


@dataclass(frozen=True)
class Plan:
    """Everything checked and resolved before a byte is allocated."""

    modules: tuple[ResolvedModule, ...]
    roles_path: tuple[Path, ...]
    collections_path: tuple[Path, ...]


def new_build_id() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(3)


def build(config: BuildConfig, options: BuildOptions, emit: Emit = ignore) -> BuildResult:
    """Build the image set that `config` describes and write it to `options.output`."""
    cache = Cache(options.cache_dir or config.cache_dir or default_cache_dir(), enabled=options.use_cache)
    build_id = new_build_id()
    times = StageTimes()
    with (
        interruptible(),
        ledger.recording(),
        build_log(cache, build_id, emit) as (log_dir, emit),
        _work_folder(options) as work,
    ):
        emit(Event("info", "config", f"build {build_id}; log: {log_dir / 'build.log'}", {"log_dir": str(log_dir)}))
        with stage(emit, "config", times):
            warn_about_leftovers(emit)
            output.check_output_path(options.output, force=options.force)
            plan = make_plan(config, cache, emit, scratch=work)
        fetched = _fetch_base(config, options, cache, work, emit, times)
        with output.staging_folder(options.output) as staging:
            manifest = _build_into(config, options, plan, fetched, cache, log_dir, work, staging, build_id,
                                   emit, times)
            if options.boot_checks is not None:
                with stage(emit, "boot-check", times):
                    _boot_check(staging, options.boot_checks, log_dir / "boot", emit)
            with stage(emit, "publish", times):
                output.publish(staging, options.output, compress=options.compress, force=options.force, emit=emit)
        emit(Event("finished", "publish", str(options.output), {"seconds": times.seconds}))
    return BuildResult(options.output.absolute(), build_id, manifest, times)


def _boot_check(staging: Path, checks: Sequence[str], log_dir: Path, emit: Emit) -> None:
    """Boot the finished set before it is published: a set that does not boot is no output.
    The serial log stays with the build's log."""
    boot_image_set(staging, checks=checks, log_dir=log_dir, emit=emit).raise_for_failure()


def make_plan(config: BuildConfig, cache: Cache, emit: Emit, scratch: Path | None = None) -> Plan:
    roles_dirs: list[Path] = []
    collections_dirs: list[Path] = []
    if config.requirements is not None:
        roles_dirs, collections_dirs = install_requirements(config.requirements, cache, emit, scratch=scratch)
    search = module_search(config, roles_dirs, collections_dirs)
    modules = resolve_all(config, search)
    check_unknown_keys(config, variables_read_by(modules))
    return Plan(tuple(modules), search.roles_path, tuple(collections_dirs))


def warn_about_leftovers(emit: Emit) -> None:
    for leftover in ledger.find_leftovers():
        emit(Event("warning", "config", f"build {leftover.pid} ended without releasing "
                   f"{len(leftover.holdings)} resources (its ledger: {leftover.ledger}); "
                   "run `hotsauce cleanup` to release them"))


@contextmanager
def _work_folder(options: BuildOptions) -> Iterator[Path]:
    work = Path(tempfile.mkdtemp(prefix="hotsauce-build-", dir=options.work_dir)).absolute()
    with ledger.held(ledger.Kind.PATH, work):
        try:
            yield work
        finally:
            ledger.remove_tree(work)


@dataclass(frozen=True)
class FetchedBase:
    archive: Path  # the root archive to unpack
    identity: str  # what the download holds, for the module cache's key


def _fetch_base(config: BuildConfig, options: BuildOptions, cache: Cache, work: Path, emit: Emit,
                times: StageTimes) -> FetchedBase | None:
    """The root archive, fetched and checked before a byte of the image is allocated."""
    if not isinstance(config.base, DownloadBase):
        return None
    with stage(emit, "download", times):
        fetched = download.fetch(config.base, cache, emit, scratch=work)
        # Known from the download itself: a root_file pulled out below is new every build.
        identity = f"download:{config.base.sha256 or file_digest(fetched)}:{config.base.root_file or ''}"
        name = f"download.from {config.base.url}"
        if config.base.root_file:
            fetched = archive.extract_member(fetched, config.base.root_file, work, name)
            name = f"download.root_file {config.base.root_file}"
        unpacked = archive.check_members(fetched, name)
        archive.check_fits(unpacked, options.size, name)
        return FetchedBase(fetched, identity)


def _build_into(config: BuildConfig, options: BuildOptions, plan: Plan, fetched: FetchedBase | None,
                cache: Cache, log_dir: Path, work: Path, staging: Path, build_id: str, emit: Emit,
                times: StageTimes) -> Manifest:
    image = work / "disk.raw"
    with stage(emit, "disk", times):
        disk.allocate(image, options.size)
        partition = disk.write_partition_table(image)
    with disk.attached(image, partition) as device:
        with stage(emit, "format", times):
            disk.make_filesystem(device, options.fs_type)
        with disk.root_filesystem_mounted(device, work / "root") as root:
            runs = plan_runs(plan.modules)
            with stage(emit, "base", times):
                layers, done = _fill_root(config, cache, root, fetched, runs, emit)
            with stage(emit, "modules", times):
                run_modules(runs[done:], root, variables_for(config), plan, log_dir, emit,
                            after_run=_storing(layers, done, root))
            with stage(emit, "finish", times):
                os_release = _finish_root(config, root, staging)
                disk.trim(root)
    with stage(emit, "convert", times):
        root_name = root_image_name(options.image_format.value)
        output.convert_root_image(image, partition, staging / root_name, options.image_format, options.strip)
        manifest = _manifest(config, options, build_id, root_name, os_release)
        manifest.write(staging)
        output.write_libvirt_xml(staging, manifest)
        output.write_checksums(staging, manifest)
    return manifest


def _fill_root(config: BuildConfig, cache: Cache, root: Path, fetched: FetchedBase | None,
               runs: Sequence[Sequence[ResolvedModule]], emit: Emit) -> tuple[ModuleLayers | None, int]:
    """The base, or the newest cached result of the first module runs; how many runs that covers."""
    planned = plan_base(config.base) if isinstance(config.base, DebianBase) and cache.enabled else None
    layers = None
    if cache.enabled and runs:
        if planned is not None:
            identity = planned.entry_name
        else:
            assert fetched is not None
            identity = fetched.identity
        layers = layers_for(cache, identity, config, runs)
        if done := layers.restore_newest(root, emit):
            return layers, done
    _fill_base(config, root, fetched, cache, emit, planned)
    _prepare_root(config, root)
    return layers, 0


def _storing(layers: ModuleLayers | None, done: int, root: Path) -> Callable[[int], None]:
    """What to do after each module run: keep its result in the cache, when there is one."""

    def store(index: int) -> None:
        if layers is not None:
            layers.store(done + index, root)

    return store


def _fill_base(config: BuildConfig, root: Path, fetched: FetchedBase | None, cache: Cache, emit: Emit,
               planned: PlannedBase | None) -> None:
    if isinstance(config.base, DebianBase):
        provide_debian_base(config.base, root, cache, emit, planned)
        return
    assert isinstance(config.base, DownloadBase) and fetched is not None
    archive.extract(fetched.archive, root, emit)


def _prepare_root(config: BuildConfig, root: Path) -> None:
    """What the image needs before modules run: its mount table and identity."""
    fstab = inside(root, "/etc/fstab")
    fstab.parent.mkdir(parents=True, exist_ok=True)
    fstab.write_text(f"# written by hotsauce\nLABEL={ROOT_LABEL}\t/\tauto\tdefaults\t0\t1\n")
    set_identity(root, config.hostname)


def variables_for(config: BuildConfig) -> dict[str, Any]:
    """What modules see: the configuration as written, plus where the build.yaml is."""
    return {**config.data, "hotsauce_build_dir": str(config.directory)}


def run_modules(runs: Sequence[Sequence[ResolvedModule]], root: Path, cfg: Mapping[str, Any], plan: Plan,
                log_dir: Path, emit: Emit, after_run: Callable[[int], None] = lambda index: None) -> None:
    """Each run in order, in the build chroot: a Python module alone, or consecutive Ansible modules
    together. The chroot is left between runs so `after_run` sees the root as the image will have it."""
    for index, run in enumerate(runs):
        emit(Event("info", "modules", f"running {', '.join(module.name for module in run)}"))
        with build_chroot(root):
            if run[0].is_ansible:
                run_ansible_modules(root, run, cfg, roles_path=plan.roles_path,
                                    collections_path=plan.collections_path, log_dir=log_dir, emit=emit)
            else:
                run_python_module(run[0], root, cfg)
        after_run(index)


def _finish_root(config: BuildConfig, root: Path, staging: Path) -> dict[str, str]:
    scrub_image(root)
    if config.kernel:
        copy_boot_files(find_boot_files(root), staging)
    return read_os_release(root)


def _manifest(config: BuildConfig, options: BuildOptions, build_id: str, root_name: str,
              os_release: Mapping[str, str]) -> Manifest:
    return Manifest(
        build_id=build_id,
        root=root_name,
        image_format=options.image_format.value,
        fs_type=options.fs_type.value,
        partitioned=not options.strip,
        kernel="vmlinuz" if config.kernel else None,
        ramdisk="initrd.img" if config.kernel else None,
        kernel_cmdline=KERNEL_CMDLINE,
        os_distro=os_release.get("ID"),
        os_version=os_release.get("VERSION_ID"),
        hotsauce_version=__version__,
        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )
