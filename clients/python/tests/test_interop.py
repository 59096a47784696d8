"""Rust (the `leasehold` CLI) and Python contenders on one lease and one
semaphore, under the fault cases of the Rust suite: a holder SIGKILLed, a
holder paused (SIGSTOP), Redis restarted empty. Plus quotas, the token cache
and elections shared across the two languages.

Every holder writes `work <token> <ns>` lines (CLOCK_MONOTONIC, one clock
for every process on the host) as a job writes to a fenced resource; the
analysis replays them in time order as that resource would.
"""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

import leasehold

from .conftest import Line, Procs, RedisServer, py_env, read_log, rust_bin, wait_for

pytestmark = pytest.mark.usefixtures("leasehold_bin")


def writes(log: Path) -> list[Line]:
    return sorted((x for x in read_log(log) if x[0] in ("enter", "work")), key=lambda x: x[2])


def stale(lines: list[Line]) -> list[Line]:
    """Writes a fenced resource would reject: a token lower than one it saw."""
    top, out = 0, []
    for x in lines:
        if x[1] < top:
            out.append(x)
        top = max(top, x[1])
    return out


def first(lines: list[Line], who: str) -> Line:
    return next(x for x in lines if x[3] == who)


def last(lines: list[Line], who: str) -> Line:
    return [x for x in lines if x[3] == who][-1]


def test_rust_holder_sigkilled_python_takes_over_at_expiry(
    redis_server: RedisServer, procs: Procs, tmp_path: Path
) -> None:
    log = tmp_path / "log"
    rs = procs.rust_run(redis_server.url, "fail", log, "1s")
    wait_for(lambda: any(x[3] == "rs" for x in writes(log)), 15, "the Rust holder to work")
    py = procs.python(redis_server.url, "fail", log, "work", "1.0")
    time.sleep(0.5)
    rs.send_signal(signal.SIGKILL)
    killed = time.monotonic_ns()
    wait_for(lambda: any(x[3] == "py" for x in writes(log)), 10, "Python to take over")
    w = writes(log)
    assert first(w, "py")[1] > last(w, "rs")[1], "tokens strictly increase across languages"
    assert last(w, "rs")[2] < first(w, "py")[2], "never two at once"
    took = (first(w, "py")[2] - killed) / 1e9
    assert took < 1.0 + 0.7, f"took {took:.2f}s with a 1 s TTL: the waiter sleeps to the exact expiry"
    assert not stale(w)
    py.send_signal(signal.SIGTERM)


def test_python_holder_sigkilled_rust_takes_over_at_expiry(
    redis_server: RedisServer, procs: Procs, tmp_path: Path
) -> None:
    log = tmp_path / "log"
    py = procs.python(redis_server.url, "fail2", log, "work", "1.0")
    wait_for(lambda: any(x[3] == "py" for x in writes(log)), 10, "the Python holder to work")
    procs.rust_run(redis_server.url, "fail2", log, "1s")
    time.sleep(0.5)
    py.send_signal(signal.SIGKILL)
    py.wait()
    killed = time.monotonic_ns()
    wait_for(lambda: any(x[3] == "rs" for x in writes(log)), 10, "Rust to take over")
    w = writes(log)
    assert first(w, "rs")[1] > last(w, "py")[1]
    assert last(w, "py")[2] < first(w, "rs")[2]
    assert (first(w, "rs")[2] - killed) / 1e9 < 1.7
    assert not stale(w)


def test_a_paused_python_holder_stops_on_its_own_deadline(
    redis_server: RedisServer, procs: Procs, tmp_path: Path
) -> None:
    log = tmp_path / "log"
    py = procs.python(redis_server.url, "pause", log, "work", "1.0")
    wait_for(lambda: any(x[3] == "py" for x in writes(log)), 10, "the Python holder to work")
    procs.rust_run(redis_server.url, "pause", log, "1s")
    time.sleep(0.3)
    py.send_signal(signal.SIGSTOP)
    stopped = time.monotonic_ns()
    try:
        wait_for(lambda: any(x[3] == "rs" for x in writes(log)), 10, "Rust to take over from the frozen holder")
    finally:
        py.send_signal(signal.SIGCONT)
    resumed = time.monotonic_ns()
    wait_for(lambda: any(x[0] == "lost" for x in read_log(log)), 10, "the resumed Python holder to see its loss")
    w = writes(log)
    lost = next(x for x in read_log(log) if x[0] == "lost")
    assert "safety deadline" in lost[4] or "renewal refused" in lost[4], lost
    # The frozen holder's writes after the successor's first are what fencing
    # rejects. At most the one write whose is_held check preceded the freeze
    # may come after it resumes (check-then-act: that is what tokens are for).
    late = [x for x in stale(w) if x[3] == "py"]
    assert len(late) <= 1, late
    assert all(x[2] >= resumed for x in late)
    assert all(x[2] < stopped or x[2] >= resumed for x in w if x[3] == "py")
    assert py.wait(5) == 0


