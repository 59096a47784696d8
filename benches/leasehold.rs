//! `cargo bench`: leasehold against the limit (a raw SET NX PX + DEL loop on the
//! same kind of connection) and against rslock, in one run, on a redis-server
//! this program starts itself. Prints a table and writes JSON to
//! `target/bench/leasehold.json` (or `$LEASEHOLD_BENCH_JSON`).
//!
//! `LEASEHOLD_BENCH_QUICK=1` shortens every phase (for a smoke run).

use leasehold_testkit as support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use leasehold::backend::{AcquireReply, Attempt};
use leasehold::{Client, HolderId};
use redis::AsyncCommands;
use serde_json::json;
use support::RedisServer;

fn quick() -> bool {
    std::env::var("LEASEHOLD_BENCH_QUICK").is_ok()
}

fn phase() -> Duration {
    if quick() {
        Duration::from_millis(500)
    } else {
        Duration::from_secs(3)
    }
}

struct Lat(Vec<Duration>);

impl Lat {
    fn pct(&mut self, p: f64) -> f64 {
        if self.0.is_empty() {
            return f64::NAN;
        }
        self.0.sort();
        let i = ((self.0.len() as f64 - 1.0) * p).round() as usize;
        self.0[i].as_secs_f64() * 1000.0
    }
    fn max(&self) -> f64 {
        self.0
            .iter()
            .max()
            .map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0)
    }
}

/// Who is measured, to count the requests its clients sent.
#[derive(Clone, Copy)]
enum Who {
    Raw,
    Leasehold,
    Rslock,
}

/// Requests clients sent to Redis. INFO commandstats also counts the commands
/// scripts run inside Redis, so only commands no script of that client issues
/// are summed: raw sends SET and DEL; rslock SET and its unlock script;
/// leasehold only scripts and pub/sub commands.
fn requests(r: &RedisServer, who: Who) -> u64 {
    let names: &[&str] = match who {
        Who::Raw => &["set", "del"],
        Who::Rslock => &["set", "evalsha", "eval"],
        Who::Leasehold => &[
            "evalsha",
            "eval",
            "subscribe",
            "unsubscribe",
            "script",
            "wait",
            "ping",
        ],
    };
    r.command_calls(names)
}

