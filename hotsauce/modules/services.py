"""Services "started" while an image is built: prepared as a start would prepare them, never run.

Roles start and restart services (`service: state=started`, handlers), and
packages ask to start theirs when installed. In an image build nothing may
run, yet what a real start creates must be there, because configuration
checkers look for it: `sshd -t` wants /run/sshd, other daemons their state
and log folders. So a "start" of a unit, through systemctl or a package's
request to policy-rc.d, creates what systemd would create before running it:

- the unit's RuntimeDirectory= (under /run), StateDirectory= (/var/lib),
  CacheDirectory= (/var/cache) and LogsDirectory= (/var/log), owned by its
  User=/Group=, with the mode of its *DirectoryMode= (0755 by default);
- the tmpfiles.d entries for /run and /var (`systemd-tmpfiles --create`).

The scripts run INSIDE the image root, where neither hotsauce nor Python may
be installed (a `download:` base, a Python module's command): they are POSIX
sh and awk, which every Debian-like root has. systemd's own `systemctl cat`
cannot help: it needs a running manager and refuses in a chroot. /run is a
tmpfs while modules run (hotsauce.modules.chroot), so nothing made there is
left in the image; what a start makes under /var stays, as it would.
"""

from __future__ import annotations

# Where systemd looks for system units, highest priority first (the ones an image has on disk).
UNIT_FOLDERS = (
    "/etc/systemd/system",
    "/run/systemd/system",
    "/usr/local/lib/systemd/system",
    "/usr/lib/systemd/system",
    "/lib/systemd/system",
)

# systemctl verbs that start a unit (or would start a stopped one).
START_VERBS = (
    "start",
    "restart",
    "reload",
    "try-restart",
    "condrestart",
    "reload-or-restart",
    "try-reload-or-restart",
    "reload-or-try-restart",
    "force-reload",
)

# The [Service] settings a start acts on, read from the unit and its drop-ins by
# awk: the owner first, then one line per folder: "dir BASE MODE NAME".
# Specifiers of template units (%i, %I, %p, %n, %N, %%) are expanded.
UNIT_FOLDERS_AWK = r"""
function trim(s) { sub(/^[ \t]+/, "", s); sub(/[ \t]+$/, "", s); return s }
function expand(s) {
    gsub(/%%/, "\001", s)
    gsub(/%[iI]/, instance, s); gsub(/%p/, prefix, s)
    gsub(/%n/, unit, s); gsub(/%N/, stem, s)
    gsub(/\001/, "%", s)
    return s
}
BEGIN {
    base["RuntimeDirectory"] = "/run"; base["StateDirectory"] = "/var/lib"
    base["CacheDirectory"] = "/var/cache"; base["LogsDirectory"] = "/var/log"
    user = "-"; group = "-"
}
/^[ \t]*\[/ { section = trim($0); next }
section != "[Service]" || /^[ \t]*[#;]/ { next }
{
    eq = index($0, "=")
    if (eq == 0) next
    key = trim(substr($0, 1, eq - 1)); value = expand(trim(substr($0, eq + 1)))
    if (key in base) { folders[key] = (value == "") ? "" : folders[key] " " value }
    else if (key == "User") user = (value == "") ? "-" : value
    else if (key == "Group") group = (value == "") ? "-" : value
    else if (key ~ /DirectoryMode$/) mode[substr(key, 1, length(key) - 4)] = value
}
END {
    print "owner", user, group
    for (key in folders) {
        n = split(folders[key], names, /[ \t]+/)
        for (i = 1; i <= n; i++) {
            name = names[i]; sub(/:.*/, "", name)  # NAME:LINK (newer systemd): the folder is NAME
            if (name != "") print "dir", base[key], ((key in mode) ? mode[key] : "0755"), name
        }
    }
}
"""

