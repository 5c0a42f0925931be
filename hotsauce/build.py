"""The build pipeline: config, then disk, then base, then modules, then output.

`build()` is the library entry point; the CLI is a thin layer over it. Each
resource is entered in a `with` block or an ExitStack, so on success, on
error, on Ctrl-C, on SIGTERM and on a cancel everything is released in the
reverse order it was taken. Every stage takes the build's `BuildContext`.
"""

from __future__ import annotations

import errno
import os
import secrets
import shutil
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from hotsauce import __version__
from hotsauce.bases import download
from hotsauce.bases.debian import PlannedBase, plan_base, provide_debian_base
from hotsauce.boot.boot_set import boot_image_set
from hotsauce.boot.qemu import kvm_probe_started
from hotsauce.config import (
    BuildConfig,
    BuildOptions,
    DebianBase,
    DownloadBase,
    FsType,
    ModuleKind,
    check_unknown_keys,
)
from hotsauce.context import BuildContext, BuildPaths, Plan, Stages, checking_cancel, folders_filled_by
from hotsauce.errors import StageFailed
from hotsauce.events import Emit, Event, EventKind, Stage, StageTimes, ignore
from hotsauce.host import cancel, ledger
from hotsauce.host.cancel import CancelRequested, cancellable
from hotsauce.host.release import removed_meanwhile
from hotsauce.host.signals import interruptible
from hotsauce.image import archive, disk, ext4_journal, reproducible
from hotsauce.image.bootloader import make_bootable
from hotsauce.image.disk import Partition
from hotsauce.image.identity import scrub_image, set_identity
from hotsauce.image.partitions import attached_disk, read_gpt
from hotsauce.image.reproducible import EPOCH_ENV, Reproducible, write_filesystem_into
from hotsauce.image.scrub import clamp_times, scrub_build_leftovers
from hotsauce.image.whole_disk import (
    DiskSettings,
    allocate_disk,
    check_base_boots,
    format_disk,
    plan_disk,
    plan_layout,
)
from hotsauce.modules import debug_shell
from hotsauce.modules.ansible_run import run_ansible_modules
from hotsauce.modules.chroot import build_chroot
from hotsauce.modules.galaxy import install_requirements, installed_version
from hotsauce.modules.python_run import run_python_module
from hotsauce.modules.resolve import ResolvedModule, module_search, plan_runs, resolve_all, variables_read_by
from hotsauce.modules.result_cache import (
    ModuleLayers,
    download_identity,
    layers_for,
    module_digest,
    worth_keeping,
)
from hotsauce.output import publish as output
from hotsauce.output.boot_files import copy_boot_files, find_boot_files, read_os_release
from hotsauce.output.disk_set import write_disk_set
from hotsauce.output.formats import convert_disk
from hotsauce.output.imageset import ROOT_LABEL, Manifest, root_image_name
from hotsauce.output.sbom import (
    SBOM_NAME,
    BaseFacts,
    SbomRequest,
    describe_debian,
    describe_download,
    module_facts,
    provide_image_sbom,
    spdx_tools_imported_meanwhile,
)
from hotsauce.rootpath import inside
from hotsauce.store import set_cache
from hotsauce.store.cache import Cache, default_cache_dir
from hotsauce.store.logs import build_log

__all__ = ["BuildContext", "BuildResult", "Plan", "build"]

KERNEL_CMDLINE = f"root=LABEL={ROOT_LABEL} ro console=tty0 console=ttyS0,115200n8"


@dataclass(frozen=True)
class BuildResult:
    output: Path
    build_id: str
    manifest: Manifest
    times: StageTimes


@dataclass(frozen=True)
class FetchedBase:
    archive: Path  # the root archive to unpack
    identity: str  # what the download holds, for the module cache's key
    newest: int  # its newest member's time: the default SOURCE_DATE_EPOCH
    download: Path  # the file fetched, for the SBOM (the archive may be a file inside it)


