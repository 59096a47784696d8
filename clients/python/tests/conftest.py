"""Fixtures: real redis-server processes on free loopback ports in temp dirs
(killed by pid at the end), the Rust `leasehold` binary for cross-language
contenders, and helpers to run contenders and read their logs.

No mocks: every test talks to a redis-server it started itself.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# scripts/test.sh installs the package into a scratch directory and names it
# here, so that the tests run what `pip install` ships, not the source tree.
_INSTALLED = os.environ.get("LEASEHOLD_PACKAGE_DIR")
if _INSTALLED:
    sys.path.insert(0, _INSTALLED)
    # Imported now, while it is first on the path (pytest puts the source
    # tree first again when it imports each test module).
    import leasehold  # noqa: F401

HERE = Path(__file__).resolve().parent
PKG_ROOT = HERE.parent  # clients/python
REPO = PKG_ROOT.parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_cluster_port() -> int:
    """A free port whose cluster bus port (+10000) is valid and free too."""
    for _ in range(200):
        port = free_port()
        if port + 10000 > 65535:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


def redis_server_bin() -> str:
    exe = os.environ.get("LEASEHOLD_REDIS_SERVER") or shutil.which("redis-server")
    if not exe:
        pytest.skip("redis-server is not installed (scripts/ensure-deps.sh installs it)")
    return exe


class RedisServer:
    """One redis-server of our own. `restart()` brings it back empty on the
    same port (a restart without persistence); `pause()`/`resume()` freeze it."""

    def __init__(self, tmp: Path, *extra: str) -> None:
        self.dir = tmp
        self.port = free_cluster_port() if "--cluster-enabled" in extra else free_port()
        self.extra = list(extra)
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                redis_server_bin(),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.dir),
                *self.extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(64).startswith((b"+PONG", b"-NOAUTH")):
                        return
            except OSError:
                pass
            time.sleep(0.02)
        raise RuntimeError(f"redis-server on port {self.port} did not start")

    def warm(self) -> None:
        """Makes this Redis look in use by leasehold since long ago, so that
        tests not about the post-restart quarantine do not wait one TTL for
        it (as the Rust testkit's warm())."""
        r = self.cli()
        run = r.info("server")["run_id"]
        r.set("leasehold:epoch", f"{run} 0 0")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait()

    def restart(self) -> float:
        """Kills it and starts it again, empty; returns when it answers (monotonic)."""
        self.kill()
        self.start()
        return time.monotonic()

    def pause(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def cli(self) -> Any:
        import redis

        return redis.Redis(port=self.port, protocol=2, decode_responses=True)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    r = RedisServer(tmp_path)
    r.warm()
    try:
        yield r
    finally:
        r.kill()


@pytest.fixture
def make_redis(tmp_path: Path) -> Iterator[Any]:
    made: list[RedisServer] = []

    def make(*extra: str, warm: bool = True) -> RedisServer:
        d = tmp_path / f"r{len(made)}"
        d.mkdir()
        r = RedisServer(d, *extra)
        made.append(r)
        if warm and "--requirepass" not in extra:
            r.warm()
        return r

    try:
        yield make
    finally:
        for r in made:
            r.kill()


def rust_bin() -> str:
    """The Rust CLI: $LEASEHOLD_BIN, else the workspace's debug build
    (scripts/test.sh builds it with `cargo test` first). Missing: skip, or
    fail when LEASEHOLD_REQUIRE_RUST=1 (CI)."""
    exe = os.environ.get("LEASEHOLD_BIN")
    if not exe:
        target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
        exe = str(target / "debug" / "leasehold")
    if not os.access(exe, os.X_OK):
        msg = f"the Rust leasehold binary is not built ({exe}); run cargo build --bin leasehold"
        if os.environ.get("LEASEHOLD_REQUIRE_RUST") == "1":
            pytest.fail(msg)
        pytest.skip(msg)
    return exe


@pytest.fixture
def leasehold_bin() -> str:
    return rust_bin()


def package_path() -> str:
    """Where the `leasehold` package under test lives (an installed copy or the source tree)."""
    import leasehold

    return str(Path(leasehold.__file__).resolve().parent.parent)


def py_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = package_path()
    return env


CONTEND = str(PKG_ROOT / "contend.py")
WRITER = str(HERE / "writer.py")


class Procs:
    """Child processes of a test, killed (by pid) at its end."""

    def __init__(self) -> None:
        self.all: list[subprocess.Popen[bytes]] = []

    def python(self, url: str, name: str, log: Path, *args: str) -> subprocess.Popen[bytes]:
        p = subprocess.Popen(
            [sys.executable, CONTEND, url, name, str(log), *args],
            env=py_env(),
            stdout=subprocess.DEVNULL,
        )
        self.all.append(p)
        return p

    def rust_run(
        self, url: str, name: str, log: Path, ttl: str, *flags: str, tag: str = "rs"
    ) -> subprocess.Popen[bytes]:
        """`leasehold run` whose child writes `work <token> <ns> <tag>` every 5 ms."""
        p = subprocess.Popen(
            [
                rust_bin(),
                "run",
                "--redis",
                url,
                "--name",
                name,
                "--ttl",
                ttl,
                "--contain",
                "group",
                *flags,
                "--",
                sys.executable,
                WRITER,
                str(log),
                tag,
            ],
            env=py_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.all.append(p)
        return p

    def stop_all(self) -> None:
        for p in self.all:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGCONT)
                    os.killpg(p.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    p.send_signal(signal.SIGCONT)
                    p.kill()
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                pass


@pytest.fixture
def procs() -> Iterator[Procs]:
    ps = Procs()
    try:
        yield ps
    finally:
        ps.stop_all()


Line = tuple[str, int, int, str, str]


def read_log(path: Path) -> list[Line]:
    """(what, token, monotonic ns, who, rest) lines."""
    out = []
    if not path.exists():
        return out
    for line in path.read_text().splitlines():
        f = line.split(" ", 4)
        if len(f) >= 4 and f[1].isdigit() and f[2].isdigit():
            out.append((f[0], int(f[1]), int(f[2]), f[3], f[4] if len(f) > 4 else ""))
    return out


def wait_for(pred: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.01)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
