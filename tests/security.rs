//! Security: TLS (with a CA and client certificates the test makes itself),
//! a least-privilege ACL user running the whole flow, and hostile input.

use leasehold_testkit as support;

use std::time::Duration;

use leasehold::{Client, Error};
use support::{RedisServer, leasehold_output};

/// The least-privilege rule documented in the README (Security).
const ACL_RULE: &[&str] = &[
    "on",
    ">s3cret",
    "resetkeys",
    "~leasehold:*",
    "resetchannels",
    "&leasehold:*",
    "-@all",
    "+@connection",
    "+evalsha",
    "+eval",
    "+script|load",
    "+time",
    "+info",
    "+wait",
    "+subscribe",
    "+unsubscribe",
    "+exists",
    "+type",
    "+get",
    "+set",
    "+del",
    "+incrby",
    "+hget",
    "+hmget",
    "+hset",
    "+hdel",
    "+hkeys",
    "+hlen",
    "+pexpire",
    "+pexpireat",
    "+pttl",
    "+zadd",
    "+zrange",
    "+zrangebyscore",
    "+zremrangebyscore",
    "+zrem",
    "+zrank",
    "+zcount",
    "+zscore",
    "+zcard",
    "+publish",
];

struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
        let dir = tempfile::tempdir().expect("dir");
        let write = |name: &str, pem: String| {
            std::fs::write(dir.path().join(name), pem).expect("write pem")
        };
        let ca_key = KeyPair::generate().expect("key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        // Distinct names: a leaf whose subject equals its issuer looks self-signed.
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "leasehold test CA");
        let ca = ca_params.self_signed(&ca_key).expect("ca");
        write("ca.pem", ca.pem());
        let issuer = Issuer::new(ca_params, ca_key);
        for (name, sans) in [
            ("server", vec!["127.0.0.1".to_string(), "localhost".into()]),
            ("client", vec!["leasehold-client".into()]),
        ] {
            let key = KeyPair::generate().expect("key");
            let mut params = CertificateParams::new(sans).expect("params");
            params
                .distinguished_name
                .push(DnType::CommonName, format!("leasehold test {name}"));
            let cert = params.signed_by(&key, &issuer).expect("sign");
            write(&format!("{name}.pem"), cert.pem());
            write(&format!("{name}.key"), key.serialize_pem());
        }
        Pki { dir }
    }

    fn path(&self, f: &str) -> String {
        self.dir.path().join(f).to_string_lossy().into_owned()
    }
}

fn tls_server(pki: &Pki) -> RedisServer {
    let (cert, key, ca) = (
        pki.path("server.pem"),
        pki.path("server.key"),
        pki.path("ca.pem"),
    );
    RedisServer::start_tls(&[
        "--tls-cert-file",
        &cert,
        "--tls-key-file",
        &key,
        "--tls-ca-cert-file",
        &ca,
        "--tls-auth-clients",
        "yes",
    ])
}

#[tokio::test]
async fn mutual_tls_with_a_custom_ca() {
    let pki = Pki::new();
    let r = tls_server(&pki);
    let url = format!("rediss://127.0.0.1:{}", r.port);
    let c = Client::builder(url.clone())
        .tls_ca(pki.path("ca.pem"))
        .tls_client_cert(pki.path("client.pem"), pki.path("client.key"))
        .connect()
        .await
        .expect("mutual TLS");
    let l = c
        .lease("tls")
        .ttl(Duration::from_secs(2))
        .acquire()
        .await
        .expect("acquire");
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert!(l.is_held());
    l.release().await.expect("release");

    // No client certificate: the server refuses.
    let e = Client::builder(url.clone())
        .tls_ca(pki.path("ca.pem"))
        .connect()
        .await;
    assert!(e.is_err(), "connected without a client certificate");
    // The system roots do not know our CA.
    let e = Client::builder(url.clone())
        .tls_client_cert(pki.path("client.pem"), pki.path("client.key"))
        .connect()
        .await;
    assert!(e.is_err(), "trusted an unknown CA");
    // Unreadable files are a configuration error naming the file.
    let e = Client::builder(url)
        .tls_ca("/nonexistent/ca.pem")
        .connect()
        .await
        .expect_err("missing file");
    assert!(
        matches!(e, Error::BadConfig { .. }) && e.to_string().contains("/nonexistent/ca.pem"),
        "{e}"
    );
}