def new_build_id() -> str:
    """This run's id, for its log folder; the set's build id is Reproducible.build_id()."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(3)


def build(config: BuildConfig, options: BuildOptions, emit: Emit = ignore, *,
          cancel: CancelRequested | None = None) -> BuildResult:
    """Build the image set that `config` describes and write it to `options.output`.

    `emit` receives the build's events. `cancel` (a threading.Event's `is_set`,
    say) may be set from any thread: the build looks at it at each stage
    boundary and inside its long waits, and stops.

    Raises ConfigError for bad input, before anything is allocated;
    BuildFailed, carrying the stage and, for a full disk, which disk, for any
    other failure; BuildCancelled once cancelled. Everything the build held is
    released, and no output written, before either is raised.
    """
    stages = Stages(folders_filled_by(options))
    try:
        with ExitStack() as held:
            ctx = _start(config, options, emit, cancel, stages, held)
            source = _root_source(ctx)
            repro = _reproducible(ctx, source)
            held.enter_context(_epoch_in_environment(repro.epoch))
            kept_as = _set_key(ctx, source, repro)
            manifest = _reused_set(ctx, kept_as, repro) or _build_into(ctx, source, repro)
            if kept_as is not None:
                _keep_set(ctx, kept_as)
            if options.boot_checks is not None:
                with ctx.stage(Stage.BOOT_CHECK):
                    _boot_check(ctx, options.boot_checks)
            with ctx.stage(Stage.PUBLISH):
                output.publish(ctx.paths.staging, options.output, compress=options.compress,
                               force=options.force, emit=ctx.emit,
                               probe_cache=ctx.cache.folder("kvm-probe") if ctx.cache.enabled else None,
                               epoch=repro.epoch)
            ctx.emit(Event(EventKind.FINISHED, Stage.PUBLISH, str(options.output), {"seconds": ctx.times.seconds}))
    except BaseException as error:
        failure = stages.failure(error, options)
        if failure is error:
            raise
        raise failure from error
    return BuildResult(options.output.absolute(), ctx.build_id, manifest, ctx.times)


def _start(config: BuildConfig, options: BuildOptions, emit: Emit, cancel_requested: CancelRequested | None,
           stages: Stages, held: ExitStack) -> BuildContext:
    """What the build holds from start to end, and the config stage: everything checked
    and resolved, and the work and staging folders made, before the image is allocated."""
    cache = Cache(options.cache_dir or config.cache_dir or default_cache_dir(), enabled=options.use_cache)
    build_id = new_build_id()
    held.enter_context(cancellable(cancel_requested))
    held.enter_context(interruptible())
    recorded = held.enter_context(ledger.recording())
    log_dir, logged = held.enter_context(build_log(cache, build_id, emit))
    stages.emit = checking_cancel(logged)
    stages.emit(Event(EventKind.INFO, Stage.CONFIG, f"build {build_id}; log: {log_dir / 'build.log'}",
                      {"log_dir": str(log_dir)}))
    with stages.bracket(Stage.CONFIG):
        warn_about_leftovers(stages.emit)
        output.check_output_path(options.output, force=options.force)
        config, options, _ = plan_layout(config, options)
        work = held.enter_context(_work_folder(options))
        plan = make_plan(config, cache, stages.emit, scratch=work)
        debug_shell.check_shell_before(plan.modules, options.shell_before)
        staging = held.enter_context(output.staging_folder(options.output))
    return BuildContext(config, options, build_id, cache, log_dir, BuildPaths(work, staging), plan, stages,
                        recorded, cancel_requested, background=held)


def _boot_check(ctx: BuildContext, checks: Sequence[str]) -> None:
    """Boot the finished set before it is published: a set that does not boot is no output.
    The serial log stays with the build's log."""
    boot_image_set(ctx.paths.staging, checks=checks, log_dir=ctx.log_dir / "boot", emit=ctx.emit).raise_for_failure()


def make_plan(config: BuildConfig, cache: Cache, emit: Emit, scratch: Path | None = None) -> Plan:
    roles_dirs: list[Path] = []
    collections_dirs: list[Path] = []
    if config.requirements is not None:
        roles_dirs, collections_dirs = install_requirements(config.requirements, cache, emit, scratch=scratch)
    search = module_search(config, roles_dirs, collections_dirs)
    modules = resolve_all(config, search)
    for warning in check_unknown_keys(config, variables_read_by(modules)):
        emit(Event("warning", "config", warning))
    return Plan(tuple(modules), search.roles_path, tuple(collections_dirs))


