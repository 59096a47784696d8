//! Fault injection: "never two at once" under crashes, SIGTERM, partitions,
//! pauses and Redis restarts, checked by a fenced resource the workers write
//! to (`leasehold chaos`, real binary, real redis-server).
//!
//! The scenarios run one after another: their safety margins are timers, and
//! the 2-core CI machine should not be saturated by two chaos runs at once.

use leasehold_testkit as support;

use std::sync::Mutex;
use std::time::Duration;

use support::RedisServer;

static SERIAL: Mutex<()> = Mutex::new(());

/// Starts `leasehold chaos --json`; keep the returned dir until it finishes.
fn chaos(urls: &[String], extra: &[&str]) -> (tempfile::TempDir, std::process::Child) {
    let dir = tempfile::tempdir().expect("dir");
    let svg = dir.path().join("t.svg");
    let mut cmd = std::process::Command::new(support::leasehold_bin());
    cmd.arg("chaos").arg("--json").arg("--svg").arg(&svg);
    for u in urls {
        cmd.arg("--redis").arg(u);
    }
    cmd.args(extra)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = cmd.spawn().expect("spawn chaos");
    (dir, child)
}

fn finish(child: std::process::Child) -> serde_json::Value {
    let out = child.wait_with_output().expect("chaos output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "chaos failed: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

fn assert_safe(v: &serde_json::Value) {
    eprintln!("{v}");
    assert_eq!(v["overlap_outside_pauses_ms"].as_f64(), Some(0.0), "{v}");
    assert_eq!(v["stale_writes_accepted"], 0, "{v}");
    assert_eq!(v["tokens_strictly_increase"], true, "{v}");
    assert_eq!(v["orphans"], 0, "{v}");
    assert!(v["holders"].as_u64().unwrap_or(0) >= 2, "{v}");
}

fn seeded(r: &RedisServer) {
    r.warm();
}

#[test]
fn single_redis_kill_term_partition_pause() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let r = RedisServer::start();
    seeded(&r);
    let (_dir, child) = chaos(&[r.url()], &["--ttl", "1s", "--duration", "14s"]);
    let v = finish(child);
    assert_safe(&v);
    for f in ["kill", "term", "partition", "pause"] {
        assert!(v["faults"][f].as_u64().unwrap_or(0) >= 1, "{f}: {v}");
    }
    // A frozen supervisor's worker kept writing: fencing rejected it.
    assert!(v["stale_writes_rejected"].as_u64().unwrap_or(0) > 0, "{v}");
    // Crash/partition/pause: within TTL + 1 s. SIGTERM: well under a second.
    assert!(
        v["failover_ms"]["max"].as_f64().unwrap_or(f64::MAX) <= 2000.0,
        "{v}"
    );
    assert!(
        v["handover_ms"]["max"].as_f64().unwrap_or(f64::MAX) < 1000.0,
        "{v}"
    );
}

#[test]
fn redis_restart_without_persistence_under_a_leader() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut r = RedisServer::start();
    seeded(&r);
    let (_dir, child) = chaos(
        &[r.url()],
        &["--ttl", "1s", "--duration", "8s", "--faults", "none"],
    );
    std::thread::sleep(Duration::from_secs(3));
    r.restart();
    let v = finish(child);
    assert_safe(&v);
}

#[test]
fn ten_contenders_random_faults_for_a_minute() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let r = RedisServer::start();
    seeded(&r);
    let (_dir, child) = chaos(
        &[r.url()],
        &[
            "--ttl",
            "1s",
            "--duration",
            "60s",
            "--contenders",
            "10",
            "--random",
            "42",
        ],
    );
    let v = finish(child);
    assert_safe(&v);
}

#[test]
fn quorum_with_nodes_restarted() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut nodes: Vec<RedisServer> = (0..3).map(|_| RedisServer::start()).collect();
    for n in &nodes {
        seeded(n);
    }
    let urls: Vec<String> = nodes.iter().map(|n| n.url()).collect();
    let (_dir, child) = chaos(&urls, &["--ttl", "1s", "--duration", "14s"]);
    std::thread::sleep(Duration::from_secs(5));
    nodes[0].restart();
    std::thread::sleep(Duration::from_secs(4));
    nodes[1].restart();
    let v = finish(child);
    assert_safe(&v);
    assert!(v["faults"]["partition"].as_u64().unwrap_or(0) >= 1, "{v}");
}
