"""One shared pub/sub connection per client, for every lease it waits on
(src/backend/notify.rs, in a thread).

- Channels are reference-counted: the first waiter on a name subscribes (and
  waits for Redis to confirm, so that no release published after that can be
  missed), the last one to leave unsubscribes after a short linger.
- A release hands the lease to the waiter first in line and names it; only
  that waiter, in whichever process it lives, is woken — with the grant in
  hand. The waiter after it is told when that grant lapses unless claimed. A
  release naming nobody wakes one local waiter.
- Nothing waits on this connection unboundedly: a subscription request is
  answered within REQUEST_TIMEOUT (also while reconnecting), and an idle
  connection is PINGed every KEEPALIVE, so that a connection that stalled
  without closing (a partition) is found and replaced.
- After a reconnect every channel is subscribed again, every waiter is woken
  once (events may have been missed), and the reconnect hooks run: holders
  renew at once (protocol rule 8).

The asyncio client uses the same thread: its waiters' wake-ups are handed to
their event loop with `call_soon_threadsafe`.
"""

from __future__ import annotations

import logging
import select
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import redis

from . import _protocol as p
from ._connect import PubSubSource
from .errors import Refused

log = logging.getLogger("leasehold")

#: How long a channel nobody waits on stays subscribed: a process that takes
#: the same lease again and again then pays no SUBSCRIBE round trips.
LINGER = 2.0

#: The longest pause between reconnect attempts: after a restart, holders must
#: re-announce their leases within the server's 3 s quarantine floor
#: (protocol rule 8).
RECONNECT_MAX = 1.0


class Mailbox:
    """What one waiter is told: woken, and maybe handed a grant or told when
    the grant before its own lapses."""

    def __init__(self, wake: Callable[[], None]) -> None:
        self._wake = wake
        self.grant: tuple[int, float] | None = None
        self.on_deck: float | None = None

    def notify(self) -> None:
        try:
            self._wake()
        except RuntimeError:
            # An asyncio loop that has closed: nobody waits there any more.
            pass

    def take_grant(self) -> tuple[int, float] | None:
        g, self.grant = self.grant, None
        return g

    def take_on_deck(self) -> float | None:
        d, self.on_deck = self.on_deck, None
        return d


class _Channel:
    def __init__(self, name: str) -> None:
        self.name = name
        self.refs = 0
        self.idle_since: float | None = None
        self.waiters: dict[str, Mailbox] = {}
        self.listeners: list[Callable[[p.Event], None]] = []


class Subscription:
    """A reference to one subscribed channel; `close()` gives it back."""

    def __init__(self, notifier: Notifier, channel: _Channel) -> None:
        self._n = notifier
        self._ch = channel
        self._mailboxes: list[str] = []
        self._listeners: list[Callable[[p.Event], None]] = []
        self._closed = False

    @property
    def name(self) -> str:
        return self._ch.name

    def confirmed(self) -> bool:
        with self._n._lock:
            return self._ch.name in self._n._confirmed

    def ensure_confirmed(self) -> bool:
        """Subscribes again if the connection was lost; cheap when confirmed.
        False while Redis has not confirmed (down, or refused): the waiter
        then caps its sleeps."""
        refused = self._n._request(self._ch.name)
        if refused:
            raise Refused("SUBSCRIBE", refused)
        return self.confirmed()

    def mailbox(self, waiter: str, wake: Callable[[], None]) -> Mailbox:
        mb = Mailbox(wake)
        with self._n._lock:
            self._ch.waiters[waiter] = mb
        self._mailboxes.append(waiter)
        return mb

    def listen(self, fn: Callable[[p.Event], None]) -> None:
        """Calls `fn` (on the subscriber's thread: keep it short) with every event."""
        with self._n._lock:
            self._ch.listeners.append(fn)
        self._listeners.append(fn)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with self._n._lock:
            for w in self._mailboxes:
                self._ch.waiters.pop(w, None)
            for fn in self._listeners:
                if fn in self._ch.listeners:
                    self._ch.listeners.remove(fn)
            self._ch.refs -= 1
            if self._ch.refs == 0:
                self._ch.idle_since = time.monotonic()
        self._n._poke()


