#!/usr/bin/env bash
# Aligns a NIC's receive queues with corecache's cores: queue i's interrupt is
# served by the i-th CPU in the list, so a packet is processed by the CPU whose
# core is most likely to read it, and stops irqbalance from moving them.
# usage: irq-affinity.sh IFACE CPU_LIST      e.g. irq-affinity.sh eth0 2-15
set -euo pipefail
iface=${1:?usage: irq-affinity.sh IFACE CPU_LIST}
list=${2:?usage: irq-affinity.sh IFACE CPU_LIST}
cpus=()
IFS=',' read -ra parts <<< "$list"
for part in "${parts[@]}"; do
    if [[ $part == *-* ]]; then
        for ((c=${part%-*}; c<=${part#*-}; c++)); do cpus+=("$c"); done
    else
        cpus+=("$part")
    fi
done
systemctl stop irqbalance 2>/dev/null || true
# Use as many combined queues as CPUs (RSS spreads flows over them).
ethtool -L "$iface" combined "${#cpus[@]}" 2>/dev/null || true
i=0
for irq in $(grep "$iface" /proc/interrupts | awk -F: '{print $1}' | tr -d ' '); do
    cpu=${cpus[$((i % ${#cpus[@]}))]}
    echo "$cpu" > "/proc/irq/$irq/smp_affinity_list"
    echo "irq $irq -> cpu $cpu"
    i=$((i + 1))
done
# Transmit packet steering: each CPU sends on its own queue.
q=0
for xps in /sys/class/net/"$iface"/queues/tx-*/xps_cpus; do
    cpu=${cpus[$((q % ${#cpus[@]}))]}
    # The mask is written as one hex word here, which covers CPUs 0-31.
    if [ "$cpu" -lt 32 ]; then
        printf '%x' $((1 << cpu)) > "$xps" 2>/dev/null || true
    fi
    q=$((q + 1))
done
