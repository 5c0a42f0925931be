"""mmdebstrap hooks that make a bootstrap faster and leave the root as a plain bootstrap would.

Each pair of hooks switches something on before the packages are installed and off again, with no
trace in the root, before mmdebstrap ends:
- dpkg's own syncs are off (force-unsafe-io);
- every sync of dpkg and of what it runs (maintainer scripts, triggers) is a no-op, through
  libeatmydata preloaded by a dpkg wrapper, when the host has the library and it loads in the root;
- /usr is merged the way debootstrap merges it, with Debian's usr-is-merged, by mmdebstrap's own
  hook. Without it apt picks usrmerge, which converts the root at install time and brings perl
  (47 MB installed) into the image for nothing else;
- the initramfs is made once, at the end. Otherwise the kernel's install makes one and the
  initramfs-tools trigger, set off by packages configured after the kernel, makes it again:
  about 7 s each for Debian's cloud kernel.

A failed bootstrap may leave a switch on, but its root is thrown away whole.
"""

from __future__ import annotations

import shlex
from pathlib import Path

# In every base's cache key: bumped when the hooks change what a bootstrapped root holds, so a base
# cached by an older recipe is bootstrapped again (2: /usr merged without usrmerge and perl;
# 3: a bootable base brings zstd, hotsauce.bases.debian.BOOTABLE_PACKAGES).
RECIPE = 3
DPKG_UNSAFE_IO = "etc/dpkg/dpkg.cfg.d/zz-hotsauce-unsafe-io"
# Where the host keeps libeatmydata (Debian's libeatmydata1), by multiarch triplet.
HOST_EATMYDATA = ("/usr/lib/x86_64-linux-gnu/libeatmydata.so.1",)
EATMYDATA_IN_ROOT = "/usr/lib/hotsauce-eatmydata.so"
DPKG_DIVERTED = "/usr/bin/dpkg.hotsauce-synced"
UPDATE_INITRAMFS = "/usr/sbin/update-initramfs"
UPDATE_INITRAMFS_DIVERTED = UPDATE_INITRAMFS + ".hotsauce-deferred"
# mmdebstrap's hook that merges /usr for suites that do not yet do it themselves (bookworm).
MERGED_USR_HOOK_DIR = Path("/usr/share/mmdebstrap/hooks/maybe-merged-usr")
# Variants that install nothing with dpkg have no dpkg-divert to run in the essential hook.
VARIANTS_WITHOUT_DPKG = {"extract", "custom"}
DOES_NOTHING = "#!/bin/sh\nexit 0\n"


def _divert(path: str, to: str) -> str:
    return f'chroot "$1" dpkg-divert --quiet --local --rename --divert {to} --add {path}'


def _undivert(path: str) -> str:
    return f'chroot "$1" dpkg-divert --quiet --local --rename --remove {path}'


def _write_script(path: str, body: str) -> str:
    return f'printf %s {shlex.quote(body)} > "$1{path}" && chmod 755 "$1{path}"'


UNSAFE_IO_HOOKS = (
    f'--setup-hook=mkdir -p "$1/etc/dpkg/dpkg.cfg.d" && echo force-unsafe-io > "$1/{DPKG_UNSAFE_IO}"',
    f'--customize-hook=rm -f "$1/{DPKG_UNSAFE_IO}"',
)


def eatmydata_hooks(host_library: Path) -> tuple[str, str]:
    """dpkg wrapped so that it and its children run with libeatmydata preloaded. The wrapper goes in
    only if the library loads in the root without a word (a host library built against a newer C
    library than the root's would make every dpkg call fail)."""
    wrapper = f'#!/bin/sh\nLD_PRELOAD={EATMYDATA_IN_ROOT} exec {DPKG_DIVERTED} "$@"\n'
    loads = f'[ -z "$(chroot "$1" env LD_PRELOAD={EATMYDATA_IN_ROOT} /bin/true 2>&1)" ]'
    switch_on = (
        f'cp {shlex.quote(str(host_library))} "$1{EATMYDATA_IN_ROOT}" && '
        f'if {loads}; then {_divert("/usr/bin/dpkg", DPKG_DIVERTED)} && '
        f'{_write_script("/usr/bin/dpkg", wrapper)}; else rm -f "$1{EATMYDATA_IN_ROOT}"; fi'
    )
    switch_off = (
        f'if [ -e "$1{DPKG_DIVERTED}" ]; then rm -f "$1/usr/bin/dpkg" && {_undivert("/usr/bin/dpkg")}; fi; '
        f'rm -f "$1{EATMYDATA_IN_ROOT}"'
    )
    return f"--essential-hook={switch_on}", f"--customize-hook={switch_off}"


def initramfs_once_hooks() -> tuple[str, str]:
    """update-initramfs a no-op while packages are installed, then one initramfs per kernel."""
    switch_on = (f"{_divert(UPDATE_INITRAMFS, UPDATE_INITRAMFS_DIVERTED)} && "
                 f"{_write_script(UPDATE_INITRAMFS, DOES_NOTHING)}")
    make_once = (
        f'rm -f "$1{UPDATE_INITRAMFS}" && {_undivert(UPDATE_INITRAMFS)} && '
        f'if [ -x "$1{UPDATE_INITRAMFS}" ]; then chroot "$1" update-initramfs -c -k all; fi'
    )
    return f"--essential-hook={switch_on}", f"--customize-hook={make_once}"


def host_eatmydata() -> Path | None:
    return next((Path(path) for path in HOST_EATMYDATA if Path(path).is_file()), None)


def bootstrap_hooks(variant: str, packages: tuple[str, ...]) -> list[str]:
    """The hooks for one bootstrap, in the order mmdebstrap should run them."""
    hooks = list(UNSAFE_IO_HOOKS)
    if variant in VARIANTS_WITHOUT_DPKG:
        return hooks
    if MERGED_USR_HOOK_DIR.is_dir():
        hooks.append(f"--hook-dir={MERGED_USR_HOOK_DIR}")
    if (library := host_eatmydata()) is not None:
        hooks += eatmydata_hooks(library)
    if "initramfs-tools" in packages:
        hooks += initramfs_once_hooks()
    return hooks