#[test]
fn cli_run_over_mutual_tls() {
    let pki = Pki::new();
    let r = tls_server(&pki);
    let url = format!("rediss://127.0.0.1:{}", r.port);
    let (ca, cert, key) = (
        pki.path("ca.pem"),
        pki.path("client.pem"),
        pki.path("client.key"),
    );
    let (code, _, err) = leasehold_output(&[
        "run",
        "--name",
        "tls-job",
        "--redis",
        &url,
        "--tls-ca",
        &ca,
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
        "--",
        "sh",
        "-c",
        "exit 3",
    ]);
    assert_eq!(code, 3, "{err}");
    let (code, _, err) = leasehold_output(&[
        "run",
        "--name",
        "tls-job",
        "--redis",
        &url,
        "--tls-cert",
        &cert,
        "--",
        "true",
    ]);
    assert_eq!(code, 64, "--tls-cert without --tls-key: {err}");
}

fn acl_server() -> RedisServer {
    let r = RedisServer::start();
    r.warm();
    let mut args = vec!["ACL", "SETUSER", "lh"];
    args.extend_from_slice(ACL_RULE);
    let reply = r.cmd(&args);
    assert!(reply.contains("OK"), "{reply}");
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_flow_runs_as_a_least_privilege_user() {
    let r = acl_server();
    let url = format!("redis://lh:s3cret@127.0.0.1:{}", r.port);
    let c = Client::connect(&url).await.expect("connect as lh");
    let c2 = Client::connect(&url).await.expect("connect as lh");
    let ttl = Duration::from_millis(600);
    let a = c.lease("acl").ttl(ttl).acquire().await.expect("acquire");
    let waiter = tokio::spawn(async move { c2.lease("acl").ttl(ttl).acquire().await });
    tokio::time::sleep(ttl * 2).await;
    assert!(a.is_held(), "renewal works");
    a.release().await.expect("release");
    let b = waiter.await.expect("task").expect("woken waiter");
    b.release().await.expect("release");
    let slot = c
        .semaphore("acl-sem", 2)
        .ttl(ttl)
        .acquire()
        .await
        .expect("slot");
    slot.release().await.expect("release slot");
    assert!(c.status("acl").await.expect("status").holder.is_none());
    let q = c.quota(1, Duration::from_secs(60)).build().expect("quota");
    assert!(q.take("acl-q", 1).await.expect("take").allowed);
    let cache = c.token_cache().build().expect("cache");
    let v = cache
        .get_or_refresh("acl-c", || async {
            Ok(("v".to_string(), Duration::from_secs(60)))
        })
        .await
        .expect("cache");
    assert_eq!(v, "v");
    let mut leader = c
        .election("acl-e")
        .ttl(ttl)
        .campaign("me")
        .await
        .expect("campaign");
    leader.proclaim("me2").await.expect("proclaim");
    leader.resign().await.expect("resign");
    // The password is never echoed.
    let e = Client::connect(&format!("redis://lh:wrong@127.0.0.1:{}", r.port))
        .await
        .expect_err("wrong password");
    assert!(matches!(e, Error::Auth { .. }), "{e}");
    assert!(!e.to_string().contains("wrong@"), "{e}");
}

#[test]
fn cli_run_as_a_least_privilege_user_with_the_password_from_the_environment() {
    let r = acl_server();
    let url = format!("redis://lh@127.0.0.1:{}", r.port);
    let child = std::process::Command::new(support::leasehold_bin())
        .args([
            "run",
            "--name",
            "acl-job",
            "--redis",
            &url,
            "--",
            "sh",
            "-c",
            "sleep 2; exit 4",
        ])
        .env("LEASEHOLD_REDIS_PASSWORD", "s3cret")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run");
    // While it runs, `status` (as the same user) shows its containment: the
    // rule lets `run` note it.
    let lh_url = format!("redis://lh:s3cret@127.0.0.1:{}", r.port);
    let shown = support::wait_for(Duration::from_secs(5), || {
        let (code, out, err) =
            leasehold_output(&["status", "--name", "acl-job", "--redis", &lh_url, "--json"]);
        assert_eq!(code, 0, "{err}");
        assert!(!out.contains("s3cret") && !err.contains("s3cret"));
        out.contains("\"contain\"").then_some(())
    });
    let out = child.wait_with_output().expect("run");
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        shown.is_some(),
        "run could not note its containment under the documented ACL rule"
    );
    // ... and remove it when it gives the lease back.
    assert_eq!(r.cmd(&["EXISTS", "leasehold:{acl-job}:run"]), ":0\r\n");
    // A user without the rights gets a clear error, not a panic.
    assert!(
        r.cmd(&[
            "ACL",
            "SETUSER",
            "weak",
            "on",
            ">pw",
            "~*",
            "-@all",
            "+@connection"
        ])
        .contains("OK")
    );
    let (code, _, err) = leasehold_output(&[
        "run",
        "--name",
        "x",
        "--redis",
        &format!("redis://weak:pw@127.0.0.1:{}", r.port),
        "--",
        "true",
    ]);
    assert_ne!(code, 0);
    assert!(
        err.contains("NOPERM") || err.contains("permission"),
        "{err}"
    );
    assert!(!err.contains("panicked") && !err.contains("pw@"), "{err}");
}

