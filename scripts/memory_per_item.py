#!/usr/bin/env python3
"""Resident memory per item: starts a server, reads VmRSS from /proc/PID/status,
loads N items (14-byte keys, 100-byte values) over one pipelined connection, reads
VmRSS again and prints (after - before) / N. See docs/benchmarks.md, "Memory per item".

usage: memory_per_item.py corecache|memcached|redis [--n 1000000] [--bin PATH] [-- extra args]
"""
import argparse
import socket
import subprocess
import sys
import time


def vmrss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def connect(port):
    for _ in range(200):
        try:
            return socket.create_connection(("127.0.0.1", port))
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"server on port {port} did not come up")


def recv_until(sock, marker, buf=b""):
    while marker not in buf:
        chunk = sock.recv(1 << 20)
        if not chunk:
            raise RuntimeError("connection closed")
        buf += chunk
    return buf


def load_memcached(sock, n, value):
    batch = []
    for i in range(n):
        batch.append(b"set key:%010d 0 0 %d noreply\r\n%s\r\n" % (i, len(value), value))
        if len(batch) == 1000:
            sock.sendall(b"".join(batch))
            batch = []
    sock.sendall(b"".join(batch) + b"version\r\n")
    recv_until(sock, b"\r\n")
    time.sleep(1.0)  # corecache publishes its stats gauges periodically
    sock.sendall(b"stats\r\n")
    stats = recv_until(sock, b"END\r\n").decode()
    return int(next(l.split()[2] for l in stats.splitlines() if l.startswith("STAT curr_items ")))


def load_redis(sock, n, value):
    buf = b""
    for start in range(0, n, 1000):
        cmds = []
        end = min(n, start + 1000)
        for i in range(start, end):
            k = b"key:%010d" % i
            cmds.append(b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(k), k, len(value), value))
        sock.sendall(b"".join(cmds))
        want = (end - start) * 5
        while len(buf) < want:
            buf += sock.recv(1 << 20)
        buf = buf[want:]
    sock.sendall(b"*1\r\n$6\r\nDBSIZE\r\n")
    r = recv_until(sock, b"\r\n")
    return int(r[1:].split(b"\r\n")[0])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("server", choices=["corecache", "memcached", "redis"])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--bin")
    ap.add_argument("--port", type=int, default=0, help="default: a free port")
    ap.add_argument("extra", nargs="*")
    a = ap.parse_args()
    if a.port == 0:
        # A port nobody listens on now (the machine is shared: never talk to a
        # server this script did not start).
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            a.port = probe.getsockname()[1]
    if a.server == "corecache":
        argv = [a.bin or "target/release/corecache", "-m", "1024", "-t", "1", "-p", str(a.port)]
    elif a.server == "memcached":
        argv = [a.bin or "memcached", "-m", "1024", "-U", "0", "-u", "root", "-t", "1", "-p", str(a.port)]
    else:
        argv = [a.bin or "redis-server", "--port", str(a.port), "--save", "", "--appendonly", "no",
                "--maxmemory", "1gb"]
    argv += a.extra
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        sock = connect(a.port)
        if proc.poll() is not None:
            raise RuntimeError(f"{argv[0]} exited at start")
        time.sleep(0.5)
        before = vmrss_kib(proc.pid)
        value = b"v" * 100
        t = time.time()
        count = (load_redis if a.server == "redis" else load_memcached)(sock, a.n, value)
        secs = time.time() - t
        time.sleep(0.5)
        after = vmrss_kib(proc.pid)
        per_item = (after - before) * 1024 / a.n
        print(f"{a.server}: {' '.join(argv)}")
        print(f"  items {count} of {a.n} in {secs:.1f}s; VmRSS {before} KiB -> {after} KiB;"
              f" {per_item:.1f} bytes/item")
    finally:
        proc.terminate()
        proc.wait()


if __name__ == "__main__":
    sys.exit(main())
