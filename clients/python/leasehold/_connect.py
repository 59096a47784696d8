"""Which Redis deployment a URL names (the rules of src/backend/url.rs), and
the redis-py connections for it.

- `redis://[user:pass@]host:port[/db]`, `rediss://…`, `unix://…` — one server;
- `redis+sentinel://[user:pass@]h1:p1,h2:p2,…/MASTER[/db]` — the master
  named MASTER, found through those sentinels (the password is the master's;
  sentinels are asked without one);
- `redis+cluster://[user:pass@]h1:p1,h2:p2,…` (`rediss+cluster://` with TLS) —
  a Redis Cluster reached through those seed nodes.

A password may come from `LEASEHOLD_REDIS_PASSWORD` instead of the URL.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.asyncio.sentinel
import redis.cluster
import redis.sentinel

from .errors import AuthFailed, BadConfig, BadUrl, Unreachable, redact_url

# Parts of redis-py are untyped: reach them through Any.
_rp: Any = redis

PASSWORD_ENV = "LEASEHOLD_REDIS_PASSWORD"


@dataclass(frozen=True)
class TlsFiles:
    """PEM files for `rediss://`: a private CA, and a client certificate and key (mutual TLS)."""

    ca: str | None = None
    cert: str | None = None
    key: str | None = None

    def kwargs(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.ca:
            out["ssl_ca_certs"] = self.ca
        if self.cert:
            out["ssl_certfile"] = self.cert
        if self.key:
            out["ssl_keyfile"] = self.key
        return out

    def any(self) -> bool:
        return bool(self.ca or self.cert or self.key)


@dataclass(frozen=True)
class Target:
    kind: str  # "single" | "sentinel" | "cluster"
    url: str
    shown: str
    hosts: list[tuple[str, int]] = field(default_factory=list)
    master: str = ""
    user: str | None = None
    password: str | None = None
    db: int = 0
    tls: bool = False


def _creds_and_hosts(url: str, authority: str) -> tuple[str | None, str | None, list[tuple[str, int]]]:
    userinfo, at, hosts_part = authority.rpartition("@")
    user: str | None = None
    password: str | None = None
    if at:
        if ":" in userinfo:
            u, _, pw = userinfo.partition(":")
            user = unquote(u) or None
            password = unquote(pw)
        else:
            password = unquote(userinfo)
    hosts = []
    for h in hosts_part.split(","):
        if not h:
            continue
        host, sep, port = h.rpartition(":")
        if not sep:
            host, port = h, "6379"
        if not port.isdigit() or not 0 <= int(port) <= 65535:
            raise BadUrl(url, f'bad port in "{h}"')
        hosts.append((host, int(port)))
    if not hosts:
        raise BadUrl(url, "no host:port given")
    return user, password, hosts


def parse(url: str) -> Target:
    shown = redact_url(url)
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise BadUrl(url, "missing scheme (expected redis://, rediss://, redis+sentinel:// or redis+cluster://)")
    if scheme in ("redis", "rediss", "unix", "redis+unix"):
        u = "unix://" + rest if scheme == "redis+unix" else url
        return Target("single", u, shown, tls=scheme == "rediss")
    if scheme == "rediss+sentinel":
        raise BadUrl(
            url,
            "TLS through Sentinel is not supported yet: use redis+sentinel:// on a trusted network, "
            "or rediss:// to the master",
        )
    if scheme == "redis+sentinel":
        authority, _, path = rest.partition("/")
        user, password, hosts = _creds_and_hosts(url, authority)
        parts = [p for p in path.split("/") if p]
        if not parts:
            raise BadUrl(url, "name the master after the sentinels: redis+sentinel://h1:26379,h2:26379/mymaster")
        db = 0
        if len(parts) > 1:
            if not parts[1].lstrip("-").isdigit():
                raise BadUrl(url, f'bad database number "{parts[1]}"')
            db = int(parts[1])
        return Target("sentinel", url, shown, hosts, parts[0], user, password, db)
    if scheme in ("redis+cluster", "rediss+cluster"):
        authority = rest.split("/", 1)[0]
        user, password, hosts = _creds_and_hosts(url, authority)
        return Target("cluster", url, shown, hosts, user=user, password=password, tls=scheme.startswith("rediss"))
    raise BadUrl(
        url,
        f'unknown scheme "{scheme}" (expected redis://, rediss://, redis+sentinel:// or redis+cluster://)',
    )


def _password(t: Target) -> str | None:
    return t.password if t.password is not None else os.environ.get(PASSWORD_ENV)


def _common(op_timeout: float) -> dict[str, Any]:
    # RESP2 everywhere: the scripts' replies and pub/sub messages read the
    # same on every Redis 6.2+, whatever redis-py's default protocol is.
    return {
        "protocol": 2,
        "socket_timeout": op_timeout,
        "socket_connect_timeout": min(op_timeout, 5.0),
    }


def check_tls(t: Target, tls: TlsFiles) -> None:
    if tls.any() and not t.tls:
        raise BadConfig("TLS files", t.shown, "apply to rediss:// URLs only")
    if bool(tls.cert) != bool(tls.key):
        raise BadConfig("TLS client certificate", t.shown, "needs both --tls-cert and --tls-key")


def sync_client(t: Target, op_timeout: float, tls: TlsFiles) -> Any:
    """A redis-py client (Redis, a Sentinel master, or RedisCluster)."""
    check_tls(t, tls)
    kw = _common(op_timeout)
    try:
        if t.kind == "single":
            extra: dict[str, Any] = {}
            if t.url.startswith("rediss"):
                extra.update(tls.kwargs())
            r = redis.Redis.from_url(t.url, **kw, **extra)
            if r.connection_pool.connection_kwargs.get("password") is None and os.environ.get(PASSWORD_ENV):
                r.connection_pool.connection_kwargs["password"] = os.environ[PASSWORD_ENV]
            return r
        if t.kind == "sentinel":
            s = _rp.sentinel.Sentinel(
                t.hosts,
                sentinel_kwargs={"socket_timeout": min(op_timeout, 1.0), "protocol": 2},
                username=t.user,
                password=_password(t),
                db=t.db,
                **kw,
            )
            return s.master_for(t.master, **kw)
        ckw: dict[str, Any] = dict(kw)
        if t.tls:
            ckw["ssl"] = True
            ckw.update(tls.kwargs())
        return _rp.cluster.RedisCluster(
            startup_nodes=[_rp.cluster.ClusterNode(h, p) for h, p in t.hosts],
            username=t.user,
            password=_password(t),
            **ckw,
        )
    except redis.RedisError as e:
        raise classify(t.shown, e) from None
    except ValueError as e:
        raise BadUrl(t.url, str(e)) from None


def async_client(t: Target, op_timeout: float, tls: TlsFiles) -> Any:
    """The redis.asyncio counterpart of :func:`sync_client` (connects lazily)."""
    check_tls(t, tls)
    kw = _common(op_timeout)
    try:
        if t.kind == "single":
            extra: dict[str, Any] = {}
            if t.url.startswith("rediss"):
                extra.update(tls.kwargs())
            r = redis.asyncio.Redis.from_url(t.url, **kw, **extra)
            if r.connection_pool.connection_kwargs.get("password") is None and os.environ.get(PASSWORD_ENV):
                r.connection_pool.connection_kwargs["password"] = os.environ[PASSWORD_ENV]
            return r
        if t.kind == "sentinel":
            s = _rp.asyncio.sentinel.Sentinel(
                t.hosts,
                sentinel_kwargs={"socket_timeout": min(op_timeout, 1.0), "protocol": 2},
                username=t.user,
                password=_password(t),
                db=t.db,
                **kw,
            )
            return s.master_for(t.master, **kw)
        ckw: dict[str, Any] = dict(kw)
        if t.tls:
            ckw["ssl"] = True
            ckw.update(tls.kwargs())
        return _rp.asyncio.cluster.RedisCluster(
            startup_nodes=[_rp.asyncio.cluster.ClusterNode(h, p) for h, p in t.hosts],
            username=t.user,
            password=_password(t),
            **ckw,
        )
    except ValueError as e:
        raise BadUrl(t.url, str(e)) from None


class PubSubSource:
    """Makes the (sync) connection the shared subscriber reads from; asked
    again on every reconnect, so that it follows a Sentinel failover."""

    def __init__(self, t: Target, op_timeout: float, tls: TlsFiles, sync: Any | None) -> None:
        self.t, self.op_timeout, self.tls = t, op_timeout, tls
        self._sync = sync
        self._sentinel: Any = None

    def connect(self, attempt: int) -> Any:
        t = self.t
        timeout = min(self.op_timeout, 5.0)
        base: dict[str, Any] = {"protocol": 2, "socket_timeout": timeout, "socket_connect_timeout": timeout}
        conn: Any
        if t.kind == "single":
            pool = (
                self._sync
                or redis.Redis.from_url(
                    t.url, **_common(self.op_timeout), **(self.tls.kwargs() if t.url.startswith("rediss") else {})
                )
            ).connection_pool
            kwargs = dict(pool.connection_kwargs)
            kwargs.update(base)
            if kwargs.get("password") is None and os.environ.get(PASSWORD_ENV):
                kwargs["password"] = os.environ[PASSWORD_ENV]
            conn = pool.connection_class(**kwargs)
        elif t.kind == "sentinel":
            if self._sentinel is None:
                self._sentinel = _rp.sentinel.Sentinel(t.hosts, sentinel_kwargs={"socket_timeout": 1.0, "protocol": 2})
            host, port = self._sentinel.discover_master(t.master)
            conn = _rp.Connection(host=host, port=port, username=t.user, password=_password(t), db=t.db, **base)
        else:
            host, port = t.hosts[attempt % len(t.hosts)]
            creds: dict[str, Any] = {"username": t.user, "password": _password(t)}
            if t.tls:
                conn = _rp.SSLConnection(host=host, port=port, **creds, **base, **self.tls.kwargs())
            else:
                conn = _rp.Connection(host=host, port=port, **creds, **base)
        conn.connect()
        return conn


def classify(shown: str, e: BaseException) -> Exception:
    """A failure to connect: authentication refused, or unreachable."""
    text = str(e)
    if isinstance(e, redis.AuthenticationError) or any(
        m in text for m in ("WRONGPASS", "NOAUTH", "NOPERM", "invalid password", "invalid username")
    ):
        return AuthFailed(shown, text)
    return Unreachable(shown, text or type(e).__name__)