#[tokio::test]
async fn a_server_that_is_not_redis_gives_a_clear_error() {
    // A TCP server that answers garbage.
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            use std::io::Write;
            let mut s = s;
            let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n");
        }
    });
    let e = Client::connect(&format!("redis://127.0.0.1:{port}"))
        .await
        .expect_err("not redis");
    assert!(e.to_string().contains(&port.to_string()), "{e}");
}

#[test]
fn hostile_names_and_urls_on_the_command_line() {
    let r = RedisServer::start();
    let url = r.url();
    let huge = "x".repeat(100_000);
    for (args, code) in [
        (
            vec![
                "run",
                "--name",
                huge.as_str(),
                "--redis",
                url.as_str(),
                "--",
                "true",
            ],
            64,
        ),
        (
            vec![
                "run",
                "--name",
                "x",
                "--redis",
                "redis://[::1",
                "--",
                "true",
            ],
            64,
        ),
        (
            vec!["run", "--name", "x", "--redis", "ftp://h", "--", "true"],
            64,
        ),
        (
            vec![
                "run",
                "--name",
                "x",
                "--redis",
                "redis+sentinel://h:1",
                "--",
                "true",
            ],
            64,
        ),
        (
            vec!["status", "--name", "{x}*", "--redis", url.as_str()],
            64,
        ),
    ] {
        let (c, _, err) = leasehold_output(&args);
        assert_eq!(c, code, "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(err.len() < 400, "error too long: {} bytes", err.len());
    }
    // Issue 21.1: a password that was not percent-encoded shows nowhere.
    for (url, secret) in [
        ("redis://:s3cr/et@127.0.0.1:1", "s3cr"),
        ("redis+cluster://:s3cr/et@127.0.0.1:1", "s3cr"),
        ("redis+sentinel://:s3cr/et@127.0.0.1:1/m", "s3cr"),
        ("redis://:p@ss:w/rd%x@127.0.0.1:1", "ss:w"),
        ("redis://:p@ss:w/rd%x@127.0.0.1:1", "rd%x"),
        ("user:pw12@127.0.0.1:1", "pw12"),
    ] {
        let (c, out, err) = leasehold_output(&["status", "--name", "x", "--redis", url]);
        assert_eq!(c, 64, "{url}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(
            !err.contains(secret) && !out.contains(secret),
            "{url}: {err}"
        );
    }
    // Non-UTF-8 bytes in a name.
    use std::os::unix::ffi::OsStrExt;
    let out = std::process::Command::new(support::leasehold_bin())
        .arg("run")
        .arg("--name")
        .arg(std::ffi::OsStr::from_bytes(b"\xff\xfe"))
        .args(["--redis", &url, "--", "true"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(64));
}

/// A waiter whose channel Redis refuses only after a reconnect (the ACL lost
/// `&leasehold:*` meanwhile) is told so, instead of polling every 250 ms
/// forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_refused_after_a_reconnect_is_reported() {
    let r = acl_server();
    let url = format!("redis://lh:s3cret@127.0.0.1:{}", r.port);
    let holder = Client::connect(&url).await.expect("connect as lh");
    let waiter = Client::connect(&url).await.expect("connect as lh");
    let ttl = Duration::from_secs(3);
    let held = holder
        .lease("acl-w")
        .ttl(ttl)
        .acquire()
        .await
        .expect("acquire");
    let waiting = tokio::spawn(async move {
        waiter
            .lease("acl-w")
            .ttl(ttl)
            .acquire_timeout(Duration::from_secs(15))
            .await
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Redis drops the user's subscribers when its channel rights change.
    let reply = r.cmd(&["ACL", "SETUSER", "lh", "resetchannels"]);
    assert!(reply.contains("OK"), "{reply}");
    let e = waiting
        .await
        .expect("join")
        .expect_err("the waiter cannot be woken any more");
    assert!(matches!(e, Error::Refused { .. }), "{e}");
    drop(held);
}

/// Issue 21.2 and 21.13: on Cluster the password may come from
/// LEASEHOLD_REDIS_PASSWORD like everywhere else; a wrong one is reported as
/// refused authentication (69), not as an unreachable server.
#[test]
fn cluster_takes_the_password_from_the_environment() {
    let cluster = support::Cluster::start(3);
    for r in &cluster.nodes {
        assert!(
            r.cmd(&["CONFIG", "SET", "requirepass", "cl-s3cret"])
                .contains("OK")
        );
    }
    let url = cluster.url();
    let run = |pw: &str| {
        std::process::Command::new(support::leasehold_bin())
            .args(["run", "--name", "cl-env", "--ttl", "1s", "--redis", &url])
            .args(["--", "sh", "-c", "exit 5"])
            .env("LEASEHOLD_REDIS_PASSWORD", pw)
            .env_remove("LEASEHOLD_REDIS_URL")
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run")
    };
    let out = run("cl-s3cret");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{err}");
    let out = run("wrong-pw");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(69), "{err}");
    assert!(err.contains("refused authentication"), "{err}");
    assert!(
        !err.contains("wrong-pw") && !err.contains("panicked"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

/// Issue 21.3: the job gets no Redis credentials (they would let it rewrite
/// any lease), neither in its environment nor by reading the supervisor's
/// from /proc; `--pass-redis-env` keeps them in its environment.
#[test]
fn the_job_does_not_get_the_redis_credentials() {
    let r = acl_server();
    let dir = tempfile::tempdir().expect("dir");
    let d = dir.path().display().to_string();
    let url = format!("redis://lh@127.0.0.1:{}", r.port);
    // The supervisor's host pid is in the holder id (host/pid/random).
    let script = format!(
        "env > {d}/env; tr '\\0' '\\n' < /proc/$(echo $LEASEHOLD_HOLDER | cut -d/ -f2)/environ > {d}/parent"
    );
    let run = |extra: &[&str]| {
        let out = std::process::Command::new(support::leasehold_bin())
            .args(["run", "--name", "creds", "--contain", "group"])
            .args(extra)
            .args(["--", "sh", "-c", &script])
            .env("LEASEHOLD_REDIS_URL", &url)
            .env("LEASEHOLD_REDIS_PASSWORD", "s3cret")
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run");
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let read = |f: &str| std::fs::read_to_string(dir.path().join(f)).unwrap_or_default();
        (read("env"), read("parent"))
    };
    let (env, parent) = run(&[]);
    assert!(env.contains("LEASEHOLD_TOKEN="), "{env}");
    assert!(!env.contains("s3cret"), "{env}");
    assert!(!env.contains("LEASEHOLD_REDIS_URL") && !env.contains("LEASEHOLD_REDIS_PASSWORD"));
    assert!(
        parent.contains("LEASEHOLD_REDIS_PASSWORD="),
        "read nothing: {parent}"
    );
    assert!(!parent.contains("s3cret"), "{parent}");
    let (env, _) = run(&["--pass-redis-env"]);
    assert!(env.contains("LEASEHOLD_REDIS_PASSWORD=s3cret"), "{env}");
    assert!(env.contains(&format!("LEASEHOLD_REDIS_URL={url}")), "{env}");
}

/// Issue 21.5: an empty prefix, or one without a separator (`leaseholdepoch`),
/// is refused (64); and members of a queue or semaphore that are not holder
/// ids (another application's, under a shared prefix) are never removed,
/// counted or waited for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefixes_and_members_of_other_applications_are_left_alone() {
    let r = RedisServer::start();
    r.warm();
    for p in ["", "leasehold", "app:v2"] {
        let e = Client::builder(r.url())
            .prefix(p)
            .connect()
            .await
            .expect_err(p);
        assert!(matches!(e, Error::BadConfig { .. }), "{p:?}: {e}");
        let (code, _, err) =
            leasehold_output(&["status", "--name", "x", "--redis", &r.url(), "--prefix", p]);
        assert_eq!(code, 64, "{p:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
    // Another application's members, old (lapsed, expired) and current.
    assert!(
        r.cmd(&["ZADD", "leasehold:{shared}:queue", "1", "user:42"])
            .contains(":1")
    );
    assert!(
        r.cmd(&["HSET", "leasehold:{shared}:qinfo", "user:42", "x"])
            .contains(":1")
    );
    assert!(
        r.cmd(&["ZADD", "leasehold:{pool}:slots", "1", "job:7"])
            .contains(":1")
    );
    assert!(
        r.cmd(&["ZADD", "leasehold:{pool}:slots", "99999999999999", "job:8"])
            .contains(":1")
    );
    let c = Client::connect(&r.url()).await.expect("connect");
    let ttl = Duration::from_secs(2);
    let a = c.lease("shared").ttl(ttl).acquire().await.expect("acquire");
    let c2 = c.clone();
    let waiter = tokio::spawn(async move { c2.lease("shared").ttl(ttl).acquire().await });
    support::wait_for(Duration::from_secs(5), || {
        r.cmd(&["ZCARD", "leasehold:{shared}:queue"])
            .contains(":2")
            .then_some(())
    })
    .expect("the waiter queued");
    a.release().await.expect("release");
    let b = tokio::time::timeout(Duration::from_secs(1), waiter)
        .await
        .expect("handed over at once, not held up by a foreign member")
        .expect("task")
        .expect("acquired");
    b.release().await.expect("release");
    let queue = r.cmd(&["ZRANGE", "leasehold:{shared}:queue", "0", "-1"]);
    assert!(queue.contains("user:42"), "{queue}");
    let info = r.cmd(&["HGET", "leasehold:{shared}:qinfo", "user:42"]);
    assert!(info.contains("\r\nx\r\n"), "{info}");
    // A semaphore of one slot: job:8 is not a holder and takes no slot.
    let slot = c
        .semaphore("pool", 1)
        .ttl(ttl)
        .acquire_timeout(Duration::from_secs(2))
        .await
        .expect("a slot, although job:8 looks live");
    slot.release().await.expect("release");
    let members = r.cmd(&["ZRANGE", "leasehold:{pool}:slots", "0", "-1"]);
    assert!(
        members.contains("job:7") && members.contains("job:8"),
        "{members}"
    );
}
