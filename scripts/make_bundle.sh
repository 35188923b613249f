#!/bin/bash
# Gathers what scripts/scaling_curve.sh runs into one folder that can be
# carried to a machine with another C library and no package registry (the
# device machines): bin/ with stripped release builds of corecache and
# corecache-bench and the memcached and redis-server found on the PATH, and
# lib/ with every shared library those load plus this machine's dynamic
# loader, which scaling_curve.sh then runs them with.
#
#   scripts/make_bundle.sh .dev            # then: BUNDLE=$PWD/.dev scripts/scaling_curve.sh
#
# About 25 MB; the device tool carries at most 64 MiB.
set -euo pipefail
DEST=${1:?usage: make_bundle.sh DEST}
mkdir -p "$DEST/bin" "$DEST/lib"
cargo build --release --bin corecache --bin corecache-bench
for b in corecache corecache-bench; do
  strip -o "$DEST/bin/$b" "target/release/$b"
done
for b in memcached redis-server; do
  path=$(command -v "$b") || { echo "make_bundle: $b is not installed" >&2; exit 1; }
  cp "$path" "$DEST/bin/$b"
done
# The libraries every binary loads, and the loader they name.
for b in "$DEST"/bin/*; do
  ldd "$b" | awk '/=> \// { print $3 } /ld-linux/ { print $1 }'
done | sort -u | while read -r lib; do
  cp -L "$lib" "$DEST/lib/"
done
[ -x "$DEST/lib/ld-linux-x86-64.so.2" ] || { echo "make_bundle: no loader copied" >&2; exit 1; }
du -sh "$DEST"