/// Every command Redis executed, counting those scripts run inside it (INFO
/// commandstats counts both), minus this measurement's own INFO.
fn all_commands(r: &RedisServer) -> u64 {
    r.cmd(&["INFO", "commandstats"])
        .lines()
        .filter_map(|l| {
            let (_, rest) = l.strip_prefix("cmdstat_")?.split_once(':')?;
            rest.split("calls=")
                .nth(1)?
                .split(',')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum::<u64>()
        .saturating_sub(1)
}

fn cpu_seconds() -> f64 {
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(u.ru_utime) + tv(u.ru_stime)
}

fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// `SET key v NX PX 10000`: true when it took the key.
async fn set_nx(c: &mut redis::aio::MultiplexedConnection, key: &str) -> bool {
    let ok: Option<String> = redis::cmd("SET")
        .arg(key)
        .arg("v")
        .arg("NX")
        .arg("PX")
        .arg(10_000)
        .query_async(c)
        .await
        .expect("set");
    ok.is_some()
}

// ---------- 1. uncontended ----------

async fn raw_pairs(url: &str, d: Duration) -> (f64, Lat) {
    let client = redis::Client::open(url).expect("url");
    let mut c = client
        .get_multiplexed_async_connection()
        .await
        .expect("conn");
    let mut lat = Vec::new();
    let t0 = Instant::now();
    while t0.elapsed() < d {
        let t = Instant::now();
        assert!(set_nx(&mut c, "raw").await);
        let _: i64 = c.del("raw").await.expect("del");
        lat.push(t.elapsed());
    }
    (lat.len() as f64 / t0.elapsed().as_secs_f64(), Lat(lat))
}

async fn leasehold_pairs(url: &str, d: Duration, waiting: bool) -> (f64, Lat) {
    let c = Client::connect(url).await.expect("connect");
    let mut lat = Vec::new();
    let t0 = Instant::now();
    while t0.elapsed() < d {
        let t = Instant::now();
        let b = c.lease("uncontended").ttl(Duration::from_secs(10));
        let l = if waiting {
            b.acquire().await.expect("acquire")
        } else {
            b.try_acquire().await.expect("acquire").expect("free")
        };
        l.release().await.expect("release");
        lat.push(t.elapsed());
    }
    (lat.len() as f64 / t0.elapsed().as_secs_f64(), Lat(lat))
}

/// Commands Redis executes for one pair (inside scripts included), over `n` pairs.
async fn commands_per_pair<F, Fut>(r: &RedisServer, n: u64, pair: F) -> f64
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    pair().await;
    let before = all_commands(r);
    for _ in 0..n {
        pair().await;
    }
    (all_commands(r) - before) as f64 / n as f64
}

async fn rslock_pairs(url: &str, d: Duration) -> (f64, Lat) {
    let lm = rslock::LockManager::new(vec![url.to_string()]);
    let mut lat = Vec::new();
    let t0 = Instant::now();
    while t0.elapsed() < d {
        let t = Instant::now();
        let lock = lm
            .lock("rslock-uncontended", Duration::from_secs(10))
            .await
            .expect("lock");
        lm.unlock(&lock).await;
        lat.push(t.elapsed());
    }
    (lat.len() as f64 / t0.elapsed().as_secs_f64(), Lat(lat))
}

// ---------- 2. contended ----------

struct Contended {
    per_sec: f64,
    fairness: f64,
    cmds_per_cs: f64,
    /// Every command Redis executed per critical section, inside scripts too.
    all_per_cs: f64,
}

async fn contended<F, Fut>(r: &RedisServer, who: Who, n: usize, d: Duration, make: F) -> Contended
where
    F: Fn(usize, Arc<AtomicBool>) -> Fut,
    Fut: std::future::Future<Output = u64> + Send + 'static,
{
    let stop = Arc::new(AtomicBool::new(false));
    let before = requests(r, who);
    let all_before = all_commands(r);
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..n {
        tasks.push(tokio::spawn(make(i, stop.clone())));
    }
    tokio::time::sleep(d).await;
    stop.store(true, Ordering::SeqCst);
    let mut counts = Vec::new();
    for t in tasks {
        counts.push(t.await.expect("contender"));
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let total: u64 = counts.iter().sum();
    let min = *counts.iter().min().unwrap_or(&0) as f64;
    let max = *counts.iter().max().unwrap_or(&1) as f64;
    Contended {
        per_sec: total as f64 / elapsed,
        fairness: if max > 0.0 { min / max } else { 0.0 },
        cmds_per_cs: (requests(r, who) - before) as f64 / total.max(1) as f64,
        all_per_cs: (all_commands(r) - all_before) as f64 / total.max(1) as f64,
    }
}

async fn raw_contender(url: String, key: String, stop: Arc<AtomicBool>) -> u64 {
    let client = redis::Client::open(url.as_str()).expect("url");
    let mut c = client
        .get_multiplexed_async_connection()
        .await
        .expect("conn");
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        if set_nx(&mut c, &key).await {
            n += 1;
            let _: i64 = c.del(&key).await.expect("del");
        }
    }
    n
}

async fn leasehold_contender(url: String, name: String, stop: Arc<AtomicBool>) -> u64 {
    let c = Client::connect(&url).await.expect("connect");
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        let got = tokio::time::timeout(
            Duration::from_millis(500),
            c.lease(name.clone()).ttl(Duration::from_secs(10)).acquire(),
        )
        .await;
        if let Ok(Ok(l)) = got {
            n += 1;
            l.release().await.expect("release");
        }
    }
    n
}

async fn semaphore_contender(url: String, name: String, stop: Arc<AtomicBool>) -> u64 {
    let c = Client::connect(&url).await.expect("connect");
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        let got = tokio::time::timeout(
            Duration::from_millis(500),
            c.semaphore(name.clone(), SEM_SLOTS)
                .ttl(Duration::from_secs(10))
                .acquire(),
        )
        .await;
        if let Ok(Ok(p)) = got {
            n += 1;
            p.release().await.expect("release");
        }
    }
    n
}

/// Slots of the contended semaphore (section 2).
const SEM_SLOTS: u32 = 2;

async fn rslock_contender(url: String, name: String, stop: Arc<AtomicBool>) -> u64 {
    let lm = rslock::LockManager::new(vec![url]);
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        if let Ok(lock) = lm.lock(name.as_str(), Duration::from_secs(10)).await {
            n += 1;
            lm.unlock(&lock).await;
        }
    }
    n
}