def warn_about_leftovers(emit: Emit) -> None:
    for leftover in ledger.find_leftovers():
        emit(Event(EventKind.WARNING, Stage.CONFIG, f"build {leftover.pid} ended without releasing "
                   f"{len(leftover.holdings)} resources (its ledger: {leftover.ledger}); "
                   "run `hotsauce cleanup` to release them"))


def _work_folder(options: BuildOptions) -> AbstractContextManager[Path]:
    return ledger.temporary_folder("hotsauce-build-", options.work_dir)


def _root_source(ctx: BuildContext) -> PlannedBase | FetchedBase:
    """Where the root comes from. A download is fetched and checked before a byte of the image is allocated;
    a Debian base's mirror is asked for its Release dates (its cache key and SOURCE_DATE_EPOCH)."""
    base = ctx.config.base
    if isinstance(base, DebianBase):
        return plan_base(base)
    with ctx.stage(Stage.DOWNLOAD):
        fetched = download_file = download.fetch(base, ctx.cache, ctx.emit, scratch=ctx.paths.work)
        identity = download_identity(base, fetched)
        name = f"download.from {base.url}"
        if base.root_file:
            fetched = archive.extract_member(fetched, base.root_file, ctx.paths.work, name)
            name = f"download.root_file {base.root_file}"
        paths: set[str] = set()
        members = archive.scan_members(fetched, name, paths)
        archive.check_fits(members.unpacked, ctx.options.size, name)
        check_base_boots(paths, plan_disk(ctx.config, ctx.options), name)
        return FetchedBase(fetched, identity, members.newest or int(fetched.stat().st_mtime), download_file)


def _reproducible(ctx: BuildContext, source: PlannedBase | FetchedBase) -> Reproducible:
    """The build's epoch and the seed its identifiers are derived from (hotsauce.image.reproducible)."""
    if isinstance(source, FetchedBase):
        base_identity, base_epoch, origin = source.identity, source.newest, "the base tarball's newest member"
    else:
        base_identity, origin = source.entry_name, "the mirror's newest Release date"
        base_epoch = reproducible.epoch_of_release_dates(source.key["release_dates"])
    epoch = reproducible.epoch_from_environment()
    if epoch is None:
        epoch = base_epoch
    else:
        origin = f"${EPOCH_ENV}"
    options = ctx.options
    seed = reproducible.input_seed({
        "hotsauce": __version__,
        "epoch": epoch,
        "base": base_identity,
        "configuration": ctx.config.data,
        "modules": [[m.kind.value, m.name, m.ref.vars, module_digest(m)] for m in ctx.plan.modules],
        "image": [options.size, options.fs_type.value, str(options.layout), str(options.boot)],
    })
    repro = Reproducible(epoch, seed)
    ctx.emit(Event(EventKind.INFO, Stage.CONFIG, f"{EPOCH_ENV}={epoch} ({repro.iso_time()}, from {origin}); "
                   f"build id {repro.build_id()}", {"source_date_epoch": epoch, "build_id": repro.build_id()}))
    return repro


@contextmanager
def _epoch_in_environment(epoch: int) -> Iterator[None]:
    """Modules, and the tools they run in the image (useradd, dpkg, ...), read SOURCE_DATE_EPOCH."""
    saved = os.environ.get(EPOCH_ENV)
    os.environ[EPOCH_ENV] = str(epoch)
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(EPOCH_ENV, None)
        else:
            os.environ[EPOCH_ENV] = saved


def _set_key(ctx: BuildContext, source: PlannedBase | FetchedBase, repro: Reproducible) -> str | None:
    """The key a finished set of this build is kept under, when it has one: with the cache, and
    modules whose result the module cache keys."""
    runs = plan_runs(ctx.plan.modules)
    if not ctx.cache.enabled or not runs or ctx.options.shell_before is not None:
        return None  # (what is typed in a shell before a module is in no key)
    identity, _ = _base_filler(ctx, ctx.paths.root, source)
    if identity is None:
        return None
    root_key = layers_for(ctx.cache, identity, ctx.config, runs).keys[-1]
    return set_cache.set_key(root_key, ctx.options, repro.epoch)


