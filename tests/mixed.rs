//! Rust and Python (the `leasehold` package in clients/python, redis-py, the
//! same .lua files) contending for one lease and one semaphore on a real
//! redis-server. (The package's own pytest suite adds the fault cases.)

use leasehold_testkit as support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use leasehold::Client;
use support::RedisServer;
use support::faults::mono_ns;

fn contend_py() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/python/contend.py")
}

fn python(url: &str, name: &str, log: &Path, args: &[&str]) -> Child {
    Command::new("python3")
        // The package from the source tree, installed or not.
        .env(
            "PYTHONPATH",
            Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/python"),
        )
        .arg(contend_py())
        .args([url, name])
        .arg(log)
        .args(args)
        .stdout(Stdio::null())
        .spawn()
        .expect("python3 (scripts/test.sh installs redis-py)")
}

fn append(log: &Path, line: String) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("log");
    f.write_all(format!("{line}\n").as_bytes()).expect("write");
}

/// (what, token, ns, lang) lines.
fn read(log: &Path) -> Vec<(String, u64, u64, String)> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some((
                f.first()?.to_string(),
                f.get(1)?.parse().ok()?,
                f.get(2)?.parse().ok()?,
                f.get(3)?.to_string(),
            ))
        })
        .collect()
}

async fn rust_loop(c: Client, name: &str, log: PathBuf, n: usize, slots: Option<u32>) {
    for _ in 0..n {
        let ttl = Duration::from_secs(5);
        let (token, release) = match slots {
            Some(k) => {
                let p = c
                    .semaphore(name, k)
                    .ttl(ttl)
                    .acquire()
                    .await
                    .expect("acquire");
                (p.token(), futures_util::future::Either::Left(p.release()))
            }
            None => {
                let l = c.lease(name).ttl(ttl).acquire().await.expect("acquire");
                (l.token(), futures_util::future::Either::Right(l.release()))
            }
        };
        append(&log, format!("enter {token} {} rs", mono_ns()));
        tokio::time::sleep(Duration::from_millis(3)).await;
        append(&log, format!("exit {token} {} rs", mono_ns()));
        release.await.expect("release");
    }
}

/// Max holders at once, from enter/exit events.
fn max_inside(events: &[(String, u64, u64, String)]) -> i32 {
    let mut ev: Vec<(u64, i32)> = events
        .iter()
        .filter(|e| e.0 == "enter" || e.0 == "exit")
        .map(|e| (e.2, if e.0 == "enter" { 1 } else { -1 }))
        .collect();
    ev.sort();
    let (mut now, mut max) = (0, 0);
    for (_, d) in ev {
        now += d;
        max = max.max(now);
    }
    max
}

async fn compete(slots: Option<u32>) -> Vec<(String, u64, u64, String)> {
    let r = RedisServer::start();
    r.warm();
    let dir = tempfile::tempdir().expect("dir");
    let log = dir.path().join("log");
    let name = if slots.is_some() {
        "mixed-sem"
    } else {
        "mixed"
    };
    let mut extra = vec!["loop", "40"];
    let k = slots.map(|k| k.to_string()).unwrap_or_default();
    if slots.is_some() {
        extra.extend(["--slots", &k]);
    }
    let url = r.url();
    let mut py: Vec<Child> = (0..2).map(|_| python(&url, name, &log, &extra)).collect();
    let c = Client::connect(&url).await.expect("connect");
    let c2 = Client::connect(&url).await.expect("connect");
    let a = tokio::spawn(rust_loop(c, name, log.clone(), 40, slots));
    let b = tokio::spawn(rust_loop(c2, name, log.clone(), 40, slots));
    a.await.expect("rust a");
    b.await.expect("rust b");
    for p in &mut py {
        assert!(
            p.wait().expect("python").success(),
            "python contender failed"
        );
    }
    read(&log)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_and_python_share_one_lease() {
    let events = compete(None).await;
    assert_eq!(events.iter().filter(|e| e.0 == "enter").count(), 160);
    assert!(events.iter().any(|e| e.3 == "py") && events.iter().any(|e| e.3 == "rs"));
    assert_eq!(max_inside(&events), 1, "two inside at once");
    // Tokens strictly increase across both languages, in order of entry.
    let mut enters: Vec<&(String, u64, u64, String)> =
        events.iter().filter(|e| e.0 == "enter").collect();
    enters.sort_by_key(|e| e.2);
    assert!(
        enters.windows(2).all(|w| w[1].1 > w[0].1),
        "tokens went backwards"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_and_python_share_one_semaphore() {
    let events = compete(Some(2)).await;
    assert_eq!(events.iter().filter(|e| e.0 == "enter").count(), 160);
    let max = max_inside(&events);
    assert!(max <= 2, "{max} inside a 2-slot semaphore");
    let mut tokens: Vec<u64> = events
        .iter()
        .filter(|e| e.0 == "enter")
        .map(|e| e.1)
        .collect();
    let n = tokens.len();
    tokens.sort_unstable();
    tokens.dedup();
    assert_eq!(tokens.len(), n, "every slot its own token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_wakes_a_waiter_of_the_other_language() {
    let r = RedisServer::start();
    r.warm();
    let url = r.url();
    let dir = tempfile::tempdir().expect("dir");
    let c = Client::connect(&url).await.expect("connect");

    // Rust holds, Python waits, Rust releases.
    let log = dir.path().join("a");
    let held = c
        .lease("wake")
        .ttl(Duration::from_secs(10))
        .acquire()
        .await
        .expect("hold");
    let mut py = python(&url, "wake", &log, &["wait"]);
    support::wait_for(Duration::from_secs(10), || {
        read(&log).iter().any(|e| e.0 == "waiting").then_some(())
    })
    .expect("python waits");
    tokio::time::sleep(Duration::from_millis(700)).await;
    let released = mono_ns();
    held.release().await.expect("release");
    assert!(py.wait().expect("python").success());
    let got = read(&log)
        .into_iter()
        .find(|e| e.0 == "acquired")
        .expect("python acquired");
    let took = Duration::from_nanos(got.2.saturating_sub(released));
    eprintln!("python woken {took:?} after the rust release");
    assert!(
        took < Duration::from_millis(500),
        "{took:?} (the TTL was 10 s)"
    );

    // Python holds, Rust waits, Python releases.
    let log = dir.path().join("b");
    let mut py = python(&url, "wake", &log, &["hold", "1.5"]);
    support::wait_for(Duration::from_secs(10), || {
        read(&log).iter().any(|e| e.0 == "held").then_some(())
    })
    .expect("python holds");
    let l = c
        .lease("wake")
        .ttl(Duration::from_secs(10))
        .acquire()
        .await
        .expect("rust acquires");
    let got = mono_ns();
    assert!(py.wait().expect("python").success());
    let rel = read(&log)
        .into_iter()
        .find(|e| e.0 == "release")
        .expect("python released");
    let took = Duration::from_nanos(got.saturating_sub(rel.2));
    eprintln!("rust woken {took:?} after the python release");
    assert!(took < Duration::from_millis(500), "{took:?}");
    l.release().await.expect("release");
}