// ---------- 3. handover, 4. crash takeover ----------

async fn handover(url: &str, rounds: usize) -> Lat {
    let a = Client::connect(url).await.expect("connect");
    let b = Client::connect(url).await.expect("connect");
    let mut lat = Vec::new();
    for _ in 0..rounds {
        let held = a
            .lease("handover")
            .ttl(Duration::from_secs(10))
            .acquire()
            .await
            .expect("a");
        let b2 = b.clone();
        let waiter = tokio::spawn(async move {
            let l = b2
                .lease("handover")
                .ttl(Duration::from_secs(10))
                .acquire()
                .await
                .expect("b");
            (Instant::now(), l)
        });
        tokio::time::sleep(Duration::from_millis(5)).await;
        let t = Instant::now();
        held.release().await.expect("release");
        let (at, l) = waiter.await.expect("waiter");
        lat.push(at - t);
        l.release().await.expect("release");
    }
    Lat(lat)
}

async fn rslock_handover(url: &str, rounds: usize) -> Lat {
    let lm = Arc::new(rslock::LockManager::new(vec![url.to_string()]));
    let mut lat = Vec::new();
    for _ in 0..rounds {
        let held = lm
            .lock("rs-handover", Duration::from_secs(10))
            .await
            .expect("lock");
        let lm2 = lm.clone();
        let waiter = tokio::spawn(async move {
            let l = lm2
                .acquire_no_guard("rs-handover", Duration::from_secs(10))
                .await
                .expect("acquire");
            (Instant::now(), l)
        });
        tokio::time::sleep(Duration::from_millis(5)).await;
        let t = Instant::now();
        lm.unlock(&held).await;
        let (at, l) = waiter.await.expect("waiter");
        lat.push(at - t);
        lm.unlock(&l).await;
    }
    Lat(lat)
}

/// A holder that vanishes: acquired through the protocol layer, never renewed
/// or released. Overhead = when the waiter holds it, minus when the key expired
/// (acquire sent + TTL, an upper bound on the expiry, so the overhead is not
/// understated).
async fn crash_takeover(url: &str, rounds: usize, ttl: Duration) -> Lat {
    let c = Client::connect(url).await.expect("connect");
    let w = Client::connect(url).await.expect("connect");
    let mut lat = Vec::new();
    for _ in 0..rounds {
        let ghost = HolderId::generate();
        let sent = Instant::now();
        let r = c
            .backend()
            .attempt(&Attempt::lease("crash", &ghost, ttl))
            .await
            .expect("acquire");
        assert!(matches!(r, AcquireReply::Acquired { .. }), "{r:?}");
        let l = w.lease("crash").ttl(ttl).acquire().await.expect("takeover");
        let at = Instant::now();
        lat.push(at.saturating_duration_since(sent + ttl));
        l.release().await.expect("release");
    }
    Lat(lat)
}

// ---------- 5. standby, 6. many leases ----------