def _reused_set(ctx: BuildContext, key: str | None, repro: Reproducible) -> Manifest | None:
    """The set an identical earlier build wrote, copied from the cache with this build's id and
    time (the ones _manifest gives), or None."""
    if key is None:
        return None
    with ctx.stage(Stage.CONVERT):
        entry = set_cache.reuse(ctx.cache, key, ctx.paths.staging)
        if entry is None:
            return None
        manifest = replace(Manifest.read(ctx.paths.staging), build_id=repro.build_id(), created=repro.iso_time(),
                           source_date_epoch=repro.epoch)
        manifest.write(ctx.paths.staging)
        output.write_libvirt_xml(ctx.paths.staging, manifest)
        output.write_checksums(ctx.paths.staging, manifest, only=set_cache.PER_BUILD_FILES)
        ctx.emit(Event(EventKind.INFO, Stage.CONVERT, f"the set of an identical build served from the cache "
                       f"({entry.name}): nothing was allocated, run or converted", {"cached": True}))
    return manifest


def _keep_set(ctx: BuildContext, key: str) -> None:
    """Keep the finished set for an identical build to come; a cache on another filesystem than
    the output cannot hold hard links of it, and is then not used for sets."""
    try:
        set_cache.keep(ctx.cache, key, ctx.paths.staging)
    except OSError as error:
        if error.errno != errno.EXDEV:
            raise


def _build_into(ctx: BuildContext, source: PlannedBase | FetchedBase, repro: Reproducible) -> Manifest:
    """The image allocated, filled by the base and the modules, and converted into the staging folder."""
    if (disk_settings := plan_disk(ctx.config, ctx.options)) is not None:
        return _build_disk_into(ctx, source, disk_settings, repro)
    with ExitStack() as image:
        with ctx.stage(Stage.DISK):
            disk.allocate(ctx.paths.image, ctx.options.size)
            partition = disk.write_partition_table(ctx.paths.image, repro)
            device = image.enter_context(disk.attached(ctx.paths.image, partition))
        with ctx.stage(Stage.FORMAT):
            disk.make_filesystem(device, ctx.options.fs_type, repro)
        with ctx.stage(Stage.MOUNT):
            root = image.enter_context(disk.root_filesystem_mounted(device, ctx.paths.root, trim=True,
                                                                    building=ctx.options.fs_type))
        _base_and_modules(ctx, root, source)
        with ctx.stage(Stage.FINISH):
            os_release = _finish_root(ctx, root)
            _finish_and_release(ctx, image, root, partition, repro)
    with ctx.stage(Stage.CONVERT):
        root_name = root_image_name(ctx.options.image_format.value)
        output.convert_root_image(ctx.paths.image, partition, ctx.paths.staging / root_name,
                                  ctx.options.image_format, ctx.options.strip, in_order=_byte_identical(ctx))
        with removed_meanwhile(ctx.paths.image):  # converted: not needed while the checksums are taken
            manifest = _manifest(ctx, root_name, os_release, repro)
            manifest.write(ctx.paths.staging)
            output.write_libvirt_xml(ctx.paths.staging, manifest)
            output.write_checksums(ctx.paths.staging, manifest)
    return manifest


def _build_disk_into(ctx: BuildContext, source: PlannedBase | FetchedBase, settings: DiskSettings,
                     repro: Reproducible) -> Manifest:
    """The whole-disk layout (hotsauce.image.whole_disk): the same stages on a GPT disk, made
    bootable by the image's own GRUB before the root is finished."""
    fs_type = ctx.options.fs_type
    with ExitStack() as image:
        with ctx.stage(Stage.DISK):
            allocate_disk(ctx.paths.image, ctx.options.size, repro)
            devices = image.enter_context(attached_disk(ctx.paths.image))
            root_partition = read_gpt(ctx.paths.image).root
        with ctx.stage(Stage.FORMAT):
            format_disk(devices, fs_type, repro)
        with ctx.stage(Stage.MOUNT):
            root = image.enter_context(disk.root_filesystem_mounted(devices.root, ctx.paths.root, trim=True,
                                                                    building=fs_type))
        _base_and_modules(ctx, root, source, written_back=(devices.root, ctx.paths.image))
        with ctx.stage(Stage.FINISH):
            listings = ctx.cache.folder("initramfs-listings") if ctx.cache.enabled else None
            facts = make_bootable(root, devices, settings.boot, fs_type, listings)
            scrub_image(root)
            os_release = read_os_release(root)
            _finish_and_release(ctx, image, root, root_partition, repro)
    with ctx.stage(Stage.CONVERT):
        files = convert_disk(ctx.paths.image, ctx.paths.staging, settings.formats, settings.compression,
                             in_order=_byte_identical(ctx))
        with removed_meanwhile(ctx.paths.image):  # converted: not needed while the checksums are taken
            return write_disk_set(ctx.paths.staging, files, settings, facts, _manifest(ctx, "", os_release, repro))


