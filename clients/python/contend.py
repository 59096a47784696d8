"""Test helper: contends for a lease or a semaphore slot from Python (the
`leasehold` package) and logs what it did, with CLOCK_MONOTONIC timestamps
(comparable with the Rust side and other processes on the host).

    contend.py URL NAME LOG loop N [--slots K]    enter/exit N times
    contend.py URL NAME LOG hold SECONDS           hold once, then release
    contend.py URL NAME LOG wait                   wait once, log when acquired
    contend.py URL NAME LOG work TTL [--slots K] [--tag T]
        acquire, then "work" every 5 ms while the lease is held (checking
        is_held before each write, as a fenced writer should), log "lost"
        with the reason when it is not, and exit

Run by tests/mixed.rs (PYTHONPATH=clients/python) and by the pytest suite.
"""

import sys
import time

from leasehold import Client


def log(path: str, line: str) -> None:
    with open(path, "a") as f:
        f.write(line + "\n")
        f.flush()


def main() -> None:
    url, name, path, mode = sys.argv[1:5]
    rest = sys.argv[5:]
    limit = None
    if "--slots" in rest:
        limit = int(rest[rest.index("--slots") + 1])
    tag = rest[rest.index("--tag") + 1] if "--tag" in rest else "py"

    c = Client.from_url(url)

    def lease(ttl: float):  # type: ignore[no-untyped-def]
        return c.lease(name, ttl=ttl) if limit is None else c.semaphore(name, limit, ttl=ttl)

    if mode == "loop":
        for _ in range(int(rest[0])):
            held = lease(5.0).acquire()
            log(path, f"enter {held.token} {time.monotonic_ns()} {tag}")
            time.sleep(0.003)
            log(path, f"exit {held.token} {time.monotonic_ns()} {tag}")
            held.release()
    elif mode == "hold":
        held = lease(10.0).acquire()
        log(path, f"held {held.token} {time.monotonic_ns()} {tag}")
        time.sleep(float(rest[0]))
        log(path, f"release {held.token} {time.monotonic_ns()} {tag}")
        held.release()
    elif mode == "wait":
        log(path, f"waiting 0 {time.monotonic_ns()} {tag}")
        held = lease(10.0).acquire()
        log(path, f"acquired {held.token} {time.monotonic_ns()} {tag}")
        held.release()
    elif mode == "work":
        held = lease(float(rest[0])).acquire()
        log(path, f"enter {held.token} {time.monotonic_ns()} {tag}")
        while held.is_held:
            log(path, f"work {held.token} {time.monotonic_ns()} {tag}")
            time.sleep(0.005)
        log(path, f"lost {held.token} {time.monotonic_ns()} {tag} {held.lost_reason}")
    c.close()


if __name__ == "__main__":
    main()