class Notifier:
    def __init__(self, source: PubSubSource, what: str) -> None:
        self._source = source
        self._what = what
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._channels: dict[str, _Channel] = {}
        self._confirmed: set[str] = set()
        self._refused: dict[str, str] = {}
        # SUBSCRIBE/UNSUBSCRIBE to send, in order.
        self._outbox: list[tuple[str, str]] = []
        # Channels whose SUBSCRIBE was sent and not yet answered, in order.
        self._awaiting: list[str] = []
        self._up = False
        # The first connection attempt has ended (either way).
        self._tried = False
        self._closed = False
        self._hooks: list[Callable[[], None]] = []
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._thread: threading.Thread | None = None

    # --- called by waiters ------------------------------------------------

    def start(self) -> None:
        with self._lock:
            if self._thread is not None or self._closed:
                return
            self._thread = threading.Thread(target=self._run, name="leasehold-notify", daemon=True)
            self._thread.start()

    def on_reconnect(self, hook: Callable[[], None]) -> None:
        """`hook` runs (on this thread) each time the connection was
        re-established: the server may have restarted."""
        with self._lock:
            self._hooks.append(hook)
        self.start()

    def subscribe(self, channel: str) -> Subscription:
        """Joins `channel`; returns once Redis confirmed, or as soon as it is
        known that it could not (then `confirmed()` is false).

        Raises Refused when Redis refuses SUBSCRIBE (an ACL without channels)."""
        self.start()
        with self._lock:
            ch = self._channels.get(channel)
            if ch is None:
                ch = self._channels[channel] = _Channel(channel)
            ch.refs += 1
            ch.idle_since = None
        sub = Subscription(self, ch)
        refused = self._request(channel)
        if refused:
            sub.close()
            raise Refused("SUBSCRIBE", refused)
        return sub

    def _request(self, channel: str) -> str | None:
        """None when confirmed (or down: then confirmed() stays false), else
        Redis's refusal."""
        deadline = time.monotonic() + p.REQUEST_TIMEOUT
        with self._lock:
            if channel in self._confirmed:
                return None
            self._refused.pop(channel, None)
            # A subscriber that was just started gets its first connection
            # attempt's time (bounded) before a waiter falls back to timers.
            while not self._up and not self._tried and not self._closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            if not self._up:
                return None
            if ("sub", channel) not in self._outbox and channel not in self._awaiting:
                self._outbox.append(("sub", channel))
                self._poke()
            while channel not in self._confirmed and channel not in self._refused and self._up:
                left = deadline - time.monotonic()
                if left <= 0 or self._closed:
                    break
                self._cond.wait(left)
            return self._refused.get(channel)

    def close(self, timeout: float = 2.0) -> None:
        with self._lock:
            self._closed = True
            t = self._thread
        self._poke()
        if t is not None and t is not threading.current_thread():
            t.join(timeout)
            if t.is_alive():
                # Still connecting (bounded by the connect timeout): it sees
                # `_closed` and exits by itself; its wake-up socket must stay.
                return
        for s in (self._wake_r, self._wake_w):
            try:
                s.close()
            except OSError:
                pass

    def _poke(self) -> None:
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass

    # --- the thread -------------------------------------------------------------

    def _wake_all(self) -> None:
        with self._lock:
            chans = list(self._channels.values())
            boxes = [mb for ch in chans for mb in ch.waiters.values()]
            listeners = [fn for ch in chans for fn in ch.listeners]
        for mb in boxes:
            mb.notify()
        for fn in listeners:
            _call(fn, p.RECONNECTED)

    def _deliver(self, channel: str, ev: p.Event) -> None:
        with self._lock:
            ch = self._channels.get(channel)
            if ch is None:
                return
            wake: list[Mailbox] = []
            if ev.kind == "released":
                if ev.head:
                    mb = ch.waiters.get(ev.head)
                    if mb:
                        wake.append(mb)
                elif ch.waiters:
                    # One local waiter per release naming nobody (waiters
                    # in line are named; one whose place lapsed is not).
                    wake.append(next(iter(ch.waiters.values())))
            elif ev.kind == "granted":
                mb = ch.waiters.get(ev.head)
                if mb:
                    mb.grant = (ev.token, ev.claim)
                    wake.append(mb)
                nxt = ch.waiters.get(ev.next) if ev.next else None
                if nxt:
                    nxt.on_deck = time.monotonic() + ev.claim
                    wake.append(nxt)
            listeners = list(ch.listeners)
        for mb in wake:
            mb.notify()
        for fn in listeners:
            _call(fn, ev)

    def _run(self) -> None:
        backoff = 0.05
        attempt = 0
        connected_before = False
        while True:
            with self._lock:
                if self._closed:
                    return
            conn: Any
            try:
                conn = self._source.connect(attempt)
            except Exception as e:  # noqa: BLE001 - any failure to connect means "down"
                with self._lock:
                    self._tried = True
                    self._cond.notify_all()
                attempt += 1
                log.debug("%s: subscriber connection failed: %s; retrying in %.2fs", self._what, e, backoff)
                if self._pause(backoff):
                    return
                backoff = min(backoff * 2, RECONNECT_MAX)
                continue
            attempt += 1
            connected_at = time.monotonic()
            with self._lock:
                self._up = True
                self._tried = True
                self._cond.notify_all()
                self._confirmed.clear()
                self._awaiting.clear()
                self._outbox = [("sub", n) for n, ch in self._channels.items()]
                resync = {n for _, n in self._outbox}
                hooks = list(self._hooks) if connected_before else []
            if connected_before:
                log.debug("%s: subscriber reconnected", self._what)
            connected_before = True
            for h in hooks:
                _call0(h)
            if not resync:
                self._wake_all()
            try:
                self._serve(conn, resync)
            except (redis.RedisError, OSError, ValueError) as e:
                log.debug("%s: subscriber connection lost: %s", self._what, e)
            finally:
                try:
                    conn.disconnect()
                except Exception:  # noqa: BLE001 - closing a broken connection
                    pass
                with self._lock:
                    self._up = False
                    self._confirmed.clear()
                    self._awaiting.clear()
                    self._cond.notify_all()
            self._wake_all()
            if time.monotonic() - connected_at < 1.0:
                # A connection that fails at once is not retried in a tight loop.
                if self._pause(backoff):
                    return
                backoff = min(backoff * 2, RECONNECT_MAX)
            else:
                backoff = 0.05

    def _pause(self, d: float) -> bool:
        """Sleeps `d` (woken by close); True when closed."""
        end = time.monotonic() + d
        while True:
            with self._lock:
                if self._closed:
                    return True
            left = end - time.monotonic()
            if left <= 0:
                return False
            select.select([self._wake_r], [], [], left)
            self._drain_wake()

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(512):
                pass
        except (BlockingIOError, OSError):
            pass

    def _serve(self, conn: Any, resync: set[str]) -> None:
        last_io = time.monotonic()
        ping_sent: float | None = None
        while True:
            now = time.monotonic()
            with self._lock:
                if self._closed:
                    return
                out, self._outbox = self._outbox, []
                # Channels nobody has used for LINGER go.
                for name, ch in list(self._channels.items()):
                    if ch.refs == 0 and ch.idle_since is not None and now - ch.idle_since >= LINGER:
                        del self._channels[name]
                        self._confirmed.discard(name)
                        resync.discard(name)
                        out.append(("unsub", name))
                for kind, name in out:
                    if kind == "sub":
                        self._awaiting.append(name)
            for kind, name in out:
                conn.send_command("SUBSCRIBE" if kind == "sub" else "UNSUBSCRIBE", name, check_health=False)
            if conn.can_read(0):
                try:
                    resp = conn.read_response()
                except redis.ResponseError as e:
                    # A SUBSCRIBE refused (ACL without the channel): the
                    # connection is fine; that channel's waiters use timers.
                    refused = self._refuse(str(e))
                    if refused is not None and refused in resync:
                        resync.discard(refused)
                        if not resync:
                            self._wake_all()
                    continue
                self._handle(resp, resync)
                last_io = time.monotonic()
                ping_sent = None
                continue
            if ping_sent is not None and now - ping_sent > p.REQUEST_TIMEOUT:
                raise redis.TimeoutError("the subscriber connection did not answer a PING")
            if ping_sent is None and now - last_io >= p.KEEPALIVE:
                # A partition does not close the connection: ask.
                conn.send_command("PING", check_health=False)
                ping_sent = now
                continue
            wait = (ping_sent + p.REQUEST_TIMEOUT if ping_sent else last_io + p.KEEPALIVE) - now
            with self._lock:
                idle = [ch.idle_since for ch in self._channels.values() if ch.refs == 0 and ch.idle_since]
            if idle:
                wait = min(wait, min(idle) + LINGER - now)
            sock = getattr(conn, "_sock", None)
            fds: list[Any] = [self._wake_r] + ([sock] if sock is not None else [])
            select.select(fds, [], [], max(wait, 0.0) if sock is not None else min(max(wait, 0.0), 0.05))
            self._drain_wake()

    def _handle(self, resp: object, resync: set[str]) -> None:
        if isinstance(resp, redis.ResponseError):
            raise resp
        if isinstance(resp, (bytes, str)):
            return  # PONG outside subscribed mode
        if not isinstance(resp, list) or not resp:
            return
        kind = p._s(resp[0])
        if kind == "message" and len(resp) >= 3:
            ev = p.parse_event(p._s(resp[2]))
            if ev is not None:
                self._deliver(p._s(resp[1]), ev)
        elif kind == "subscribe" and len(resp) >= 2:
            name = p._s(resp[1])
            with self._lock:
                if name in self._awaiting:
                    self._awaiting.remove(name)
                if name in self._channels:
                    self._confirmed.add(name)
                self._cond.notify_all()
            if name in resync:
                resync.discard(name)
                if not resync:
                    self._wake_all()
        elif kind == "unsubscribe" and len(resp) >= 2:
            name = p._s(resp[1])
            with self._lock:
                if name in self._channels and name not in self._awaiting:
                    # Wanted again meanwhile: subscribe again.
                    self._outbox.append(("sub", name))
                    self._confirmed.discard(name)

    def _refuse(self, message: str) -> str | None:
        with self._lock:
            name = self._awaiting.pop(0) if self._awaiting else None
            if name is not None:
                self._refused[name] = message
            self._cond.notify_all()
            return name


def _call(fn: Callable[[p.Event], None], ev: p.Event) -> None:
    try:
        fn(ev)
    except Exception:
        log.exception("leasehold: an event listener failed")


def _call0(fn: Callable[[], None]) -> None:
    try:
        fn()
    except Exception:
        log.exception("leasehold: a reconnect hook failed")