def _base_and_modules(ctx: BuildContext, root: Path, source: PlannedBase | FetchedBase,
                      written_back: tuple[Path, Path] | None = None) -> None:
    """The base, then the modules and the SBOM; with `written_back` (the root's device and the
    image file), while the base's data is written back to the device and the image file to the
    host's disk, which the finish of a whole disk would wait for (hotsauce.image.disk)."""
    runs, cacheable = debug_shell.split_before(plan_runs(ctx.plan.modules), ctx.options.shell_before)
    sbom_wanted = bool(ctx.config.value("sbom.enabled"))
    with ctx.stage(Stage.BASE), spdx_tools_imported_meanwhile() if sbom_wanted else nullcontext():
        layers, done = _fill_root(ctx, root, source, runs[:cacheable])
    _start_kvm_probe(ctx, root)
    with disk.written_back_meanwhile(*written_back) if written_back else nullcontext():
        with ctx.stage(Stage.MODULES):
            run_modules(ctx, runs[done:], root, after_run=_storing(layers, done, len(runs), root, ctx.emit))
        if sbom_wanted:
            with ctx.stage(Stage.SBOM):
                identity = _finished_root_identity(layers, len(runs), cacheable, _base_identity(source))
                request = sbom_request(ctx, source, identity if ctx.cache.enabled else None)
                provide_image_sbom(request, root, ctx.paths.staging, ctx.cache if ctx.cache.enabled else None)


def _finished_root_identity(layers: ModuleLayers | None, runs: int, cacheable: int,
                            base_identity: str | None) -> str | None:
    """The cache's name for the root after every run, which keys the cached SBOM; None when a
    shell ran before some module (what a person did there is in no key)."""
    if cacheable < runs:
        return None
    if layers is not None:
        return layers.entry(runs - 1).name
    return base_identity


def _base_identity(source: PlannedBase | FetchedBase) -> str:
    return source.identity if isinstance(source, FetchedBase) else source.entry_name


def sbom_request(ctx: BuildContext, source: PlannedBase | FetchedBase, root_identity: str | None) -> SbomRequest:
    """What the SBOM says besides the root's packages: the base, the modules, this hotsauce."""

    def describe_base() -> BaseFacts:
        if isinstance(source, FetchedBase):
            base = ctx.config.base
            sha256 = base.sha256 if isinstance(base, DownloadBase) else None
            return describe_download(base.url if isinstance(base, DownloadBase) else "", source.download, sha256)
        spec = source.plan.spec
        details = {"variant": str(spec.variant), "bootable": spec.bootable, "include": list(spec.include)}
        return describe_debian(((s.uri, s.suite, s.components) for s in source.plan.sources),
                               source.key["release_dates"], details)

    return SbomRequest(ctx.config.hostname, __version__, module_facts(ctx.plan.modules, ctx.config.requirements,
                                                                  ctx.config.directory),
                       describe_base, in_image=bool(ctx.config.value("sbom.in_image")), root_identity=root_identity)


def _fill_root(ctx: BuildContext, root: Path, source: PlannedBase | FetchedBase,
               runs: Sequence[Sequence[ResolvedModule]]) -> tuple[ModuleLayers | None, int]:
    """The base, or the newest cached result of the first module runs; how many runs that covers."""
    identity, fill = _base_filler(ctx, root, source)
    layers = None
    if ctx.cache.enabled and runs and identity is not None:
        layers = layers_for(ctx.cache, identity, ctx.config, runs)
        if done := layers.restore_newest(root, ctx.emit):
            return layers, done
    fill()
    _prepare_root(ctx.config, root)
    return layers, 0


