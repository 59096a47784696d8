"""What needs no Redis: the scripts are the Rust library's, URLs follow
url.rs, messages match the CLI's and hide passwords, and quota windows are
laid out exactly as src/quota.rs lays them out (its own test cases)."""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path

import pytest

import leasehold
from leasehold import _protocol as p
from leasehold import _quota as q
from leasehold._connect import parse
from leasehold.errors import AcquireTimeout, BadUrl, debug_duration, from_redis, human_duration, redact_url

from .conftest import REPO


def test_the_scripts_are_the_rust_librarys_byte_for_byte() -> None:
    # The package ships copies (pip install needs them inside it); a copy that
    # drifted from src/backend/scripts would speak another protocol.
    rust = REPO / "src" / "backend" / "scripts"
    if not rust.is_dir():
        pytest.skip("not in the leasehold source tree")
    shipped = Path(leasehold.__file__).parent / "scripts"
    names = sorted(f.name for f in rust.glob("*.lua"))
    assert sorted(f.name for f in shipped.glob("*.lua")) == names
    for n in names:
        assert (shipped / n).read_bytes() == (rust / n).read_bytes(), (
            f"{n} differs: cp src/backend/scripts/*.lua clients/python/leasehold/scripts/"
        )


def test_the_package_under_test_is_the_one_asked_for() -> None:
    installed = os.environ.get("LEASEHOLD_PACKAGE_DIR")
    if not installed:
        pytest.skip("testing the source tree")
    assert Path(leasehold.__file__).resolve().is_relative_to(Path(installed).resolve())
    assert (Path(leasehold.__file__).parent / "py.typed").exists()


def test_prelude_goes_in_front_of_exactly_the_scripts_the_protocol_names() -> None:
    prelude = (Path(leasehold.__file__).parent / "scripts" / "prelude.lua").read_text()
    with_prelude = {n for n, s in p.SCRIPTS.items() if s.body.startswith(prelude + "\n")}
    assert with_prelude == {
        "acquire",
        "renew",
        "release",
        "leave",
        "status",
        "observe",
        "sem_acquire",
        "sem_renew",
        "sem_release",
        "sem_leave",
    }


def test_urls_follow_the_rust_rules() -> None:
    t = parse("redis+sentinel://:pw@a:1,b:2/mymaster/3")
    assert (t.kind, t.hosts, t.master, t.password, t.db) == ("sentinel", [("a", 1), ("b", 2)], "mymaster", "pw", 3)
    t = parse("redis+cluster://u:p@a:1,b")
    assert (t.kind, t.hosts, t.user, t.password) == ("cluster", [("a", 1), ("b", 6379)], "u", "p")
    assert parse("rediss+cluster://a:1").tls
    assert parse("redis://h:1/2").kind == "single"
    for bad in [
        "http://h",
        "h:1",
        "redis+sentinel://a:1",
        "redis+cluster://a:x",
        "redis+cluster://",
        "rediss+sentinel://a:1/m",
    ]:
        with pytest.raises(BadUrl):
            parse(bad)


def test_passwords_never_appear_in_messages() -> None:
    assert redact_url("redis://user:s3cret@h:6379/0") == "redis://user:***@h:6379/0"
    assert redact_url("redis://:s3cret@h") == "redis://:***@h"
    assert redact_url("rediss://s3cret@h/") == "rediss://***@h/"
    assert redact_url("redis+sentinel://:pw@a:1,b:2/m") == "redis+sentinel://:***@a:1,b:2/m"
    with pytest.raises(BadUrl) as e:
        parse("redis+cluster://admin:s3cret@a:notaport")
    assert "s3cret" not in str(e.value) and "admin:***@" in str(e.value)
    with pytest.raises(BadUrl) as e:
        parse("ftp://admin:s3cret@host")
    assert "s3cret" not in str(e.value)


