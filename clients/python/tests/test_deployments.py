"""Sentinel and Cluster URLs, with real redis-server processes: the same
leases, waiting and tokens, and on Cluster the same per-slot server marker as
the Rust library (a Rust and a Python contender on one name)."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

import leasehold

from .conftest import Procs, RedisServer, free_port, read_log, redis_server_bin, rust_bin, wait_for


def test_sentinel_url_finds_the_master(make_redis: object, tmp_path: Path) -> None:
    master: RedisServer = make_redis()  # type: ignore[operator]
    port = free_port()
    conf = tmp_path / "sentinel.conf"
    conf.write_text(
        f"port {port}\nbind 127.0.0.1\ndir {tmp_path}\n"
        f"sentinel monitor mymaster 127.0.0.1 {master.port} 1\n"
        "sentinel down-after-milliseconds mymaster 60000\n"
    )
    s = subprocess.Popen([redis_server_bin(), str(conf), "--sentinel"], stdout=subprocess.DEVNULL)
    try:
        url = f"redis+sentinel://127.0.0.1:{port}/mymaster"
        c = wait_for(lambda: _try_connect(url), 10, "the sentinel to answer")
        with c:
            held = c.lease("s", ttl=2).acquire(timeout=5)
            got: list[float] = []

            def waiter() -> None:
                lease = c.lease("s", ttl=2).acquire(timeout=5)
                got.append(time.monotonic())
                lease.release()

            import threading

            t = threading.Thread(target=waiter)
            t.start()
            time.sleep(0.3)
            released = time.monotonic()
            held.release()
            t.join()
            assert got and got[0] - released < 1.0, "woken through the master's events"
            assert master.cli().hget("leasehold:{s}:lease", "kind") == "lease"
    finally:
        s.kill()
        s.wait()


def _try_connect(url: str) -> leasehold.Client | None:
    try:
        return leasehold.Client.from_url(url)
    except leasehold.LeaseholdError:
        return None


@pytest.fixture
def cluster(make_redis: object) -> str:
    if not shutil.which("redis-cli"):
        pytest.skip("redis-cli is not installed")
    nodes: list[RedisServer] = [
        make_redis("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", warm=False)  # type: ignore[operator]
        for _ in range(3)
    ]
    subprocess.run(
        ["redis-cli", "--cluster", "create", *[f"127.0.0.1:{n.port}" for n in nodes], "--cluster-yes"],
        check=True,
        capture_output=True,
        timeout=60,
    )
    url = "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in nodes)

    def ready() -> bool:
        try:
            with leasehold.Client.from_url(url) as c:
                c.status("probe")
            return True
        except leasehold.LeaseholdError:
            return False

    wait_for(ready, 20, "the cluster to serve every slot")
    return url


def test_cluster_rust_and_python_on_one_name(cluster: str, procs: Procs, tmp_path: Path) -> None:
    rust_bin()
    log = tmp_path / "log"
    rs = procs.rust_run(cluster, "cl", log, "1s")
    wait_for(lambda: any(x[3] == "rs" for x in read_log(log)), 20, "the Rust holder on the cluster")
    with leasehold.Client.from_url(cluster) as c:
        st = c.status("cl")
        assert st.holder is not None and st.holder.value == ""
        rust_token = st.holder.token
        got: list[float] = []

        import threading

        def waiter() -> None:
            lease = c.lease("cl", ttl=1).acquire(timeout=10)
            got.append(time.monotonic())
            assert (lease.token or 0) > rust_token
            lease.release()

        t = threading.Thread(target=waiter)
        t.start()
        time.sleep(0.5)
        released = time.monotonic()
        rs.send_signal(signal.SIGTERM)  # a graceful exit releases: the waiter is woken
        t.join()
        assert got and got[0] - released < 1.0
        # Both languages keep the server marker in the lease's own slot.
        import redis

        rc = redis.RedisCluster.from_url("redis://" + cluster.split("//")[1].split(",")[0], protocol=2)
        try:
            epoch = c._node.calls.keys("cl").epoch
            assert rc.get(epoch) is not None
            assert rc.keyslot(epoch) == rc.keyslot("leasehold:{cl}:lease")
        finally:
            rc.close()
