//! Test harness: real `redis-server` processes on free loopback ports, in temp
//! dirs, stopped by pid. No test uses a Redis it did not start.
//!
//! The binary is `redis-server` from PATH, or `$LEASEHOLD_REDIS_SERVER`.

use std::net::TcpListener;

/// The fault-injection toolkit of `leasehold chaos` (proxy, fenced resource,
/// analysis): a module of the binary, shared with the tests, not part of the
/// library's API.
#[path = "../../src/bin/leasehold/faults.rs"]
pub mod faults;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct RedisServer {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// TLS only: readiness is a TCP connect, not a plaintext PING.
    tls: bool,
}

pub fn free_port() -> u16 {
    // Bind port 0 and let go: the kernel does not hand the same port out again
    // right away, which is good enough on a test machine.
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a free loopback port");
    l.local_addr().expect("local addr").port()
}

fn server_bin() -> String {
    std::env::var("LEASEHOLD_REDIS_SERVER").unwrap_or_else(|_| "redis-server".into())
}

impl RedisServer {
    pub fn start() -> RedisServer {
        Self::start_with(&[])
    }

    pub fn start_with(extra: &[&str]) -> RedisServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut s = RedisServer {
            port: free_port(),
            dir,
            child: None,
            tls: false,
        };
        s.spawn(extra);
        s
    }

    /// A TLS-only server (`--port 0 --tls-port`), with `extra` TLS arguments.
    pub fn start_tls(extra: &[&str]) -> RedisServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let mut s = RedisServer {
            port,
            dir,
            child: None,
            tls: true,
        };
        let p = port.to_string();
        let mut args = vec!["--tls-port", p.as_str()];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--port", "0"]);
        s.spawn(&args);
        s
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn spawn(&mut self, extra: &[&str]) {
        let port = self.port.to_string();
        let log = self.log_path();
        let mut cmd = Command::new(server_bin());
        cmd.args([
            "--port",
            &port,
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .arg("--dir")
        .arg(self.dir.path())
        .arg("--logfile")
        .arg(&log)
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!(
                "cannot start {}: {e}. Install redis-server 6.2+ (scripts/test.sh does) or set LEASEHOLD_REDIS_SERVER",
                server_bin()
            )
        });
        self.child = Some(child);
        let t0 = Instant::now();
        loop {
            if self.tls && std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            // +PONG, or -NOAUTH when a password is required: either way it
            // is up (a server still loading answers -LOADING).
            let pong = raw_cmd(self.port, &["PING"]);
            if pong.starts_with('+') || (pong.starts_with('-') && !pong.contains("LOADING")) {
                return;
            }
            if t0.elapsed() > Duration::from_secs(10) {
                panic!(
                    "redis-server on port {} did not answer PING: {}",
                    self.port,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// SIGKILL and reap: the data is gone (no persistence).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stop, then start empty on the same port.
    pub fn restart(&mut self) {
        self.restart_with(&[]);
    }

    /// Stop, then start empty on the same port with `extra` arguments.
    pub fn restart_with(&mut self, extra: &[&str]) {
        self.stop();
        self.spawn(extra);
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Makes this Redis look in use by leasehold since long ago, so that tests
    /// not about the post-restart quarantine do not wait one TTL for it.
    pub fn warm(&self) {
        let info = self.cmd(&["INFO", "server"]);
        let run = info
            .lines()
            .find_map(|l| l.strip_prefix("run_id:"))
            .map(str::trim)
            .unwrap_or_else(|| panic!("no run_id in INFO: {info}"));
        // "<run_id> <base ms> <longest ttl ms>": this server, since 1970.
        let reply = self.cmd(&["SET", "leasehold:epoch", &format!("{run} 0 0")]);
        assert!(reply.contains("OK"), "warm: {reply}");
    }

    /// Milliseconds until lease `name` expires in Redis (by Redis's clock),
    /// -2 when it is free: the lease record keeps `exp`, not a key TTL.
    pub fn lease_left_ms(&self, name: &str) -> i64 {
        let script = "local r = redis.call('HMGET', KEYS[1], 'holder', 'exp') \
            if not r[1] or r[1] == '' then return -2 end \
            local t = redis.call('TIME') \
            local left = tonumber(r[2]) - (tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)) \
            if left <= 0 then return -2 end return left";
        let key = format!("leasehold:{{{name}}}:lease");
        let reply = self.cmd(&["EVAL", script, "1", &key]);
        reply.trim().trim_start_matches(':').parse().unwrap_or(-2)
    }

    /// The server's run_id (new on every start).
    pub fn run_id(&self) -> String {
        let info = self.cmd(&["INFO", "server"]);
        info.lines()
            .find_map(|l| l.strip_prefix("run_id:"))
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    }

    /// SIGSTOP: Redis stops answering, connections stay open.
    pub fn freeze(&self) {
        if let Some(pid) = self.pid() {
            unsafe { libc::kill(pid as i32, libc::SIGSTOP) };
        }
    }

    /// SIGCONT after [`RedisServer::freeze`].
    pub fn thaw(&self) {
        if let Some(pid) = self.pid() {
            unsafe { libc::kill(pid as i32, libc::SIGCONT) };
        }
    }

    /// Calls of the named commands so far, from INFO commandstats. (Redis also
    /// counts the commands scripts run inside it under their own names.)
    pub fn command_calls(&self, names: &[&str]) -> u64 {
        self.cmd(&["INFO", "commandstats"])
            .lines()
            .filter_map(|l| {
                let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(':')?;
                if !names.contains(&name) {
                    return None;
                }
                rest.split("calls=")
                    .nth(1)?
                    .split(',')
                    .next()?
                    .parse::<u64>()
                    .ok()
            })
            .sum()
    }

    /// Runs one command (redis-rs) and returns the reply as RESP text
    /// (`+OK`, `:1`, `$-1`, `$3\r\nabc`, `-ERR …`), the form tests match on.
    pub fn cmd(&self, args: &[&str]) -> String {
        let reply = raw_cmd(self.port, args);
        assert!(
            !reply.is_empty(),
            "redis-server on port {} did not answer {args:?}: {}",
            self.port,
            self.log()
        );
        reply
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A `leasehold` process started by a test; SIGKILLed on drop.
pub struct Proc {
    pub child: Child,
    pub stderr_path: PathBuf,
}

impl Proc {
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, sig: i32) {
        unsafe {
            libc::kill(self.pid(), sig);
        }
    }

    /// Waits for exit, up to `limit`; returns the exit code (128+N for signals).
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let t = Instant::now();
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                use std::os::unix::process::ExitStatusExt;
                return Some(st.code().unwrap_or_else(|| 128 + st.signal().unwrap_or(0)));
            }
            if t.elapsed() > limit {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `leasehold` binary of this build: cargo builds it beside the test
/// and bench executables (`target/<profile>/deps/…` → `target/<profile>/`).
pub fn leasehold_bin() -> &'static str {
    static BIN: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        let exe = std::env::current_exe().expect("the test executable's path");
        let dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("the test executable is in target/<profile>/deps");
        dir.join("leasehold").to_string_lossy().into_owned()
    });
    &BIN
}

/// Starts `leasehold ARGS` with stderr captured to a file in `dir`.
pub fn leasehold(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Proc {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let stderr_path = dir.join(format!("leasehold-{n}.stderr"));
    let err = std::fs::File::create(&stderr_path).expect("stderr file");
    let mut cmd = Command::new(leasehold_bin());
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err)
        .env_remove("LEASEHOLD_REDIS_URL");
    for (k, v) in env {
        cmd.env(k, v);
    }
    Proc {
        child: cmd.spawn().expect("spawn leasehold"),
        stderr_path,
    }
}

/// Runs `leasehold ARGS` to completion: (exit code, stdout, stderr).
pub fn leasehold_output(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(leasehold_bin())
        .args(args)
        .env_remove("LEASEHOLD_REDIS_URL")
        .stdin(Stdio::null())
        .output()
        .expect("run leasehold");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Wall-clock nanoseconds, comparable with `date +%s%N` in the workers.
pub fn now_ns() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default()
}

/// True while `pid` exists and is not a zombie.
pub fn pid_alive(pid: i32) -> bool {
    faults::pid_alive(pid as u32)
}

/// The parent pid of `pid`.
pub fn ppid(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit(')')
        .next()?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Polls `f` every 5 ms until it returns Some, or `limit` passes.
pub fn wait_for<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let t = Instant::now();
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if t.elapsed() > limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[allow(unused_imports)]
pub use faults::Proxy;

impl Proxy {
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Forwards requests but holds replies back: Redis executes what it is
    /// sent, the client hears nothing (a reply lost or late).
    pub fn stall_replies(&self) {
        self.replies_blocked
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// A Redis Cluster of `n` masters on loopback, made with `redis-cli --cluster create`.
pub struct Cluster {
    pub nodes: Vec<RedisServer>,
}

impl Cluster {
    pub fn start(n: usize) -> Cluster {
        let nodes: Vec<RedisServer> = (0..n)
            .map(|_| {
                let bus = free_port().to_string();
                RedisServer::start_with(&[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "2000",
                    "--cluster-port",
                    &bus,
                ])
            })
            .collect();
        let mut cmd = Command::new("redis-cli");
        cmd.arg("--cluster").arg("create");
        for r in &nodes {
            cmd.arg(format!("127.0.0.1:{}", r.port));
        }
        let out = cmd
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("redis-cli (install redis-tools; scripts/test.sh does)");
        assert!(
            out.status.success(),
            "cluster create failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let c = Cluster { nodes };
        wait_for(Duration::from_secs(20), || {
            c.nodes
                .iter()
                .all(|r| r.cmd(&["CLUSTER", "INFO"]).contains("cluster_state:ok"))
                .then_some(())
        })
        .expect("cluster_state:ok on every node");
        c
    }

    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .nodes
            .iter()
            .map(|r| format!("127.0.0.1:{}", r.port))
            .collect();
        format!("redis+cluster://{}", hosts.join(","))
    }

    /// The node id of `node`.
    pub fn id(&self, node: usize) -> String {
        let reply = self.nodes[node].cmd(&["CLUSTER", "MYID"]);
        reply.lines().nth(1).unwrap_or_default().trim().to_string()
    }

    /// The index of the node that serves `slot`.
    pub fn owner(&self, slot: u16) -> usize {
        for (i, r) in self.nodes.iter().enumerate() {
            let nodes = r.cmd(&["CLUSTER", "NODES"]);
            for line in nodes.lines() {
                if line.contains("myself") {
                    for range in line.split_whitespace().skip(8) {
                        let (a, b) = match range.split_once('-') {
                            Some((a, b)) => (a.parse().unwrap_or(u16::MAX), b.parse().unwrap_or(0)),
                            None => {
                                let v = range.parse().unwrap_or(u16::MAX);
                                (v, v)
                            }
                        };
                        if a <= slot && slot <= b {
                            return i;
                        }
                    }
                }
            }
        }
        panic!("no owner for slot {slot}");
    }

    /// Moves `slot` with its keys from node `from` to node `to`, the way
    /// `redis-cli --cluster reshard` does.
    pub fn migrate_slot(&self, slot: u16, from: usize, to: usize) {
        let s = slot.to_string();
        let (from_id, to_id) = (self.id(from), self.id(to));
        assert!(
            self.nodes[to]
                .cmd(&["CLUSTER", "SETSLOT", &s, "IMPORTING", &from_id])
                .contains("OK")
        );
        assert!(
            self.nodes[from]
                .cmd(&["CLUSTER", "SETSLOT", &s, "MIGRATING", &to_id])
                .contains("OK")
        );
        let keys = self.nodes[from].cmd(&["CLUSTER", "GETKEYSINSLOT", &s, "1000"]);
        let keys: Vec<String> = keys
            .lines()
            .filter(|l| !l.starts_with('*') && !l.starts_with('$'))
            .map(|l| l.to_string())
            .collect();
        if !keys.is_empty() {
            let port = self.nodes[to].port.to_string();
            let mut args = vec!["MIGRATE", "127.0.0.1", &port, "", "0", "5000", "KEYS"];
            args.extend(keys.iter().map(String::as_str));
            let reply = self.nodes[from].cmd(&args);
            assert!(reply.contains("OK"), "MIGRATE: {reply}");
        }
        for r in &self.nodes {
            r.cmd(&["CLUSTER", "SETSLOT", &s, "NODE", &to_id]);
        }
    }

    /// The slot of `key`, as the cluster computes it.
    pub fn keyslot(&self, key: &str) -> u16 {
        let reply = self.nodes[0].cmd(&["CLUSTER", "KEYSLOT", key]);
        reply.trim().trim_start_matches(':').parse().expect("slot")
    }
}

/// One master, one replica and three sentinels watching them as `mymaster`.
pub struct SentinelGroup {
    pub master: RedisServer,
    pub replica: RedisServer,
    pub sentinels: Vec<(Child, u16, tempfile::TempDir)>,
}

impl SentinelGroup {
    pub fn start() -> SentinelGroup {
        let master = RedisServer::start();
        let mp = master.port.to_string();
        let replica = RedisServer::start_with(&["--replicaof", "127.0.0.1", &mp]);
        wait_for(Duration::from_secs(10), || {
            master
                .cmd(&["INFO", "replication"])
                .contains("connected_slaves:1")
                .then_some(())
        })
        .expect("replica connected");
        let mut sentinels = Vec::new();
        for _ in 0..3 {
            let dir = tempfile::tempdir().expect("dir");
            let port = free_port();
            let conf = dir.path().join("sentinel.conf");
            std::fs::write(
                &conf,
                format!(
                    "port {port}\nbind 127.0.0.1\ndir {}\nlogfile {}\nsentinel monitor mymaster 127.0.0.1 {mp} 2\nsentinel down-after-milliseconds mymaster 1000\nsentinel failover-timeout mymaster 3000\nsentinel parallel-syncs mymaster 1\n",
                    dir.path().display(),
                    dir.path().join("sentinel.log").display()
                ),
            )
            .expect("write sentinel.conf");
            let bin = std::env::var("LEASEHOLD_REDIS_SENTINEL")
                .unwrap_or_else(|_| "redis-sentinel".into());
            let child = Command::new(&bin)
                .arg(&conf)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| {
                    panic!("cannot start {bin}: {e} (scripts/test.sh installs redis-sentinel)")
                });
            sentinels.push((child, port, dir));
        }
        let g = SentinelGroup {
            master,
            replica,
            sentinels,
        };
        // Every sentinel knows the replica and the other two sentinels.
        wait_for(Duration::from_secs(20), || {
            g.sentinels
                .iter()
                .all(|(_, port, _)| {
                    let info = raw_cmd(*port, &["SENTINEL", "MASTER", "mymaster"]);
                    info.contains("num-slaves\r\n$1\r\n1\r\n")
                        && info.contains("num-other-sentinels\r\n$1\r\n2\r\n")
                })
                .then_some(())
        })
        .expect("sentinels discovered each other");
        g
    }

    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .sentinels
            .iter()
            .map(|(_, p, _)| format!("127.0.0.1:{p}"))
            .collect();
        format!("redis+sentinel://{}/mymaster", hosts.join(","))
    }

    /// Kills the master, waits for the sentinels to promote the replica, then
    /// brings the old master back empty as the new master's replica (so that
    /// `WAIT 1` can succeed again). Returns how long the promotion took.
    pub fn fail_over(&mut self) -> Duration {
        let old = self.master.port;
        self.master.stop();
        let t = Instant::now();
        let new = wait_for(Duration::from_secs(20), || {
            self.master_port().filter(|p| *p != old)
        })
        .expect("sentinels promoted the replica");
        assert_eq!(new, self.replica.port);
        let took = t.elapsed();
        let np = new.to_string();
        self.master.restart_with(&["--replicaof", "127.0.0.1", &np]);
        std::mem::swap(&mut self.master, &mut self.replica);
        wait_for(Duration::from_secs(10), || {
            self.master
                .cmd(&["INFO", "replication"])
                .contains("connected_slaves:1")
                .then_some(())
        })
        .expect("old master rejoined as replica");
        took
    }

    /// The master's port according to the first sentinel.
    pub fn master_port(&self) -> Option<u16> {
        let reply = raw_cmd(
            self.sentinels[0].1,
            &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", "mymaster"],
        );
        reply.lines().nth(4).and_then(|l| l.trim().parse().ok())
    }
}

impl Drop for SentinelGroup {
    fn drop(&mut self) {
        for (c, _, _) in &mut self.sentinels {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Runs one command on the server at `port` with redis-rs, and returns the
/// reply as RESP text (see [`RedisServer::cmd`]); "" when the server cannot
/// be reached or does not answer within 5 s.
pub fn raw_cmd(port: u16, args: &[&str]) -> String {
    let Some((first, rest)) = args.split_first() else {
        return String::new();
    };
    let Ok(mut c) = connect(port) else {
        return String::new();
    };
    let mut cmd = redis::cmd(first);
    for a in rest {
        cmd.arg(*a);
    }
    match cmd.query::<redis::Value>(&mut c) {
        Ok(v) => resp(&v),
        Err(e) if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() => String::new(),
        Err(e) => format!("-{e}\r\n"),
    }
}

fn connect(port: u16) -> redis::RedisResult<redis::Connection> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/"))?;
    let c = client.get_connection_with_timeout(Duration::from_secs(2))?;
    c.set_read_timeout(Some(Duration::from_secs(5)))?;
    Ok(c)
}

/// A reply in RESP text form.
fn resp(v: &redis::Value) -> String {
    use redis::Value as V;
    match v {
        V::Nil => "$-1\r\n".into(),
        V::Int(i) => format!(":{i}\r\n"),
        V::BulkString(b) => format!("${}\r\n{}\r\n", b.len(), String::from_utf8_lossy(b)),
        V::SimpleString(s) => format!("+{s}\r\n"),
        V::Okay => "+OK\r\n".into(),
        V::Array(items) | V::Set(items) => {
            let mut out = format!("*{}\r\n", items.len());
            for i in items {
                out.push_str(&resp(i));
            }
            out
        }
        V::ServerError(e) => format!("-{}\r\n", redis::RedisError::from(e.clone())),
        other => format!("{other:?}\r\n"),
    }
}

/// Everything the server on `port` executes for `d` (MONITOR), for debugging.
pub fn raw_monitor(port: u16, d: Duration) -> String {
    // The raw stream: MONITOR's replies never end, and a read timeout must
    // not break the connection (redis-rs treats it as broken).
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    let _ = s.write_all(b"MONITOR\r\n");
    let _ = s.set_read_timeout(Some(Duration::from_millis(50)));
    let t = Instant::now();
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    while t.elapsed() < d {
        if let Ok(n) = s.read(&mut buf) {
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