def _base_filler(ctx: BuildContext, root: Path,
                 source: PlannedBase | FetchedBase) -> tuple[str | None, Callable[[], None]]:
    """What the base is, for the module cache's key, and how it fills the root."""
    if isinstance(source, FetchedBase):
        return source.identity, lambda: archive.extract(source.archive, root, ctx.emit)
    return (source.entry_name,
            lambda: provide_debian_base(source.plan.spec, root, ctx.cache, ctx.emit, source))


def _start_kvm_probe(ctx: BuildContext, root: Path) -> None:
    """Find out, while the modules run, whether KVM runs the base's kernel: the EC2-style set's
    libvirt.xml says so, and a probe of a kernel that KVM hangs costs its whole bound. The probe
    boots a copy, so the root can be unmounted whenever the build ends."""
    if not ctx.config.kernel or plan_disk(ctx.config, ctx.options) is not None:
        return
    try:
        kernel = find_boot_files(root).kernel
    except StageFailed:
        return  # a kernel installed by a module is probed when the set is published
    copy = ctx.paths.work / "kvm-probe-vmlinuz"
    shutil.copyfile(kernel, copy)
    remember_in = ctx.cache.folder("kvm-probe") if ctx.cache.enabled else None
    ctx.background.enter_context(kvm_probe_started(copy, remember_in=remember_in))


def _storing(layers: ModuleLayers | None, done: int, count: int, root: Path, emit: Emit) -> Callable[[int], None]:
    """What to do after each module run: keep its result in the cache, when there is one and the
    run is worth keeping (result_cache.worth_keeping)."""
    started = time.monotonic()

    def store(index: int) -> None:
        nonlocal started
        position, seconds = done + index, time.monotonic() - started
        if layers is not None and position < len(layers.keys):  # none after a --shell-before
            if worth_keeping(position == count - 1, seconds):
                layers.store(position, root)
            else:
                layers.record_ran(position, seconds)
                emit(Event(EventKind.INFO, Stage.MODULES,
                           f"module run {position + 1} of {count} not kept in the cache: it took {seconds:.1f} s; "
                           "an identical build copies its kept set, another runs it again"))
        started = time.monotonic()

    return store


def _prepare_root(config: BuildConfig, root: Path) -> None:
    """What the image needs before modules run: its mount table and identity."""
    fstab = inside(root, "/etc/fstab")
    fstab.parent.mkdir(parents=True, exist_ok=True)
    fstab.write_text(f"# written by hotsauce\nLABEL={ROOT_LABEL}\t/\tauto\tdefaults\t0\t1\n")
    set_identity(root, config.hostname)


def variables_for(config: BuildConfig) -> dict[str, Any]:
    """What modules see: the configuration as written, plus where the build.yaml is."""
    return {**config.data, "hotsauce_build_dir": str(config.directory)}


def run_modules(ctx: BuildContext, runs: Sequence[Sequence[ResolvedModule]], root: Path,
                after_run: Callable[[int], None] = lambda index: None) -> None:
    """Each run in order, in the build chroot: a Python module alone, or consecutive Ansible modules
    together. The chroot is left between runs so `after_run` sees the root as the image will have it."""
    cfg = variables_for(ctx.config)
    for index, run in enumerate(runs):
        cancel.check()
        ctx.emit(Event(EventKind.INFO, Stage.MODULES, f"running {', '.join(module.name for module in run)}"))
        with ExitStack() as chroot:
            chroot.enter_context(build_chroot(root))
            debug_shell.shell_before(root, run, ctx.options.shell_before, ctx.log_dir / "build.log")
            with debug_shell.shell_on_failure(root, run, ctx.options.shell_on_failure, ctx.log_dir / "build.log"):
                if run[0].is_ansible:
                    run_ansible_modules(root, run, cfg, roles_path=ctx.plan.roles_path,
                                        collections_path=ctx.plan.collections_path, log_dir=ctx.log_dir,
                                        emit=ctx.emit, payload_memo=_payload_memo(ctx))
                else:
                    run_python_module(run[0], root, cfg)
            with cancel.shielded():
                chroot.close()  # what the run left running is stopped, the kernel filesystems unmounted
        after_run(index)


