#!/bin/bash
# The scaling curve of docs/benchmarks.md ("Scaling across cores"): corecache
# through the shared port and through per-core ports, and memcached -t N, at
# N server cores pinned to CPUs 0..N-1; Redis on CPU 0 as the single-thread
# reference; the load on CLIENT_CPUS with 128 connections, pipeline 16 and 1.
#
# BUNDLE: a folder with bin/{corecache,corecache-bench,memcached,redis-server}
# and, for a machine with another C library, lib/ holding every shared library
# they load and its own ld-linux-x86-64.so.2 (how the device machine ran it).
# Without BUNDLE: target/release and the PATH. Writes each run's text and JSON
# and summary.txt under OUT; for corecache also what its `stats` counters did
# during the run (requests per forwarded batch, per loop turn, and wake-ups
# sent per thousand requests: where cross-core routing spends its time).
#
# TARGETS picks the servers (default all three); CC_ARGS adds flags to every
# corecache start, e.g. CC_ARGS="--reply-spin-us 20" with TARGETS=corecache
# for an A/B of reply polling against a run without it.
#
# SIZES="1 2 4 8" CLIENT_CPUS=8-15 DURATION=5 OUT=scaling-out scripts/scaling_curve.sh
set -u
SIZES=${SIZES:-1 2 4 8}
TARGETS=" ${TARGETS:-corecache memcached redis} "
CC_ARGS=${CC_ARGS:-}
for target in $TARGETS; do
  case $target in
    corecache | memcached | redis) ;;
    *) echo "TARGETS: unknown target '$target' (corecache, memcached, redis)" >&2; exit 2 ;;
  esac
done
CLIENT_CPUS=${CLIENT_CPUS:-8-15}
DURATION=${DURATION:-5}
OUT=${OUT:-scaling-out}
mkdir -p "$OUT"
if [ -n "${BUNDLE:-}" ]; then
  CC=$BUNDLE/bin/corecache BENCH=$BUNDLE/bin/corecache-bench
  MC=$BUNDLE/bin/memcached REDIS=$BUNDLE/bin/redis-server
  LOADER=""
  [ -x "$BUNDLE/lib/ld-linux-x86-64.so.2" ] &&
    LOADER="$BUNDLE/lib/ld-linux-x86-64.so.2 --library-path $BUNDLE/lib"
else
  CC=target/release/corecache BENCH=target/release/corecache-bench
  MC=$(command -v memcached) REDIS=$(command -v redis-server) LOADER=""
fi
echo "cpus $(nproc), kernel $(uname -r), targets:${TARGETS% } corecache flags: ${CC_ARGS:-none}" |
  tee "$OUT/summary.txt"

bench() { # name, then corecache-bench run arguments
  local name=$1
  shift
  $LOADER "$BENCH" run "$@" --conns 128 --client-cpus "$CLIENT_CPUS" \
    --duration "$DURATION" --warmup 1 --json "$OUT/$name.json" >"$OUT/$name.txt" 2>&1
  local ops cpu client p99
  ops=$(grep -oE "= [0-9]+ ops/s" "$OUT/$name.txt" | grep -oE "[0-9]+")
  cpu=$(grep -oE -- "-> [0-9]+ requests per server CPU-second" "$OUT/$name.txt" | grep -oE "[0-9]+")
  p99=$(grep -oE "p99 [0-9.]+" "$OUT/$name.txt" | head -1 | grep -oE "[0-9.]+$")
  client=$(grep -oE "client CPU [0-9.]+" "$OUT/$name.txt" | grep -oE "[0-9.]+$")
  printf "%-18s ops/s %9s  req/server-CPU-s %9s  p99 us %8s  client CPU-s %s\n" \
    "$name" "$ops" "$cpu" "$p99" "$client" | tee -a "$OUT/summary.txt"
}

# `stats` from a server, one "name value" line per counter (bash's /dev/tcp:
# the device machine has no nc).
stats() { # port
  exec 3<>"/dev/tcp/127.0.0.1/$1" || return
  printf 'stats\r\nquit\r\n' >&3
  tr -d '\r' <&3 | awk '$1 == "STAT" { print $2, $3 }'
  exec 3<&-
}

# What corecache's counters did between two `stats` snapshots, in summary.txt.
routing_figures() { # name, before file, after file
  awk -v name="$1" '
    NR == FNR { before[$1] = $2; next }
    { delta[$1] = $2 - before[$1] }
    END {
      requests = delta["cmd_get"] + delta["cmd_set"]
      if (requests <= 0) exit
      batches = delta["forwarded_batches"] > 0 ? delta["forwarded_batches"] : 1
      polls = delta["reply_polls"] > 0 ? delta["reply_polls"] : 0
      printf "%-18s forwarded %.2f of requests, %.1f per batch; %.1f requests per loop turn; %.2f wake-ups and %.2f reply polls (%.0f%% answered) per 1000 requests\n",
        name, delta["forwarded_requests"] / requests, delta["forwarded_requests"] / batches,
        requests / (delta["loop_turns"] > 0 ? delta["loop_turns"] : 1),
        1000 * delta["wakes_sent"] / requests, 1000 * polls / requests,
        (polls > 0 ? 100 * delta["reply_polls_answered"] / polls : 0)
    }' "$2" "$3" | tee -a "$OUT/summary.txt"
}

cc_bench() { # name, port, then bench arguments
  local name=$1 port=$2
  shift 2
  stats "$port" >"$OUT/$name.stats-before"
  bench "$name" "$@"
  stats "$port" >"$OUT/$name.stats-after"
  routing_figures "$name" "$OUT/$name.stats-before" "$OUT/$name.stats-after"
}

for n in $SIZES; do
  cpus=0-$((n - 1)) port=$((11000 + n)) core_ports=$((12000 + n * 16)) mc_port=$((13000 + n))
  if [[ $TARGETS == *" corecache "* ]]; then
    # shellcheck disable=SC2086 # CC_ARGS is a list of flags
    taskset -c "$cpus" $LOADER "$CC" -p $port -t "$n" -m 1024 -U 0 --core-ports $core_ports \
      $CC_ARGS >"$OUT/corecache-$n.log" 2>&1 &
    pid=$!
    sleep 1
    cc_bench "cc-shared-p16-$n" $port --port $port --pipeline 16 --server-pid $pid
    cc_bench "cc-routed-p16-$n" $port --port $port --core-ports "$core_ports:$n" --pipeline 16 --server-pid $pid
    cc_bench "cc-shared-p1-$n" $port --port $port --pipeline 1 --server-pid $pid
    kill $pid
    wait $pid
  fi
  if [[ $TARGETS == *" memcached "* ]]; then
    taskset -c "$cpus" $LOADER "$MC" -u root -p $mc_port -t "$n" -m 1024 -U 0 \
      >"$OUT/memcached-$n.log" 2>&1 &
    pid=$!
    sleep 1
    bench "mc-p16-$n" --port $mc_port --pipeline 16 --server-pid $pid
    bench "mc-p1-$n" --port $mc_port --pipeline 1 --server-pid $pid
    kill $pid
    wait $pid
  fi
done
if [[ $TARGETS == *" redis "* ]]; then
  taskset -c 0 $LOADER "$REDIS" --port 6390 --save "" --appendonly no --maxmemory 1gb \
    >"$OUT/redis.log" 2>&1 &
  pid=$!
  sleep 1
  bench redis-p16-1 --target redis --port 6390 --pipeline 16 --server-pid $pid
  bench redis-p1-1 --target redis --port 6390 --pipeline 1 --server-pid $pid
  kill $pid
  wait $pid
fi