def test_redis_restarted_python_holders_ttl_holds_off_a_shorter_rust_ttl(
    redis_server: RedisServer, procs: Procs, tmp_path: Path
) -> None:
    # Rule 8: after a reconnect the holder renews at once; the new server
    # refuses, and records the holder's TTL (3 s) in its quarantine, so that
    # a contender with a 1 s TTL waits for the Python holder's deadline.
    log = tmp_path / "log"
    procs.python(redis_server.url, "restart", log, "work", "3.0")
    wait_for(lambda: any(x[3] == "py" for x in writes(log)), 10, "the Python holder to work")
    procs.rust_run(redis_server.url, "restart", log, "1s")
    time.sleep(0.5)
    restarted = redis_server.restart()
    wait_for(lambda: any(x[3] == "rs" for x in writes(log)), 15, "Rust to start after the quarantine")
    w = writes(log)
    assert last(w, "py")[2] < first(w, "rs")[2], "never two at once across the restart"
    started = first(w, "rs")[2] / 1e9
    assert started >= restarted + 3.0 - 0.3, f"Rust started {started - restarted:.2f}s after the restart"
    assert not stale(w)
    lost = [x for x in read_log(log) if x[0] == "lost"]
    assert lost and "renewal refused" in lost[0][4]


def test_redis_restarted_rust_holders_ttl_holds_off_a_python_waiter(
    redis_server: RedisServer, procs: Procs, tmp_path: Path
) -> None:
    log = tmp_path / "log"
    procs.rust_run(redis_server.url, "restart2", log, "3s")
    wait_for(lambda: any(x[3] == "rs" for x in writes(log)), 15, "the Rust holder to work")
    procs.python(redis_server.url, "restart2", log, "work", "1.0")
    time.sleep(0.5)
    restarted = redis_server.restart()
    wait_for(lambda: any(x[3] == "py" for x in writes(log)), 15, "Python to start after the quarantine")
    w = writes(log)
    assert last(w, "rs")[2] < first(w, "py")[2], "never two at once across the restart"
    started = first(w, "py")[2] / 1e9
    assert started >= restarted + 3.0 - 0.3, f"Python started {started - restarted:.2f}s after the restart"
    assert not stale(w)


def max_inside(lines: list[Line]) -> int:
    """Most holders at once, each from its first to its last write."""
    spans: dict[tuple[int, str], list[int]] = {}
    for x in lines:
        s = spans.setdefault((x[1], x[3]), [x[2], x[2]])
        s[1] = x[2]
    ev = sorted([(a, 1) for a, _ in spans.values()] + [(b, -1) for _, b in spans.values()], key=lambda e: (e[0], -e[1]))
    now = top = 0
    for _, d in ev:
        now += d
        top = max(top, now)
    return top


def test_one_semaphore_rust_and_python_slot_freed_by_sigkill(
    redis_server: RedisServer, procs: Procs, tmp_path: Path
) -> None:
    log = tmp_path / "log"
    rs = procs.rust_run(redis_server.url, "pool", log, "1s", "--slots", "2")
    procs.python(redis_server.url, "pool", log, "work", "1.0", "--slots", "2", "--tag", "py1")
    wait_for(lambda: {x[3] for x in writes(log)} >= {"rs", "py1"}, 15, "both slots to be taken")
    procs.python(redis_server.url, "pool", log, "work", "1.0", "--slots", "2", "--tag", "py2")
    time.sleep(0.8)
    assert not any(x[3] == "py2" for x in writes(log)), "a third holder in a 2-slot semaphore"
    rs.send_signal(signal.SIGKILL)
    killed = time.monotonic_ns()
    wait_for(lambda: any(x[3] == "py2" for x in writes(log)), 10, "the freed slot to be taken")
    w = writes(log)
    assert (first(w, "py2")[2] - killed) / 1e9 < 1.7
    assert max_inside(w) <= 2
    with leasehold.Client.from_url(redis_server.url) as c:
        assert len(c.semaphore_status("pool")) == 2