def _payload_memo(ctx: BuildContext) -> Path | None:
    """Where Ansible runs keep what their module payload builds learn: the cache, when there is one."""
    return ctx.cache.folder("ansible") / "payload-memo" if ctx.cache.enabled else None


def _finish_root(ctx: BuildContext, root: Path) -> dict[str, str]:
    scrub_image(root)
    if ctx.config.kernel:
        copy_boot_files(find_boot_files(root), ctx.paths.staging)
    return read_os_release(root)


def _byte_identical(ctx: BuildContext) -> bool:
    """Whether the build takes the slower steps that make its root image byte-identical
    (--reproducible, else build.yaml's `reproducible`)."""
    wanted = ctx.options.reproducible
    return bool(ctx.config.value("reproducible")) if wanted is None else wanted


def _finish_and_release(ctx: BuildContext, image: ExitStack, root: Path, partition: Partition,
                        repro: Reproducible) -> None:
    """The root's last finishing, then the image released (written back, trimmed, unmounted and
    detached: a failure there is the finish stage's); a filesystem made again goes over the
    root's partition once nothing holds it, else an ext4 root's journal is emptied
    (hotsauce.image.ext4_journal)."""
    remade = _finish_reproducibly(ctx, root, partition.size, repro)
    with cancel.shielded():
        image.close()
    if remade is not None:
        write_filesystem_into(ctx.paths.image, partition.offset, partition.size, remade)
        remade.unlink()
    elif ctx.options.fs_type is FsType.EXT4:
        ext4_journal.empty_journal(ctx.paths.image, partition)  # a remade filesystem's is empty already


def _finish_reproducibly(ctx: BuildContext, root: Path, size: int, repro: Reproducible) -> Path | None:
    """The root as two builds of the same inputs leave it (always: cheap); when byte-identical
    output is asked for and the root is ext4, the filesystem made again from it (returned, to be
    written over the partition once unmounted)."""
    scrub_build_leftovers(root)
    clamp_times(root, repro.epoch)
    if ctx.options.fs_type is not FsType.EXT4 or not _byte_identical(ctx):
        return None
    remade = ctx.paths.work / "root.ext4"
    started = time.monotonic()
    with reproducible.read_only(root):
        reproducible.make_ext4_from_tree(root, remade, size, ROOT_LABEL, repro)
    ctx.emit(Event(EventKind.INFO, Stage.FINISH, f"reproducible: the ext4 made again from the finished tree in "
                   f"{time.monotonic() - started:.1f} s", {"remake_seconds": time.monotonic() - started}))
    return remade


def _manifest(ctx: BuildContext, root_name: str, os_release: Mapping[str, str], repro: Reproducible) -> Manifest:
    options = ctx.options
    return Manifest(
        build_id=repro.build_id(),
        root=root_name,
        image_format=options.image_format.value,
        fs_type=options.fs_type.value,
        partitioned=not options.strip,
        kernel="vmlinuz" if ctx.config.kernel else None,
        ramdisk="initrd.img" if ctx.config.kernel else None,
        kernel_cmdline=KERNEL_CMDLINE,
        os_distro=os_release.get("ID"),
        os_version=os_release.get("VERSION_ID"),
        hotsauce_version=__version__,
        created=repro.iso_time(),
        hostname=ctx.config.hostname,
        modules=modules_record(ctx.plan.modules),
        source_date_epoch=repro.epoch,
        sbom=SBOM_NAME if (ctx.paths.staging / SBOM_NAME).is_file() else None,
    )


def modules_record(modules: Sequence[ResolvedModule]) -> tuple[dict[str, object], ...]:
    """What ran, for the manifest: a changed or upgraded module shows here."""
    records: list[dict[str, object]] = []
    for module in modules:
        record: dict[str, object] = {"name": module.name, "kind": module.kind.value, "digest": module_digest(module)}
        if module.kind is ModuleKind.ROLE and (version := installed_version(module.path)):
            record["version"] = version
        records.append(record)
    return tuple(records)