def test_messages_are_the_clis() -> None:
    assert str(AcquireTimeout("report", 5)) == 'lease "report" was not acquired within 5s'
    assert str(AcquireTimeout("r", 1.5)) == 'lease "r" was not acquired within 1.5s'
    assert debug_duration(0.25) == "250ms" and debug_duration(0) == "0ns"
    assert human_duration(600) == "10m" and human_duration(0.0025) == "2ms 500us" and human_duration(86400) == "1day"
    with pytest.raises(leasehold.BadConfig) as e:
        p.ttl_ms(0.05)
    assert str(e.value) == (
        "bad TTL 50ms: must be at least 100ms: below that the 2ms 500us drift margin and one Redis round trip "
        "leave no time to hold it"
    )
    with pytest.raises(leasehold.BadName) as n:
        p.validate_name("a b")
    assert str(n.value) == (
        'bad lease name "a b": use only letters, digits and - _ . : / @ + = (no spaces, braces or glob characters)'
    )


def test_script_errors_map_to_the_same_errors_as_rust() -> None:
    import redis

    e = from_redis("acquire", redis.ResponseError("LEASEHOLD_FOREIGN leasehold:{x}:lease string"))
    assert isinstance(e, leasehold.ForeignKey) and e.key == "leasehold:{x}:lease" and e.found == "string"
    k = from_redis("acquire", redis.ResponseError("LEASEHOLD_KIND sem"))
    assert isinstance(k, leasehold.NameInUse) and "in use as a semaphore" in str(k)
    assert isinstance(from_redis("x", redis.ResponseError("NOPERM no")), leasehold.Refused)
    assert from_redis("x", redis.ConnectionError("gone")).is_unavailable
    assert from_redis("x", redis.ResponseError("LOADING Redis is loading")).is_unavailable
    assert not from_redis("x", redis.ResponseError("ERR odd")).is_unavailable


def test_names_and_deadlines() -> None:
    p.validate_name("nightly-report.v2:eu/1")
    p.validate_name("a" * 200)
    for bad in ["", "a b", "a{b}", "x*", "\0", "é", "a" * 201, "cache#x"]:
        with pytest.raises(leasehold.BadName):
            p.validate_name(bad)
    p.validate_key_name("cache#x")
    # D = s + ttl - (ttl/100 + 2 ms), as deadline.rs.
    assert p.safety_deadline(100.0, 10_000) == pytest.approx(100.0 + 9.898)
    assert p.safety_deadline(0.0, 100) == pytest.approx(0.097)
    assert p.queue_margin_ms(10_000) == 1000 and p.queue_margin_ms(500) == 100
    assert p.retry_every(10_000) == 0.5 and p.retry_every(100) == pytest.approx(0.01)


def test_holder_ids() -> None:
    a, b = p.holder_id(), p.holder_id()
    assert a != b
    host, pid, hexpart = a.split("/")
    assert pid == str(os.getpid()) and len(hexpart) == 32 and int(hexpart, 16) >= 0
    assert p.readable(a) == f"{host} pid {pid}"


def test_cluster_epoch_tags_land_in_the_leases_slot() -> None:
    from redis.crc import key_slot

    k = p.keys_for("leasehold:", "report", cluster=True)
    assert k.epoch.startswith("leasehold:{e") and key_slot(k.epoch.encode()) == key_slot(k.lease.encode())
    # The smallest e<i> of the slot, as node.rs's SLOT_TAGS picks it.
    tag = k.epoch[len("leasehold:{") : -len("}:epoch")]
    slot = key_slot(k.lease.encode())
    assert all(key_slot(f"e{i}".encode()) != slot for i in range(int(tag[1:])))


