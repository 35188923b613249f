#!/usr/bin/env bash
# Sets every CPU's frequency governor to "performance" and disables deep idle
# states' latency cost where the cpufreq driver allows it. Run as root at boot.
set -euo pipefail
for gov in /sys/devices/system/cpu/cpu*/cpufreq/scaling_governor; do
    [ -w "$gov" ] && echo performance > "$gov"
done
if command -v cpupower >/dev/null; then
    cpupower idle-set -D 10 || true
fi
echo "governors: $(cat /sys/devices/system/cpu/cpu*/cpufreq/scaling_governor 2>/dev/null | sort | uniq -c | tr '\n' ' ')"
