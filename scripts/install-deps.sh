#!/usr/bin/env bash
# Set up what hotsauce needs on a Debian 12 machine, as root: Debian packages and
# a virtualenv at .venv with hotsauce installed from this checkout. Safe to run again:
# it does nothing when all is in place.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)

# What a build host needs is one list, shared with `hotsauce fleet`, which installs it on each builder.
mapfile -t packages < <(sed -e 's/#.*//' "$here/hotsauce/fleet/debian-packages.txt" | tr -s ' \t' '\n' | sed '/^$/d')
# What only this machine's tests need, on top.
packages+=(
  libvirt-daemon-system libvirt-clients  # the libvirt tests: their own libvirtd, virsh
  libxml2-utils         # virt-xml-validate checks libvirt.xml against libvirt's schema
  rpm                   # rpmbuild for the install_rpms tests
  openssh-server        # the fleet tests: one sshd per builder, started and stopped by the test fixture
  git
)

missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}"
  apt-get update -qq
  # libvirt-daemon-system would start libvirtd and virtlogd, openssh-server the host's sshd; the
  # tests start their own and stop them. A policy-rc.d that refuses keeps the install from starting any service
  # (unless the host has its own policy), so nothing is left running.
  refuse=/usr/sbin/policy-rc.d
  if [ ! -e "$refuse" ]; then
    trap 'rm -f "$refuse"' EXIT
    printf '#!/bin/sh\nexit 101\n' > "$refuse" && chmod 755 "$refuse"
  else
    refuse=
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  if [ -n "$refuse" ]; then rm -f "$refuse"; trap - EXIT; fi
fi

venv="$here/.venv"
stamp="$venv/.hotsauce-installed"
wanted=$(cat "$here/pyproject.toml" "$0" "$here/hotsauce/fleet/debian-packages.txt" | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$wanted" ]; then
  echo "install-deps: setting up $venv"
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade pip
  "$venv/bin/pip" install -q -e "$here[test,upload]"
  echo "$wanted" > "$stamp"
fi
# hotsauce's own bytecode, as pip writes it for a regular install: an editable install leaves it to
# Python's first import, which PYTHONDONTWRITEBYTECODE (set on some machines, CI's among them) stops,
# and every build would compile its hundred modules again (0.11 s of each start). Up-to-date files
# are skipped; a changed source makes its file stale, which Python notices and ignores.
"$venv/bin/python" -m compileall -q "$here/hotsauce"