def test_events_parse_as_notify_rs() -> None:
    g = p.parse_event("granted 17 a/1/ff 100 b/2/ee")
    assert g == p.Event("granted", 17, head="a/1/ff", claim=0.1, next="b/2/ee")
    assert p.parse_event("granted 17 a/1/ff 100 ") == p.Event("granted", 17, head="a/1/ff", claim=0.1)
    assert p.parse_event("released 5") == p.Event("released", 5)
    assert p.parse_event("released 5 h/1/x") == p.Event("released", 5, head="h/1/x")
    assert p.parse_event("failed 0 fetch it broke") == p.Event("failed", 0, message="fetch it broke")
    assert p.parse_event("nonsense") is None


def test_semaphore_replies_and_calls_follow_the_scripts() -> None:
    from leasehold._node import Calls

    assert p.parse_sem_acquire([1, "42"]) == p.Acquired(42)
    assert p.parse_sem_acquire([0, 1500, 2, 1, "41"]) == p.Full(1.5, 2, True, 41)
    assert p.parse_sem_acquire([0, 10, 2, 0, "0"]) == p.Full(0.01, 2, False, 0)
    assert p.parse_sem_acquire([2, 3000]) == p.Quarantined(3.0)
    assert p.parse_sem_acquire([3, 250, "h/1/ab"]) == p.Queued(0.25, "h/1/ab")
    c = Calls("leasehold:", False, 0)
    k = c.keys("pool")
    # A waiter queues ("wait", the lease's margin); no inbox: grants come on the name's channel.
    a = c.attempt(3, "pool", "me", 10_000, "v", True)
    assert a.script == "sem_acquire"
    assert a.keys == [k.slots, k.slotinfo, k.lease, k.epoch, k.queue, k.qinfo]
    assert a.args == ["me", 10_000, "v", 3, k.events, "", "wait", 1000, ""]
    assert c.attempt(3, "pool", "me", 10_000, "v", False).args[6] == "try"
    r = c.release(3, "pool", "me")
    assert (r.script, r.keys, r.args) == (
        "sem_release",
        [k.slots, k.slotinfo, k.lease, k.epoch, k.queue, k.qinfo],
        ["me", k.events, 3],
    )
    lv = c.leave(3, "pool", "me")
    assert (lv.script, lv.keys, lv.args) == (
        "sem_leave",
        [k.slots, k.slotinfo, k.lease, k.queue, k.qinfo],
        ["me", k.events, 3],
    )
    assert c.leave(None, "pool", "me").script == "leave"
    assert c.renew(True, "pool", "me", 10_000, expect=41).args == ["me", 10_000, 0, 41]
    assert c.renew(True, "pool", "me", 10_000).args == ["me", 10_000, 0, ""]


# --- quota windows: the cases of src/quota.rs's own tests -----------------------


def ms(s: str) -> int:
    return int(datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp() * 1000)


def win(now: str, per: str, tz: str = "UTC") -> q.Window:
    return q.window(ms(now), q.Period.parse(per), q.zone(tz)[0])


def test_a_day_is_the_local_day() -> None:
    w = win("2026-11-29T15:59:59Z", "1d", "Asia/Shanghai")
    assert (w.start, w.end, w.id) == (ms("2026-11-28T16:00:00Z"), ms("2026-11-29T16:00:00Z"), "2026-11-29T00:00:00")
    assert win("2026-11-29T16:00:00Z", "1d", "Asia/Shanghai").start == w.end
    w3 = win("2026-11-29T15:59:59Z", "24h", "Asia/Shanghai")
    assert (w3.start, w3.end) == (w.start, w.end)


def test_daylight_saving_days_are_23_or_25_hours() -> None:
    w = win("2026-03-08T12:00:00Z", "1d", "America/New_York")
    assert w.end - w.start == 23 * 3_600_000
    w = win("2026-11-01T12:00:00Z", "1d", "America/New_York")
    assert w.end - w.start == 25 * 3_600_000


