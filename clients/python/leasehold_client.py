"""A reference client for leasehold's Redis protocol, in Python (redis-py).

It follows docs/protocol.md and runs the very same Lua files as the Rust
library (src/backend/scripts/*.lua), so Python and Rust processes can take
part in the same lease or semaphore safely.

    client = Client("redis://127.0.0.1:6379")
    lease = client.acquire("nightly-report", ttl_ms=10_000)
    try:
        do_work(fencing_token=lease.token)   # stop when lease.lost is set
    finally:
        lease.release()
"""

import os
import secrets
import socket
import threading
import time

import redis

SCRIPTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "src", "backend", "scripts")
_NAMES = ["acquire", "renew", "release", "leave", "sem_acquire", "sem_renew", "sem_release"]
# Scripts that run after prelude.lua (docs/protocol.md).
_WITH_PRELUDE = {"acquire", "renew", "release", "leave", "sem_acquire"}


def drift_ms(ttl_ms):
    """Clock drift allowed per TTL: 1 % plus 2 ms."""
    return ttl_ms // 100 + 2


def queue_margin_ms(ttl_ms):
    """How long past its next attempt a waiter's place in line is kept."""
    return min(max(ttl_ms // 10, 100), 1000)


def holder_id():
    host = socket.gethostname().replace("/", "_")
    return f"{host}/{os.getpid()}/{secrets.token_hex(16)}"


class Lost(Exception):
    pass


class Lease:
    """A held lease or semaphore slot. Renewed by a thread every TTL/3;
    `lost` is set when a renewal is refused or none is confirmed before the
    safety deadline (sent + TTL - drift, on the monotonic clock)."""

    def __init__(self, client, kind, name, holder, token, ttl_ms, sent, first_ttl_ms=None):
        self.client, self.kind, self.name = client, kind, name
        self.holder, self.token, self.ttl_ms = holder, token, ttl_ms
        # A lease handed over on release lasts only its claim window until the
        # first renewal confirms it.
        first = first_ttl_ms or ttl_ms
        self.deadline = sent + (first - drift_ms(first)) / 1000.0
        self._first_every = first / 3000.0
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._keep, daemon=True)
        self._thread.start()

    def is_held(self):
        return not self.lost.is_set() and time.monotonic() < self.deadline

    def _renew_once(self):
        k = self.client.keys(self.name)
        if self.kind == "lease":
            reply = self.client.scripts["renew"](keys=[k["lease"], k["epoch"]], args=[self.holder, self.ttl_ms])
        else:
            reply = self.client.scripts["sem_renew"](keys=[k["slots"], k["slotinfo"]], args=[self.holder, self.ttl_ms])
        return int(reply[0]) == 1

    def _keep(self):
        every = self.ttl_ms / 3000.0
        retry = max(self.ttl_ms / 20000.0, 0.01)
        next_at = time.monotonic() + min(every, self._first_every)
        while not self._stop.is_set():
            wait = min(next_at, self.deadline) - time.monotonic()
            if wait > 0 and self._stop.wait(wait):
                return
            now = time.monotonic()
            if now >= self.deadline:
                self.lost.set()
                return
            try:
                ok = self._renew_once()
            except redis.RedisError:
                next_at = min(time.monotonic() + retry, self.deadline)
                continue
            if not ok:
                self.lost.set()
                return
            # The deadline counts from when the renewal was sent.
            self.deadline = now + (self.ttl_ms - drift_ms(self.ttl_ms)) / 1000.0
            next_at = now + every

    def release(self):
        """Stops renewal (waiting for an in-flight renewal), then releases."""
        self._stop.set()
        self._thread.join()
        if self.lost.is_set():
            return False
        k = self.client.keys(self.name)
        if self.kind == "lease":
            r = self.client.scripts["release"](
                keys=[k["lease"], k["queue"], k["qinfo"]], args=[self.holder, k["events"], ""])
        else:
            r = self.client.scripts["sem_release"](keys=[k["slots"], k["slotinfo"]], args=[self.holder, k["events"]])
        return int(r) == 1


class Client:
    def __init__(self, url, prefix="leasehold:"):
        self.r = redis.Redis.from_url(url)
        self.prefix = prefix
        self.scripts = {}
        with open(os.path.join(SCRIPTS, "prelude.lua")) as f:
            prelude = f.read()
        for name in _NAMES:
            with open(os.path.join(SCRIPTS, name + ".lua")) as f:
                body = f.read()
            if name in _WITH_PRELUDE:
                body = prelude + "\n" + body
            self.scripts[name] = self.r.register_script(body)

    def keys(self, name):
        p, t = self.prefix, "{" + name + "}"
        return {
            "lease": f"{p}{t}:lease", "queue": f"{p}{t}:queue", "qinfo": f"{p}{t}:qinfo",
            "slots": f"{p}{t}:slots", "slotinfo": f"{p}{t}:slotinfo",
            "events": f"{p}{t}:events", "epoch": f"{p}epoch",
        }

    def _attempt(self, kind, name, holder, ttl_ms, value, limit):
        k = self.keys(name)
        if kind == "lease":
            reply = self.scripts["acquire"](
                keys=[k["lease"], k["queue"], k["qinfo"], k["epoch"], k["slots"]],
                args=[holder, ttl_ms, value, k["events"], "wait", queue_margin_ms(ttl_ms)])
        else:
            reply = self.scripts["sem_acquire"](
                keys=[k["slots"], k["slotinfo"], k["lease"], k["epoch"]],
                args=[holder, ttl_ms, value, limit, k["events"]])
        status = int(reply[0])
        if status == 1:
            return int(reply[1]), 0.0
        # Held: sleep to the holder's expiry; quarantine or queued: as told.
        return None, max(int(reply[1]), 0) / 1000.0

    def acquire(self, name, ttl_ms=10_000, value="", timeout=None, limit=None):
        """Waits until the lease (or, with `limit`, one of `limit` slots) is ours."""
        kind = "lease" if limit is None else "slot"
        holder = holder_id()
        k = self.keys(name)
        give_up = None if timeout is None else time.monotonic() + timeout
        pubsub = self.r.pubsub(ignore_subscribe_messages=False)
        pubsub.subscribe(k["events"])
        # Subscribe first and wait for the confirmation: a release published
        # after our failed attempt cannot be missed.
        while True:
            m = pubsub.get_message(timeout=1.0)
            if m and m["type"] == "subscribe":
                break
        try:
            last_queued = None
            while True:
                sent = time.monotonic()
                token, wait = self._attempt(kind, name, holder, ttl_ms, value, limit)
                if token is not None:
                    return Lease(self, kind, name, holder, token, ttl_ms, sent)
                last_queued = sent
                wait += secrets.randbelow(3000) / 1e6
                until = time.monotonic() + wait
                if give_up is not None:
                    if time.monotonic() >= give_up:
                        if kind == "lease":
                            self.scripts["leave"](
                                keys=[k["lease"], k["queue"], k["qinfo"]], args=[holder, k["events"]])
                        raise TimeoutError(f"lease {name!r} not acquired within {timeout}s")
                    until = min(until, give_up)
                while True:
                    left = until - time.monotonic()
                    if left <= 0:
                        break
                    m = pubsub.get_message(timeout=left)
                    if not m or m["type"] != "message":
                        continue
                    parts = m["data"].decode().split(" ")
                    if parts[0] == "granted" and len(parts) >= 4 and parts[2] == holder:
                        # Handed to us on release: ours until the claim window,
                        # counted from our last queued attempt (processed before
                        # the release), unless claimed by a renewal first.
                        token, claim_ms = int(parts[1]), int(parts[3])
                        left_s = last_queued + (claim_ms - drift_ms(claim_ms)) / 1000.0 - time.monotonic()
                        if left_s > claim_ms / 2000.0:
                            return Lease(self, kind, name, holder, token, ttl_ms, last_queued, claim_ms)
                        claim_sent = time.monotonic()
                        r = self.scripts["renew"](keys=[k["lease"], k["epoch"]], args=[holder, ttl_ms])
                        if int(r[0]) == 1:
                            return Lease(self, kind, name, holder, token, ttl_ms, claim_sent)
                        break
                    if parts[0] == "granted" and len(parts) >= 5 and parts[4] == holder:
                        # Next in line: come when that grant lapses unless claimed.
                        until = min(until, time.monotonic() + int(parts[3]) / 1000.0 + 0.001)
                        continue
                    if parts[0] != "released":
                        continue
                    head = parts[2] if len(parts) > 2 else ""
                    # A release names the first waiter in line; only it comes.
                    if head == "" or head == holder:
                        break
        finally:
            pubsub.close()

    def semaphore(self, name, limit, ttl_ms=10_000, value="", timeout=None):
        return self.acquire(name, ttl_ms=ttl_ms, value=value, timeout=timeout, limit=limit)
