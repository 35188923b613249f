#!/usr/bin/env bash
# Reserves 2 MiB huge pages, enough for corecache's -m (in MB) plus 10%.
# usage: hugepages.sh MEMORY_MB
set -euo pipefail
mb=${1:?usage: hugepages.sh MEMORY_MB}
pages=$(( (mb * 11 / 10 + 1) / 2 ))
echo "$pages" > /proc/sys/vm/nr_hugepages
echo "reserved $(cat /proc/sys/vm/nr_hugepages) huge pages of 2 MiB (asked for $pages)"
# Transparent huge pages for anonymous mappings made with madvise (corecache's arenas).
if [ -w /sys/kernel/mm/transparent_hugepage/enabled ]; then
    echo madvise > /sys/kernel/mm/transparent_hugepage/enabled
fi