def test_twelve_hour_windows_follow_the_wall_clock_on_fall_back_day() -> None:
    seen: list[tuple[str, int]] = []
    t = ms("2026-11-01T04:00:00Z")
    while t < ms("2026-11-02T05:00:00Z"):
        w = q.window(t, q.Period.parse("12h"), q.zone("America/New_York")[0])
        assert w.start <= t < w.end
        if not seen or seen[-1][0] != w.id:
            seen.append((w.id, (w.end - w.start) // 3_600_000))
        t += 600_000
    assert seen == [("2026-11-01T00:00:00", 13), ("2026-11-01T12:00:00", 12)]


def test_a_repeated_hour_shares_its_windows_counter() -> None:
    a = win("2026-11-01T05:20:00Z", "15m", "America/New_York")
    b = win("2026-11-01T06:20:00Z", "15m", "America/New_York")
    assert a.id == b.id
    assert (a.start, a.end) == (ms("2026-11-01T05:15:00Z"), ms("2026-11-01T05:30:00Z"))
    assert (b.start, b.end) == (ms("2026-11-01T06:15:00Z"), ms("2026-11-01T06:30:00Z"))
    assert a.last == ms("2026-11-01T06:30:00Z")
    h = win("2026-11-01T05:20:00Z", "1h", "America/New_York")
    assert (h.start, h.end) == (ms("2026-11-01T05:00:00Z"), ms("2026-11-01T07:00:00Z"))


def test_a_boundary_in_a_skipped_hour_ends_the_window_at_the_jump() -> None:
    w = win("2026-03-08T06:40:00Z", "45m", "America/New_York")
    assert (w.id, w.end) == ("2026-03-08T01:30:00", ms("2026-03-08T07:00:00Z"))
    assert win("2026-03-08T07:00:00Z", "45m", "America/New_York").id == "2026-03-08T03:00:00"


def test_months_years_weeks_and_long_hours() -> None:
    now = "2026-11-29T10:00:00Z"
    m = win(now, "1mo", "Asia/Shanghai")
    assert (m.start, m.end) == (ms("2026-10-31T16:00:00Z"), ms("2026-11-30T16:00:00Z"))
    qq = win(now, "3mo", "Asia/Shanghai")
    assert (qq.id, qq.end) == ("2026-10-01T00:00:00", ms("2026-12-31T16:00:00Z"))
    y = win(now, "1y")
    assert (y.start, y.end) == (ms("2026-01-01T00:00:00Z"), ms("2027-01-01T00:00:00Z"))
    for hours in (25, 36, 7):
        w = win(now, f"{hours}h", "Asia/Shanghai")
        assert w.end - w.start == hours * 3_600_000 and w.start % (hours * 3_600_000) == 0
        assert w.id == str(w.start)
    for per in ("7d", "1w"):
        w = win(now, per)
        assert (w.start, w.end) == (ms("2026-11-23T00:00:00Z"), ms("2026-11-30T00:00:00Z"))
    assert win("2026-11-30T00:00:00Z", "1w").start == ms("2026-11-30T00:00:00Z")


def test_periods_parse_and_refuse() -> None:
    assert q.Period.parse("1d") == q.Period("d", 1)
    assert q.Period.parse("2w") == q.Period("d", 14)
    assert q.Period.parse(" 36h ") == q.Period("ms", 36 * 3_600_000)
    assert q.Period.parse("3 mo") == q.Period("mo", 3)
    assert q.Period.parse("250ms").key_name() == "250ms"
    for bad in ["", "d", "1", "0s", "1.5h", "-1d", "1h30m", "20000000d", "101y", "1x", "99999999999999999999999s"]:
        with pytest.raises(leasehold.BadConfig):
            q.Period.parse(bad)


def test_sub_second_window_ids_print_as_jiff_does() -> None:
    assert q.civil_id(datetime(2026, 1, 2, 3, 4, 5, 250_000)) == "2026-01-02T03:04:05.25"
    assert q.civil_id(datetime(2026, 1, 2, 3, 4, 5)) == "2026-01-02T03:04:05"
    assert datetime(2026, 1, 1, tzinfo=timezone.utc).year == 2026