PREPARE_FUNCTIONS = r"""
UNIT_FOLDERS="@UNIT_FOLDERS@"

# The file of a unit (an alias leads to its target), or of its template.
unit_file() {
    for name in "$@"; do
        for folder in $UNIT_FOLDERS; do
            if [ -e "$folder/$name" ]; then
                file=$(readlink -f "$folder/$name")
                [ "$file" = /dev/null ] && return 1  # masked
                echo "$file"
                return 0
            fi
        done
    done
    return 1
}

# Drop-ins of the unit (and of its template), ordered by file name; of two of
# the same name, the one in the folder of higher priority.
drop_ins() {
    for name in "$@"; do
        for folder in $UNIT_FOLDERS; do
            for conf in "$folder/$name.d"/*.conf; do
                [ -f "$conf" ] && echo "${conf##*/} $conf"
            done
        done
    done | sort -s -k1,1 | awk '!seen[$1]++ { print $2 }'
}

prepare_folder() {  # PATH MODE USER GROUP
    mkdir -p -- "$1" && chmod -- "$2" "$1" || return 0
    if [ "$3" != - ]; then
        if [ "$4" != - ]; then chown -- "$3:$4" "$1"; else chown -- "$3:" "$1"; fi
    elif [ "$4" != - ]; then
        chgrp -- "$4" "$1"
    fi
}

# What starting UNIT would create before running it: its runtime, state, cache and
# log folders. Never fails: a start that only prepares must not break a build.
prepare_unit() {
    unit=$1
    case $unit in *.*) ;; *) unit=$unit.service ;; esac
    case $unit in *.service) ;; *) return 0 ;; esac
    stem=${unit%.service}
    prefix=${stem%%@*}
    instance=
    template=
    case $stem in *@*) instance=${stem#*@}; template=$prefix@.service ;; esac
    file=$(unit_file "$unit" $template) || return 0
    drop_ins $template "$unit" | {
        while read -r conf; do files="$files $conf"; done
        # shellcheck disable=SC2086  # file names from the unit folders, split on purpose
        cat "$file" $files 2>/dev/null
    } | awk -v unit="$unit" -v stem="$stem" -v prefix="$prefix" -v instance="$instance" '@AWK@' |
    while read -r what a b c; do
        case $what in
            owner) user=$a; group=$b ;;
            dir) prepare_folder "$a/$c" "$b" "$user" "$group" 2>/dev/null ;;
        esac
    done
    return 0
}

# The tmpfiles.d entries for /run and /var, as boot creates them.
prepare_tmpfiles() {
    if command -v systemd-tmpfiles >/dev/null 2>&1; then
        systemd-tmpfiles --create --prefix=/run --prefix=/var >/dev/null 2>&1
    fi
    return 0
}
"""

SYSTEMCTL_WRAPPER = r"""#!/bin/sh
# hotsauce: in an image build, systemctl enables units and never starts one; a unit
# "started" gets what a real start would create, without running anything.
case "${0##*/}" in
  systemctl) ;;
  *) exit 0 ;;  # halt, reboot, poweroff, ...: nothing to do in a build
esac
@FUNCTIONS@
verb=
units=
now=
for arg in "$@"; do
    case $arg in
        --now) now=1 ;;
        -*) ;;
        *) if [ -z "$verb" ]; then verb=$arg; else units="$units $arg"; fi ;;
    esac
done
case $verb in
    @START_VERBS@) starting=1 ;;
    enable) starting=$now ;;
    *) starting= ;;
esac
if [ -n "$starting" ]; then
    for unit in $units; do prepare_unit "$unit"; done
    prepare_tmpfiles
fi
# --now would make the image's systemctl start (or stop) the unit through a service
# manager that is not there: the start is the preparation above, the stop nothing.
for arg in "$@"; do
    shift
    [ "$arg" = --now ] || set -- "$@" "$arg"
done
# SYSTEMD_OFFLINE=1 makes systemctl treat start/restart/reload as requests to ignore, as it
# does when it detects a chroot (which it cannot always detect: /proc/1/root may be
# unreadable in a sandbox).
SYSTEMD_OFFLINE=1 exec @SAVED@ "$@"
"""

# invoke-rc.d and deb-systemd-invoke ask policy-rc.d before a package starts its
# service: 101 forbids it; a start asked for is prepared, as systemctl prepares one.
POLICY_RC_D = r"""#!/bin/sh
# hotsauce: no service starts while the image is being built; one a package asks to
# start is prepared as a start would prepare it.
@FUNCTIONS@
service=
actions=
for arg in "$@"; do
    case $arg in
        -*) ;;
        *) if [ -z "$service" ]; then service=$arg; elif [ -z "$actions" ]; then actions=$arg; fi ;;
    esac
done
case " $actions " in
    *start*|*reload*)
        if [ -n "$service" ]; then
            prepare_unit "$service"
            prepare_tmpfiles
        fi
        ;;
esac
exit 101
"""


def preparing_functions() -> str:
    """The sh functions that prepare a unit's start inside the image (prepare_unit, prepare_tmpfiles)."""
    # The awk program goes inside single quotes: it has none of its own.
    if "'" in UNIT_FOLDERS_AWK:
        raise ValueError("the unit-reading awk program must not contain a single quote")
    return PREPARE_FUNCTIONS.replace("@UNIT_FOLDERS@", " ".join(UNIT_FOLDERS)).replace(
        "@AWK@", UNIT_FOLDERS_AWK
    )


def systemctl_wrapper(saved: str) -> str:
    """The systemctl of an image being built: runs `saved` (the image's own systemctl) offline,
    after preparing the units a start verb names."""
    return (
        SYSTEMCTL_WRAPPER.replace("@FUNCTIONS@", preparing_functions())
        .replace("@START_VERBS@", "|".join(START_VERBS))
        .replace("@SAVED@", saved)
    )


def policy_rc_d() -> str:
    """The policy-rc.d of an image being built: forbids every start, after preparing it."""
    return POLICY_RC_D.replace("@FUNCTIONS@", preparing_functions())