def test_a_semaphore_slot_is_handed_down_one_line_of_rust_and_python_waiters(
    redis_server: RedisServer, procs: Procs, tmp_path: Path
) -> None:
    # One line across the two languages: a Python release hands the slot to
    # the Rust waiter first in line (not to a Python latecomer), and the Rust
    # holder's release hands it to the Python waiter behind it. TTL 10 s:
    # anything slower than a second or two was not a grant on release.
    log = tmp_path / "log"
    r = redis_server.cli()
    with leasehold.Client.from_url(redis_server.url) as c:
        holder = c.semaphore("mix", 1, ttl=10).acquire()
        rs = procs.rust_run(redis_server.url, "mix", log, "10s", "--slots", "1")
        wait_for(lambda: r.zcard("leasehold:{mix}:queue") == 1, 15, "the Rust waiter to queue")
        got: list[tuple[int, float]] = []

        def wait() -> None:
            s = c.semaphore("mix", 1, ttl=10).acquire(timeout=30)
            got.append((s.token or 0, time.monotonic()))
            s.release()

        t = threading.Thread(target=wait)
        t.start()
        wait_for(lambda: r.zcard("leasehold:{mix}:queue") == 2, 10, "the Python waiter to queue behind it")
        released = time.monotonic()
        holder.release()
        assert not c.semaphore("mix", 1, ttl=10).try_acquire(), "a latecomer took the slot the line waits for"
        wait_for(lambda: any(x[3] == "rs" for x in writes(log)), 5, "the Rust waiter to get the slot")
        rs_token = first(writes(log), "rs")[1]
        assert rs_token > (holder.token or 0)
        assert time.monotonic() - released < 3.0
        assert not got, "the Python waiter got a slot while the Rust waiter held the only one"
        rs.send_signal(signal.SIGTERM)
        stopped = time.monotonic()
        t.join(15)
        assert got, "the Python waiter never got the slot"
        token, at = got[0]
        assert token > rs_token
        assert at - stopped < 5.0, "the Rust holder's release did not hand the slot over"
        assert rs.wait(10) is not None
        assert last(writes(log), "rs")[2] / 1e9 < at, "the Python waiter started while the Rust holder still worked"


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([rust_bin(), *args], capture_output=True, text=True, timeout=30, env=py_env())


@pytest.mark.parametrize(
    ("per", "extra"),
    [
        ("1d", ["--tz", "Asia/Shanghai"]),
        ("1h", []),
        ("7h", []),
        ("1mo", ["--tz", "America/New_York"]),
        ("1h", ["--sliding"]),
    ],
)
def test_quotas_count_against_the_same_counters(redis_server: RedisServer, per: str, extra: list[str]) -> None:
    tz = extra[1] if extra[:1] == ["--tz"] else None
    with leasehold.Client.from_url(redis_server.url) as c:
        quota = c.quota(3, per, time_zone=tz, sliding="--sliding" in extra)
        first = cli(
            "quota", "take", "votes:u1", "--limit", "3", "--per", per, "--redis", redis_server.url, "--json", *extra
        )
        assert first.returncode == 0, first.stderr
        assert json.loads(first.stdout)["remaining"] == 2
        assert quota.take("votes:u1").remaining == 1
        assert quota.take("votes:u1").remaining == 0
        denied = cli("quota", "take", "votes:u1", "--limit", "3", "--per", per, "--redis", redis_server.url, *extra)
        assert denied.returncode == 1, denied.stdout + denied.stderr
        assert not quota.take("votes:u1").allowed


def test_token_cache_is_shared_with_the_cli(redis_server: RedisServer) -> None:
    url = redis_server.url
    got = cli("cache", "get", "crm", "--redis", url, "--", "sh", "-c", "echo from-rust; echo 3600")
    assert got.returncode == 0 and got.stdout.strip() == "from-rust", got.stderr
    fetched: list[int] = []

    def fetch() -> tuple[str, float]:
        fetched.append(1)
        return "from-python", 3600

    with leasehold.Client.from_url(url) as c:
        cache = c.token_cache(fetch_timeout=5)
        assert cache.get_or_refresh("crm", fetch) == "from-rust"
        assert not fetched, "a valid value is served, not fetched again"
        assert cache.get_or_refresh("other", fetch) == "from-python"
    again = cli("cache", "get", "other", "--redis", url, "--", "false")
    assert again.returncode == 0 and again.stdout.strip() == "from-python", again.stderr


def test_a_python_leaders_proclaim_reaches_a_rust_watcher(
    redis_server: RedisServer, procs: Procs, tmp_path: Path
) -> None:
    out = tmp_path / "watch"
    with leasehold.Client.from_url(redis_server.url) as c, open(out, "w") as f:
        leader = c.election("sched", ttl=2).campaign("py:1")
        w = subprocess.Popen([rust_bin(), "watch", "--name", "sched", "--redis", redis_server.url], stdout=f)
        procs.all.append(w)
        wait_for(lambda: "py:1" in out.read_text(), 10, "the watcher to see the Python leader")
        leader.proclaim("py:2")
        wait_for(lambda: "py:2" in out.read_text(), 10, "the watcher to see the proclaimed value")
        leader.resign()
        wait_for(lambda: "is free" in out.read_text(), 10, "the watcher to see the resignation")


def test_python_observes_a_rust_leader_and_follows_it(redis_server: RedisServer, procs: Procs, tmp_path: Path) -> None:
    log = tmp_path / "log"
    rs = procs.rust_run(redis_server.url, "lead", log, "1s", "--value", "rust:9")
    with leasehold.Client.from_url(redis_server.url) as c:
        e = c.election("lead", ttl=1)
        seen = []
        for leader in e.observe():
            seen.append(leader.value if leader else None)
            if leader and leader.value == "rust:9":
                break
        rs.send_signal(signal.SIGTERM)  # graceful: released at once
        t0 = time.monotonic()
        mine = e.campaign("py:1", timeout=5)
        assert time.monotonic() - t0 < 3
        assert mine.is_held
        mine.resign()
