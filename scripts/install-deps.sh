#!/usr/bin/env bash
# Set up what hotsauce needs on a Debian 12 machine, as root: Debian packages and
# a virtualenv at .venv with hotsauce installed from this checkout. Safe to run again:
# it does nothing when all is in place.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)

packages=(
  mmdebstrap            # Debian bases
  qemu-utils            # qemu-img: convert and check images
  qemu-system-x86       # hotsauce boot
  ovmf                  # hotsauce boot --firmware uefi: UEFI firmware for whole disks
  mtools dosfstools     # --layout disk: the EFI system partition, made and filled without mounting it
  libvirt-daemon-system libvirt-clients  # the libvirt tests: their own libvirtd, virsh
  libxml2-utils         # virt-xml-validate checks libvirt.xml against libvirt's schema
  fdisk                 # sfdisk: the partition table
  e2fsprogs xfsprogs btrfs-progs   # --fs-type
  zstd pigz xz-utils bzip2         # archives
  acl attr              # ACLs and xattrs survive extraction
  rpm                   # rpmbuild for the install_rpms tests
  bubblewrap            # bwrap: the sandbox every command in an image runs in
  python3 python3-venv git ca-certificates
)

missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}"
  apt-get update -qq
  # libvirt-daemon-system would start libvirtd and virtlogd; the tests start their own libvirtd
  # and stop it. A policy-rc.d that refuses keeps the install from starting any service
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
wanted=$(cat "$here/pyproject.toml" "$0" | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$wanted" ]; then
  echo "install-deps: setting up $venv"
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade pip
  "$venv/bin/pip" install -q -e "$here[test,upload]"
  echo "$wanted" > "$stamp"
fi
