"""The blocking client against a real redis-server: holding, renewing,
losing, waiting, handing over, semaphores, quarantine, elections, errors."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import leasehold
from leasehold import _protocol as p

from .conftest import Procs, RedisServer, py_env, read_log, wait_for


def test_a_lease_is_renewed_past_its_ttl_and_released(redis_server: RedisServer) -> None:
    with leasehold.Client.from_url(redis_server.url) as c:
        lease = c.lease("report", ttl=0.3)
        sent = time.monotonic()
        with lease:
            assert lease.is_held and lease.token
            # The deadline counts from the send instant, minus the drift.
            d = lease.deadline
            assert d is not None and d <= sent + 0.3 + 0.001
            time.sleep(1.0)  # more than three TTLs: only renewal keeps it
            assert lease.is_held and not lease.lost.is_set()
            st = c.status("report")
            assert st.holder is not None and st.holder.holder == lease.holder and st.holder.token == lease.token
        assert not lease.is_held and lease.lost.is_set() and lease.lost_reason == "released"
        assert c.status("report").holder is None


def test_tokens_strictly_increase_and_try_acquire_does_not_wait(redis_server: RedisServer) -> None:
    with leasehold.Client.from_url(redis_server.url) as c:
        tokens = []
        for _ in range(5):
            lease = c.lease("t", ttl=1)
            assert lease.try_acquire()
            tokens.append(lease.token or 0)
            other = c.lease("t", ttl=1)
            t0 = time.monotonic()
            assert not other.try_acquire()
            assert time.monotonic() - t0 < 0.5
            lease.release()
        assert tokens == sorted(set(tokens))


def test_a_release_wakes_the_waiter_at_once_and_fifo_order_holds(redis_server: RedisServer) -> None:
    with leasehold.Client.from_url(redis_server.url) as c:
        holder = c.lease("line", ttl=10).acquire()
        order: list[int] = []
        got: dict[int, float] = {}

        def wait(i: int) -> None:
            lease = c.lease("line", ttl=10).acquire(timeout=20)
            got[i] = time.monotonic()
            order.append(i)
            time.sleep(0.05)
            lease.release()

        threads = []
        for i in range(3):
            t = threading.Thread(target=wait, args=(i,))
            t.start()
            threads.append(t)
            time.sleep(0.2)  # arrive in order: 0, 1, 2
        released = time.monotonic()
        holder.release()
        for t in threads:
            t.join()
        assert order == [0, 1, 2], "the line is first come, first served"
        # TTL 10 s: only the release can have woken them.
        assert got[0] - released < 1.0


def test_acquire_timeout_leaves_the_queue(redis_server: RedisServer) -> None:
    r = redis_server.cli()
    with leasehold.Client.from_url(redis_server.url) as c:
        holder = c.lease("busy", ttl=10).acquire()
        t0 = time.monotonic()
        with pytest.raises(leasehold.AcquireTimeout) as e:
            c.lease("busy", ttl=10).acquire(timeout=0.3)
        assert 0.3 <= time.monotonic() - t0 < 3
        assert str(e.value) == 'lease "busy" was not acquired within 300ms'
        assert e.value.exit_code == 75
        assert r.zcard("leasehold:{busy}:queue") == 0, "a waiter that gave up must leave the line"
        holder.release()


def test_a_crashed_holders_lease_is_taken_when_it_expires_not_before(
    redis_server: RedisServer, procs: Procs, tmp_path: Path
) -> None:
    log = tmp_path / "log"
    holder = procs.python(redis_server.url, "crash", log, "work", "1.0")
    wait_for(lambda: any(x[0] == "work" for x in read_log(log)), 10, "the holder to work")
    with leasehold.Client.from_url(redis_server.url) as c:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        killed = time.monotonic()
        left = c.status("crash").holder
        assert left is not None
        lease = c.lease("crash", ttl=1).acquire(timeout=5)
        took = time.monotonic() - killed
        # Not before the dead holder's key expired (by Redis's clock); and
        # soon after: the waiter sleeps to the exact expiry.
        assert took >= left.ttl_left - 0.05
        assert took < left.ttl_left + 0.5
        last = max(x[2] for x in read_log(log)) / 1e9
        assert last < killed
        lease.release()


def test_a_refused_renewal_is_a_loss_reported_at_once(redis_server: RedisServer) -> None:
    r = redis_server.cli()
    reasons: list[str] = []
    with leasehold.Client.from_url(redis_server.url) as c:
        lease = c.lease("stolen", ttl=0.6, on_lost=reasons.append).acquire()
        # Someone "deletes anyone's lock": the renewal finds it gone.
        r.hset("leasehold:{stolen}:lease", "holder", "other/1/" + "0" * 32)
        assert lease.lost.wait(2)
        assert not lease.is_held
        assert lease.lost_reason is not None and lease.lost_reason.startswith(
            "renewal refused: now held by other pid 1"
        )
        # The event first (stop the work), then the callback, on the renewal thread.
        wait_for(lambda: reasons, 2, "on_lost")
        assert reasons == [lease.lost_reason]
        # Release after a refusal changes nothing in Redis (it would be refused).
        assert lease.release() is False
        assert r.hget("leasehold:{stolen}:lease", "holder") == "other/1/" + "0" * 32


def test_no_renewal_before_the_deadline_is_a_loss_at_the_deadline_and_never_recreated(
    redis_server: RedisServer,
) -> None:
    with leasehold.Client.from_url(redis_server.url, op_timeout=5) as c:
        lease = c.lease("frozen", ttl=0.5).acquire()
        redis_server.pause()  # no reply to anything
        try:
            assert lease.lost.wait(2)
            lost_at = time.monotonic()
            assert lease.lost_reason is not None and lease.lost_reason.startswith(
                "no renewal confirmed before the safety deadline"
            )
            d = lease._h.deadline if lease._h else 0
            assert lost_at >= d, "lost only at the deadline"
            assert lost_at < d + 0.3, "and at the deadline, even with a renewal in flight"
        finally:
            redis_server.resume()
        time.sleep(0.6)
        # The renewal that was in flight reached Redis after the expiry: it
        # must not have brought the lease back.
        assert c.status("frozen").holder is None
        lease.release()


def test_semaphore_admits_n_and_wakes_a_waiter_on_release(redis_server: RedisServer) -> None:
    with leasehold.Client.from_url(redis_server.url) as c:
        a = c.semaphore("pool", 2, ttl=5).acquire()
        b = c.semaphore("pool", 2, ttl=5).acquire()
        assert not c.semaphore("pool", 2, ttl=5).try_acquire()
        assert {h.holder for h in c.semaphore_status("pool")} == {a.holder, b.holder}
        got: list[float] = []

        def third() -> None:
            s = c.semaphore("pool", 2, ttl=5).acquire(timeout=5)
            got.append(time.monotonic())
            s.release()

        t = threading.Thread(target=third)
        t.start()
        time.sleep(0.3)
        released = time.monotonic()
        a.release()
        t.join()
        assert got and got[0] - released < 1.0, "woken by the release, not the 5 s TTL"
        with pytest.raises(leasehold.NameInUse):
            c.lease("pool", ttl=1).try_acquire()
        b.release()


def test_a_released_slot_goes_to_the_waiter_not_to_a_latecomer(redis_server: RedisServer) -> None:
    # Grant on release: the slot is the first waiter's the moment it is given
    # back; a try_acquire that comes right after the release finds it taken.
    r = redis_server.cli()
    with leasehold.Client.from_url(redis_server.url) as c:
        holder = c.semaphore("one", 1, ttl=10).acquire()
        got: list[tuple[int, float]] = []

        def wait() -> None:
            s = c.semaphore("one", 1, ttl=10).acquire(timeout=20)
            got.append((s.token or 0, time.monotonic()))
            time.sleep(0.3)
            s.release()

        t = threading.Thread(target=wait)
        t.start()
        wait_for(lambda: r.zcard("leasehold:{one}:queue") == 1, 10, "the waiter to queue")
        released = time.monotonic()
        holder.release()
        late = c.semaphore("one", 1, ttl=10)
        assert not late.try_acquire(), "a latecomer took the slot the waiter was in line for"
        assert late.token is None
        t.join()
        assert got, "the waiter never got the slot"
        token, at = got[0]
        assert token > (holder.token or 0)
        # TTL 10 s: only the release can have handed it over.
        assert at - released < 1.0
        assert r.zcard("leasehold:{one}:queue") == 0


def test_semaphore_waiters_get_slots_in_arrival_order(redis_server: RedisServer) -> None:
    r = redis_server.cli()
    with leasehold.Client.from_url(redis_server.url) as c:
        a = c.semaphore("fifo", 2, ttl=10).acquire()
        b = c.semaphore("fifo", 2, ttl=10).acquire()
        tokens: dict[int, int] = {}

        def wait(i: int) -> None:
            s = c.semaphore("fifo", 2, ttl=10).acquire(timeout=20)
            tokens[i] = s.token or 0
            time.sleep(0.2)
            s.release()

        threads = []
        for i in range(4):
            t = threading.Thread(target=wait, args=(i,))
            t.start()
            threads.append(t)
            # Arrive in order: 0, 1, 2, 3.
            wait_for(lambda n=i + 1: r.zcard("leasehold:{fifo}:queue") == n, 10, f"waiter {i} to queue")
        t0 = time.monotonic()
        a.release()
        b.release()
        for t in threads:
            t.join()
        # Tokens grow in hand-out order: the slots went first come, first served.
        assert len(tokens) == 4
        assert [tokens[i] for i in range(4)] == sorted(tokens.values()), f"served out of order: {tokens}"
        assert min(tokens.values()) > max(a.token or 0, b.token or 0)
        # TTL 10 s: every slot was handed over on release, not at an expiry.
        assert time.monotonic() - t0 < 5


def test_a_semaphore_waiter_that_gives_up_leaves_the_line(redis_server: RedisServer) -> None:
    r = redis_server.cli()
    with leasehold.Client.from_url(redis_server.url) as c:
        holder = c.semaphore("busy-sem", 1, ttl=10).acquire()
        t0 = time.monotonic()
        with pytest.raises(leasehold.AcquireTimeout):
            c.semaphore("busy-sem", 1, ttl=10).acquire(timeout=0.3)
        assert 0.3 <= time.monotonic() - t0 < 3
        assert r.zcard("leasehold:{busy-sem}:queue") == 0, "a waiter that gave up must leave the line"
        assert r.hlen("leasehold:{busy-sem}:qinfo") == 0
        # Nobody is in line: the slot given back is free for anyone, not
        # handed to the waiter that is gone (for its claim window).
        holder.release()
        s = c.semaphore("busy-sem", 1, ttl=10)
        assert s.try_acquire()
        s.release()


def test_a_granted_slot_is_claimed_only_with_its_token(redis_server: RedisServer) -> None:
    # The calls under a semaphore waiter: it queues when full, a release
    # grants it the slot (for the claim window), and the claim (sem_renew with
    # the grant's token) holds only with exactly that token.
    with leasehold.Client.from_url(redis_server.url) as c:
        node = c._node
        x, y = p.holder_id(), p.holder_id()
        first = node.attempt(1, "claim", x, 10_000, "", False)
        assert isinstance(first, p.Acquired)
        full = node.attempt(1, "claim", y, 10_000, "", True)
        assert isinstance(full, p.Full) and full.first and full.last_token == first.token
        assert node(node.calls.release(1, "claim", x))
        (granted,) = c.semaphore_status("claim")
        assert granted.holder == y and granted.token > full.last_token
        assert granted.ttl_left <= 1.0, "a grant lasts the claim window (TTL/10) until claimed"
        why = node.renew(True, "claim", y, 10_000, expect=granted.token + 1)
        assert why is not None and "handed on" in why
        assert node.renew(True, "claim", y, 10_000, expect=granted.token) is None
        assert c.semaphore_status("claim")[0].ttl_left > 5
        # A waiter that stops waiting gives back a slot handed to it too late.
        assert node(node.calls.leave(1, "claim", y))
        assert c.semaphore_status("claim") == []


def test_a_lease_and_a_semaphore_of_one_name_exclude_each_other(redis_server: RedisServer) -> None:
    with leasehold.Client.from_url(redis_server.url) as c:
        lease = c.lease("both", ttl=2).acquire()
        with pytest.raises(leasehold.NameInUse) as e:
            c.semaphore("both", 3, ttl=2).try_acquire()
        assert "in use as a lease" in str(e.value)
        lease.release()


def test_a_foreign_key_is_an_error_not_a_hang(redis_server: RedisServer) -> None:
    redis_server.cli().set("leasehold:{taken}:lease", "x")
    with leasehold.Client.from_url(redis_server.url) as c:
        with pytest.raises(leasehold.ForeignKey) as e:
            c.lease("taken", ttl=1).acquire(timeout=2)
        assert "leasehold:{taken}:lease already exists with type string" in str(e.value)


def test_first_use_of_a_fresh_server_waits_out_the_quarantine(make_redis: object) -> None:
    # A server up for less than the TTL may have lost writes of a previous
    # life: nobody starts until start + TTL (the {2, wait} reply).
    r: RedisServer = make_redis(warm=False)  # type: ignore[operator]
    started = time.monotonic()
    with leasehold.Client.from_url(r.url) as c:
        st = c.status("q")
        assert st.holder is None
        lease = c.lease("q", ttl=2.5).acquire(timeout=10)
        assert time.monotonic() - started >= 2.5 - 1.0, "acquired during the quarantine"
        lease.release()


def test_election_campaign_observe_proclaim_resign(redis_server: RedisServer) -> None:
    with leasehold.Client.from_url(redis_server.url) as c:
        e = c.election("sched", ttl=2)
        seen: list[tuple[str, str] | None] = []
        done = threading.Event()

        def watch() -> None:
            for leader in e.observe():
                seen.append((leader.value, leader.holder) if leader else None)
                if len(seen) == 4:
                    done.set()
                    return

        t = threading.Thread(target=watch, daemon=True)
        t.start()
        wait_for(lambda: seen, 5, "the first observation")
        leader = e.campaign("host-a:1")
        wait_for(lambda: len(seen) >= 2, 5, "the new leader to be observed")
        leader.proclaim("host-a:2")
        wait_for(lambda: len(seen) >= 3, 5, "the proclaimed value to be observed")
        leader.resign()
        assert done.wait(5)
        assert seen[0] is None
        assert [s[0] if s else None for s in seen[1:]] == ["host-a:1", "host-a:2", None]
        assert e.leader() is None


def test_close_stops_every_thread_and_atexit_releases(redis_server: RedisServer, tmp_path: Path) -> None:
    before = set(threading.enumerate())
    c = leasehold.Client.from_url(redis_server.url)
    lease = c.lease("closing", ttl=5).acquire()
    c.close()
    assert not lease.is_held
    assert c.lease  # still an object, but closed:
    with pytest.raises(leasehold.BadConfig):
        c.lease("x", ttl=1).try_acquire()
    time.sleep(0.1)
    assert {t for t in threading.enumerate() if t.is_alive()} <= before
    # A process that exits without releasing gives its lease back at exit.
    script = (
        "import leasehold, sys; c = leasehold.Client.from_url(sys.argv[1]); "
        "c.lease('exiting', ttl=30).acquire(); print('held', flush=True)"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, redis_server.url], env=py_env(), capture_output=True, timeout=30, text=True
    )
    assert out.stdout.strip() == "held", out.stderr
    with leasehold.Client.from_url(redis_server.url) as c2:
        assert c2.status("exiting").holder is None, "released at interpreter exit, not after the 30 s TTL"


def test_connect_errors_name_the_server_but_never_the_password(make_redis: object) -> None:
    r: RedisServer = make_redis("--requirepass", "s3cret")  # type: ignore[operator]
    with pytest.raises(leasehold.AuthFailed) as e:
        leasehold.Client.from_url(f"redis://:wrong-pw@127.0.0.1:{r.port}")
    assert "wrong-pw" not in str(e.value) and ":***@127.0.0.1" in str(e.value)
    with pytest.raises(leasehold.Unreachable) as u:
        leasehold.Client.from_url("redis://:s3cret@127.0.0.1:1")
    assert "s3cret" not in str(u.value)


def test_the_password_may_come_from_the_environment(make_redis: object, monkeypatch: pytest.MonkeyPatch) -> None:
    r: RedisServer = make_redis("--requirepass", "s3cret")  # type: ignore[operator]
    monkeypatch.setenv("LEASEHOLD_REDIS_PASSWORD", "s3cret")
    with leasehold.Client.from_url(r.url) as c:
        # A fresh server: acquire waits out its first-use quarantine (1 s).
        lease = c.lease("env", ttl=1).acquire(timeout=5)
        assert lease.is_held
        lease.release()


def test_holder_ids_are_per_acquisition(redis_server: RedisServer) -> None:
    with leasehold.Client.from_url(redis_server.url) as c:
        lease = c.lease("ids", ttl=1)
        lease.acquire()
        first = lease.holder
        lease.release()
        lease.acquire()
        assert lease.holder != first and p.readable(lease.holder or "").endswith(f"pid {__import__('os').getpid()}")
        lease.release()


def test_a_grant_to_a_dead_waiter_lapses_after_the_claim_window_and_the_next_comes(
    redis_server: RedisServer, procs: Procs, tmp_path: Path
) -> None:
    # Grant on release: the lease goes to the head of the line, here a waiter
    # that was SIGKILLed. The waiter after it is told (`granted … <next>`) and
    # comes when the grant's claim window (TTL/10 = 1 s) lapses — not before,
    # and not at its own next wake-up (the released holder's 10 s TTL).
    log = tmp_path / "log"
    with leasehold.Client.from_url(redis_server.url) as c:
        holder = c.lease("g", ttl=10).acquire()
        dead = procs.python(redis_server.url, "g", log, "wait")
        wait_for(lambda: redis_server.cli().zcard("leasehold:{g}:queue") == 1, 10, "the first waiter to queue")
        got: list[float] = []
        t = threading.Thread(target=lambda: got.append(c.lease("g", ttl=10).acquire(timeout=20) and time.monotonic()))
        t.start()
        wait_for(lambda: redis_server.cli().zcard("leasehold:{g}:queue") == 2, 10, "the second waiter to queue")
        dead.send_signal(signal.SIGKILL)
        dead.wait()
        released = time.monotonic()
        holder.release()
        t.join()
        took = got[0] - released
        assert took >= 1.0 - 0.05, f"the dead head's grant was taken after {took:.2f}s, inside its claim window"
        assert took < 3.0, f"took {took:.2f}s: the next waiter was not told when the grant lapses"
