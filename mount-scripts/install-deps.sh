#!/usr/bin/env bash
# Installs what drms needs on a Debian machine: libfuse3 and its headers (the native binding, built from source
# here), ISA-L and its headers (the addon's CRC-32), libfuse2 (the fuse-native fallback), fusermount (fuse3: it
# replaces Debian's fuse package, whose fusermount it provides), attr tools, bindfs (the benchmark's C reference),
# chromium (the dashboard's browser test), sqlite3, git, make and gcc (the unmodified programs the tests run on the
# mount), python3 and pkg-config (node-gyp), shellcheck, Node dependencies, then builds.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--help" ]; then
  echo "usage: mount-scripts/install-deps.sh   (run as root from a checkout of drms)"
  exit 0
fi
missing=()
for pkg in libfuse3-dev libisal-dev fuse3 libfuse2 attr bindfs chromium sqlite3 git make gcc g++ python3 pkg-config shellcheck; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "installing Debian packages: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
[ -e /dev/fuse ] || { echo "drms: /dev/fuse is missing: load the fuse kernel module (modprobe fuse)" >&2; exit 1; }
npm ci --no-audit --no-fund
npm run build
