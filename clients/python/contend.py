"""Test helper: contends for a lease or a semaphore slot from Python and logs
what it did, with CLOCK_MONOTONIC timestamps (comparable with the Rust side).

    contend.py URL NAME LOG loop N [--slots K]   enter/exit N times
    contend.py URL NAME LOG hold SECONDS          hold once, then release
    contend.py URL NAME LOG wait                  wait once, log when acquired
"""

import sys
import time

from leasehold_client import Client


def log(path, line):
    with open(path, "a") as f:
        f.write(line + "\n")


def main():
    url, name, path, mode = sys.argv[1:5]
    rest = sys.argv[5:]
    limit = None
    if "--slots" in rest:
        limit = int(rest[rest.index("--slots") + 1])
    c = Client(url)
    if mode == "loop":
        for _ in range(int(rest[0])):
            lease = c.acquire(name, ttl_ms=5000, limit=limit)
            log(path, f"enter {lease.token} {time.monotonic_ns()} py")
            time.sleep(0.003)
            log(path, f"exit {lease.token} {time.monotonic_ns()} py")
            lease.release()
    elif mode == "hold":
        lease = c.acquire(name, ttl_ms=10_000)
        log(path, f"held {lease.token} {time.monotonic_ns()} py")
        time.sleep(float(rest[0]))
        log(path, f"release {lease.token} {time.monotonic_ns()} py")
        lease.release()
    elif mode == "wait":
        log(path, f"waiting 0 {time.monotonic_ns()} py")
        lease = c.acquire(name, ttl_ms=10_000)
        log(path, f"acquired {lease.token} {time.monotonic_ns()} py")
        lease.release()


if __name__ == "__main__":
    main()