async fn standby(r: &RedisServer, waiters: usize, ttl: Duration, d: Duration) -> (f64, f64) {
    let url = r.url();
    let holder_client = Client::connect(&url).await.expect("connect");
    let held = holder_client
        .lease("standby")
        .ttl(ttl)
        .acquire()
        .await
        .expect("hold");
    let wc = Client::connect(&url).await.expect("connect");
    let mut tasks = Vec::new();
    for _ in 0..waiters {
        let wc = wc.clone();
        tasks.push(tokio::spawn(async move {
            let _ = wc.lease("standby").ttl(ttl).acquire().await;
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (c0, cpu0, t0) = (requests(r, Who::Leasehold), cpu_seconds(), Instant::now());
    tokio::time::sleep(d).await;
    let (c1, cpu1, el) = (requests(r, Who::Leasehold), cpu_seconds(), t0.elapsed());
    let renewals = el.as_secs_f64() / (ttl.as_secs_f64() / 3.0);
    let waiter_cmds = (c1 - c0) as f64 - renewals;
    for t in tasks {
        t.abort();
    }
    drop(held);
    let per_waiter_per_ttl =
        waiter_cmds.max(0.0) / waiters as f64 / (el.as_secs_f64() / ttl.as_secs_f64());
    let cpu_per_waiter_pct = (cpu1 - cpu0) / el.as_secs_f64() * 100.0 / waiters as f64;
    (per_waiter_per_ttl, cpu_per_waiter_pct)
}

struct Many {
    renew_cmds_per_sec: f64,
    cpu_pct: f64,
    rss_mib: f64,
    lost: usize,
}

async fn many(r: &RedisServer, n: usize, d: Duration) -> Many {
    let c = Client::connect(&r.url()).await.expect("connect");
    let rss0 = rss_mib();
    let ttl = Duration::from_secs(10);
    let mut leases = Vec::with_capacity(n);
    let chunk = 500;
    let mut i = 0;
    while i < n {
        let batch: Vec<_> = (i..(i + chunk).min(n))
            .map(|j| c.lease(format!("many-{j}")).ttl(ttl).try_acquire())
            .collect();
        for l in futures_util::future::join_all(batch).await {
            leases.push(l.expect("acquire").expect("free"));
        }
        i += chunk;
    }
    // Let the acquisition burst's renewals spread out, then measure.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (c0, cpu0, t0) = (requests(r, Who::Leasehold), cpu_seconds(), Instant::now());
    tokio::time::sleep(d).await;
    let (c1, cpu1, el) = (requests(r, Who::Leasehold), cpu_seconds(), t0.elapsed());
    let lost = leases.iter().filter(|l| !l.is_held()).count();
    let out = Many {
        renew_cmds_per_sec: (c1 - c0) as f64 / el.as_secs_f64(),
        cpu_pct: (cpu1 - cpu0) / el.as_secs_f64() * 100.0,
        rss_mib: rss_mib() - rss0,
        lost,
    };
    // Dropping releases in the background; give it a moment.
    drop(leases);
    tokio::time::sleep(Duration::from_millis(500)).await;
    out
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let r = RedisServer::start_with(&["--maxmemory-policy", "noeviction"]);
    r.warm();
    let url = r.url();
    let d = phase();
    println!(
        "leasehold bench: redis-server on {url}, {} s per phase\n",
        d.as_secs_f64()
    );

    // 1. Uncontended.
    let (raw_rate, mut raw_lat) = raw_pairs(&url, d).await;
    let (lh_rate, mut lh_lat) = leasehold_pairs(&url, d, false).await;
    let (lhw_rate, mut lhw_lat) = leasehold_pairs(&url, d, true).await;
    let (rs_rate, mut rs_lat) = rslock_pairs(&url, d).await;
    let raw_cmds = {
        let client = redis::Client::open(url.as_str()).expect("url");
        let conn = client
            .get_multiplexed_async_connection()
            .await
            .expect("conn");
        commands_per_pair(&r, 200, || {
            let mut c = conn.clone();
            async move {
                assert!(set_nx(&mut c, "raw-count").await);
                let _: i64 = c.del("raw-count").await.expect("del");
            }
        })
        .await
    };
    let lh_client = Client::connect(&url).await.expect("connect");
    let lh_cmds = commands_per_pair(&r, 200, || {
        let c = lh_client.clone();
        async move {
            let l = c
                .lease("count")
                .ttl(Duration::from_secs(10))
                .acquire()
                .await
                .expect("acquire");
            l.release().await.expect("release");
        }
    })
    .await;
    let rs_lm = rslock::LockManager::new(vec![url.clone()]);
    let rs_cmds = commands_per_pair(&r, 200, || async {
        let lock = rs_lm
            .lock("rs-count", Duration::from_secs(10))
            .await
            .expect("lock");
        rs_lm.unlock(&lock).await;
    })
    .await;
    println!("1. uncontended acquire+release pairs on one connection");
    println!(
        "   {:<28} {:>10} {:>9} {:>9} {:>8} {:>15}",
        "", "pairs/s", "p50 ms", "p99 ms", "× raw", "Redis cmds/pair"
    );
    for (name, rate, lat, cmds) in [
        ("raw SET NX PX + DEL", raw_rate, &mut raw_lat, raw_cmds),
        ("leasehold try_acquire", lh_rate, &mut lh_lat, lh_cmds),
        (
            "leasehold acquire (waiting)",
            lhw_rate,
            &mut lhw_lat,
            lh_cmds,
        ),
        ("rslock 0.10", rs_rate, &mut rs_lat, rs_cmds),
    ] {
        println!(
            "   {:<28} {:>10.0} {:>9.3} {:>9.3} {:>8.2} {:>15.1}",
            name,
            rate,
            lat.pct(0.5),
            lat.pct(0.99),
            rate / raw_rate,
            cmds
        );
    }
    println!(
        "   (Redis cmds/pair: every command Redis ran, inside scripts too, INFO commandstats)"
    );

    // 2. Contended.
    println!("\n2. contended: N contenders (one connection each) on one name");
    println!(
        "   {:<12} {:>4} {:>10} {:>10} {:>13} {:>16} {:>12} {:>14}",
        "",
        "N",
        "CS/s",
        "× raw spin",
        "× raw uncont.",
        "fairness min/max",
        "requests/CS",
        "Redis cmds/CS"
    );
    let mut contended_json = Vec::new();
    for n in [8usize, 64] {
        let raw = contended(&r, Who::Raw, n, d, |_, stop| {
            raw_contender(url.clone(), format!("raw-c{n}"), stop)
        })
        .await;
        let lh = contended(&r, Who::Leasehold, n, d, |_, stop| {
            leasehold_contender(url.clone(), format!("lh-c{n}"), stop)
        })
        .await;
        let rs = contended(&r, Who::Rslock, n, d, |_, stop| {
            rslock_contender(url.clone(), format!("rs-c{n}"), stop)
        })
        .await;
        for (name, c) in [("raw spin", &raw), ("leasehold", &lh), ("rslock 0.10", &rs)] {
            println!(
                "   {:<12} {:>4} {:>10.0} {:>10.2} {:>13.2} {:>16.2} {:>12.1} {:>14.1}",
                name,
                n,
                c.per_sec,
                c.per_sec / raw.per_sec,
                c.per_sec / raw_rate,
                c.fairness,
                c.cmds_per_cs,
                c.all_per_cs
            );
            contended_json.push(json!({"who": name, "n": n, "cs_per_sec": c.per_sec, "x_raw": c.per_sec / raw.per_sec, "x_raw_uncontended": c.per_sec / raw_rate, "fairness": c.fairness, "cmds_per_cs": c.cmds_per_cs, "redis_cmds_per_cs": c.all_per_cs}));
        }
    }

    // A semaphore of SEM_SLOTS slots, 8 contenders: grant on release as for a
    // lease; a critical section here is one permit held and given back.
    let sem = contended(&r, Who::Leasehold, 8, d, |_, stop| {
        semaphore_contender(url.clone(), "sem-c8".into(), stop)
    })
    .await;
    println!(
        "   {:<12} {:>4} {:>10.0} {:>10} {:>13.2} {:>16.2} {:>12.1} {:>14.1}",
        format!("semaphore/{SEM_SLOTS}"),
        8,
        sem.per_sec,
        "-",
        sem.per_sec / raw_rate,
        sem.fairness,
        sem.cmds_per_cs,
        sem.all_per_cs
    );
    contended_json.push(json!({"who": format!("leasehold semaphore/{SEM_SLOTS}"), "n": 8, "cs_per_sec": sem.per_sec, "x_raw_uncontended": sem.per_sec / raw_rate, "fairness": sem.fairness, "cmds_per_cs": sem.cmds_per_cs, "redis_cmds_per_cs": sem.all_per_cs}));

    // 3. Handover.
    let rounds = if quick() { 20 } else { 200 };
    let mut ho = handover(&url, rounds).await;
    let mut rs_ho = rslock_handover(&url, rounds.min(50)).await;
    println!("\n3. handover: release -> the waiting contender holds the lease");
    println!(
        "   {:<12} {:>9} {:>9} {:>9}",
        "", "p50 ms", "p99 ms", "max ms"
    );
    println!(
        "   {:<12} {:>9.3} {:>9.3} {:>9.3}",
        "leasehold",
        ho.pct(0.5),
        ho.pct(0.99),
        ho.max()
    );
    println!(
        "   {:<12} {:>9.3} {:>9.3} {:>9.3}",
        "rslock 0.10",
        rs_ho.pct(0.5),
        rs_ho.pct(0.99),
        rs_ho.max()
    );

    // 4. Crash takeover.
    let crash_rounds = if quick() { 5 } else { 30 };
    let mut ct = crash_takeover(&url, crash_rounds, Duration::from_millis(200)).await;
    println!(
        "\n4. crash takeover: time beyond the key's expiry until a waiter holds it (TTL 200 ms)"
    );
    println!(
        "   leasehold     p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        ct.pct(0.5),
        ct.pct(0.99),
        ct.max()
    );

    // 5. Standby.
    let (cmds_per_ttl, cpu_per_waiter) = standby(
        &r,
        20,
        Duration::from_secs(2),
        if quick() {
            Duration::from_secs(2)
        } else {
            Duration::from_secs(10)
        },
    )
    .await;
    println!("\n5. standby: 20 idle waiters behind a live holder (TTL 2 s)");
    println!(
        "   {cmds_per_ttl:.2} Redis commands per waiter per TTL, {cpu_per_waiter:.3} % of a core per waiter"
    );

    // 6. Many leases.
    println!("\n6. many leases held by one process (TTL 10 s, renewed every 3.3 s)");
    println!(
        "   {:>8} {:>14} {:>12} {:>10} {:>6}",
        "leases", "renewals/s", "CPU % core", "RSS MiB", "lost"
    );
    let mut many_json = Vec::new();
    let sizes: &[usize] = if quick() {
        &[1_000]
    } else {
        &[10_000, 100_000]
    };
    let hold = if quick() {
        Duration::from_secs(2)
    } else {
        Duration::from_secs(10)
    };
    for &n in sizes {
        let m = many(&r, n, hold).await;
        println!(
            "   {:>8} {:>14.0} {:>12.1} {:>10.1} {:>6}",
            n, m.renew_cmds_per_sec, m.cpu_pct, m.rss_mib, m.lost
        );
        many_json.push(json!({"leases": n, "renewals_per_sec": m.renew_cmds_per_sec, "cpu_pct_of_core": m.cpu_pct, "rss_mib": m.rss_mib, "lost": m.lost}));
    }

    let out = json!({
        "redis": r.cmd(&["INFO", "server"]).lines().find(|l| l.starts_with("redis_version")).unwrap_or("").trim(),
        "phase_secs": d.as_secs_f64(),
        "uncontended": {
            "raw": {"pairs_per_sec": raw_rate, "p50_ms": raw_lat.pct(0.5), "p99_ms": raw_lat.pct(0.99)},
            "leasehold": {"pairs_per_sec": lh_rate, "p50_ms": lh_lat.pct(0.5), "p99_ms": lh_lat.pct(0.99), "x_raw": lh_rate / raw_rate, "redis_cmds_per_pair": lh_cmds},
            "leasehold_waiting": {"pairs_per_sec": lhw_rate, "p50_ms": lhw_lat.pct(0.5), "p99_ms": lhw_lat.pct(0.99), "x_raw": lhw_rate / raw_rate},
            "raw_cmds_per_pair": raw_cmds,
            "rslock_cmds_per_pair": rs_cmds,
            "rslock": {"pairs_per_sec": rs_rate, "p50_ms": rs_lat.pct(0.5), "p99_ms": rs_lat.pct(0.99), "x_raw": rs_rate / raw_rate},
        },
        "contended": contended_json,
        "handover_ms": {"leasehold": {"p50": ho.pct(0.5), "p99": ho.pct(0.99), "max": ho.max()}, "rslock": {"p50": rs_ho.pct(0.5), "p99": rs_ho.pct(0.99), "max": rs_ho.max()}},
        "crash_overhead_ms": {"p50": ct.pct(0.5), "p99": ct.pct(0.99), "max": ct.max()},
        "standby": {"cmds_per_waiter_per_ttl": cmds_per_ttl, "cpu_pct_per_waiter": cpu_per_waiter},
        "many": many_json,
    });
    let path = std::env::var("LEASEHOLD_BENCH_JSON").unwrap_or_else(|_| {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench");
        let _ = std::fs::create_dir_all(&dir);
        dir.join("leasehold.json").to_string_lossy().into_owned()
    });
    match std::fs::write(
        &path,
        serde_json::to_string_pretty(&out).unwrap_or_default(),
    ) {
        Ok(()) => println!("\nJSON: {path}"),
        Err(e) => eprintln!("cannot write {path}: {e}"),
    }
}
