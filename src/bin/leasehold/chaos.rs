//! `leasehold chaos`: local contenders (`leasehold run --forever` each, with a
//! worker that writes to a fenced resource), faults injected from the client
//! side, and what the resource saw.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::faults::{Analysis, Fault, FencedResource, Proxy, analyse, mono_ns, pid_alive, svg};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::cli::{ChaosArgs, ChaosWorkerArgs};
use crate::exit::{self, Failure, Outcome};

/// The worker: writes `W <token> <supervisor> <pid>` every 2 ms until killed.
pub fn worker(a: ChaosWorkerArgs) -> Outcome {
    use std::io::{BufRead, BufReader, Write};
    let token = std::env::var("LEASEHOLD_TOKEN").unwrap_or_default();
    let Ok(conn) = std::net::TcpStream::connect(&a.resource) else {
        return Err(Failure::Msg(
            exit::UNAVAILABLE,
            format!("chaos-worker: cannot reach {}", a.resource),
        ));
    };
    let Ok(mut out) = conn.try_clone() else {
        return Err(Failure::software("chaos-worker: cannot use its connection"));
    };
    let mut replies = BufReader::new(conn);
    // Host pids, also when the job runs in a PID namespace of its own: the
    // supervisor's from the holder id (host/pid/random), ours from /proc/self.
    let supervisor = std::env::var("LEASEHOLD_HOLDER")
        .ok()
        .and_then(|h| h.split('/').nth(1)?.parse::<u32>().ok())
        .unwrap_or_else(std::os::unix::process::parent_id);
    let pid = std::fs::read_link("/proc/self")
        .ok()
        .and_then(|p| p.to_str()?.parse::<u32>().ok())
        .unwrap_or_else(std::process::id);
    let line = format!("W {token} {supervisor} {pid}\n");
    let mut reply = String::new();
    loop {
        if out.write_all(line.as_bytes()).is_err() {
            return Ok(exit::OK);
        }
        reply.clear();
        if replies.read_line(&mut reply).unwrap_or(0) == 0 {
            return Ok(exit::OK);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

struct Contender {
    child: Child,
    proxies: Vec<Proxy>,
}

impl Contender {
    fn pid(&self) -> u32 {
        self.child.id()
    }
    fn signal(&self, s: Signal) {
        let _ = kill(Pid::from_raw(self.pid() as i32), s);
    }
}

/// host:port of a plain redis:// URL, for proxying; None for other kinds.
fn plain_target(url: &str) -> Option<(String, String, u16)> {
    let rest = url.strip_prefix("redis://")?;
    let (auth, hostpart) = match rest.rsplit_once('@') {
        Some((a, h)) => (format!("{a}@"), h),
        None => (String::new(), rest),
    };
    let hostport = hostpart.split('/').next()?;
    let (host, port) = hostport.rsplit_once(':').unwrap_or((hostport, "6379"));
    if host != "127.0.0.1" && host != "localhost" {
        return None;
    }
    Some((
        auth,
        hostpart[hostport.len()..].to_string(),
        port.parse().ok()?,
    ))
}

fn spawn(a: &ChaosArgs, urls: &[String], name: &str, resource: &str) -> std::io::Result<Contender> {
    let exe = std::env::current_exe()?;
    let mut proxies = Vec::new();
    let mut args: Vec<String> = vec![
        "run".into(),
        "--name".into(),
        name.into(),
        "--forever".into(),
        "--prefix".into(),
        a.prefix.clone(),
        "--ttl".into(),
        humantime::format_duration(a.ttl).to_string(),
        "--grace".into(),
        humantime::format_duration(a.ttl / 5).to_string(),
    ];
    for u in urls {
        let via = match plain_target(u) {
            Some((auth, tail, port)) => {
                let p = Proxy::start(port)?;
                let url = format!("redis://{auth}127.0.0.1:{}{tail}", p.port);
                proxies.push(p);
                url
            }
            None => u.clone(),
        };
        args.push("--redis".into());
        args.push(via);
    }
    args.push("--".into());
    args.push(exe.to_string_lossy().into_owned());
    args.push("chaos-worker".into());
    args.push("--resource".into());
    args.push(resource.into());
    let child = Command::new(&exe)
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    Ok(Contender { child, proxies })
}

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// A tiny deterministic generator for `--random`.
fn next(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

pub async fn chaos(a: ChaosArgs) -> Outcome {
    let urls = match crate::cli::urls_or_env(&a.redis) {
        Ok(u) => u,
        Err(e) => return Err(e.into()),
    };
    for f in &a.faults {
        if !["kill", "term", "partition", "pause", "none"].contains(&f.as_str()) {
            return Err(Failure::usage(format!(
                "unknown fault {f:?} (use kill, term, partition, pause, none)"
            )));
        }
    }
    if a.contenders < 2 {
        return Err(Failure::usage("--contenders must be at least 2"));
    }
    // The contenders run `run --ttl TTL --grace TTL/5`: a TTL they would
    // refuse is refused here, before anything starts.
    let fits = leasehold::LeaseConfig::new(a.ttl).and_then(|c| {
        leasehold::supervisor::Supervisor::new("worker", Vec::new())
            .grace(a.ttl / 5)
            .check_fits(&c)
    });
    if let Err(e) = fits {
        // Always a usage error here, whatever its kind.
        return Err(Failure::usage(e.to_string()));
    }
    // The timeline is written at the end: find out now that it cannot be.
    if let Err(e) = std::fs::File::create(&a.svg) {
        return Err(Failure::usage(format!(
            "cannot write the timeline to {}: {e} (choose another --svg)",
            a.svg.display()
        )));
    }
    // Check the Redis before starting anything.
    let client = match leasehold::Client::builder_many(urls.clone())
        .prefix(a.prefix.clone())
        .connect()
        .await
    {
        Ok(c) => c,
        Err(e) => return Err(e.into()),
    };
    drop(client);
    let resource = match FencedResource::start() {
        Ok(r) => r,
        Err(e) => {
            return Err(Failure::software(format!(
                "cannot start the fenced resource: {e}"
            )));
        }
    };
    let name = format!("chaos-{}", std::process::id());
    let mut contenders = Vec::new();
    for _ in 0..a.contenders {
        match spawn(&a, &urls, &name, &resource.addr()) {
            Ok(c) => contenders.push(c),
            Err(e) => {
                return Err(Failure::software(format!("cannot start a contender: {e}")));
            }
        }
    }
    let start_ns = mono_ns();
    let mut faults: Vec<Fault> = Vec::new();
    let mut excused: Vec<(u64, u64)> = Vec::new();
    let mut failover = Vec::new();
    let mut handover = Vec::new();
    let mut skipped = Vec::new();
    let mut seed = a.random.unwrap_or(0).max(1);
    let t0 = Instant::now();
    let settle = a.ttl * 4 + Duration::from_secs(3);

    // The leader is whoever wrote last with the highest token.
    let leader = |res: &FencedResource| -> Option<(u64, u32)> {
        res.writes()
            .iter()
            .rev()
            .find(|w| w.accepted)
            .map(|w| (w.token, w.supervisor))
    };
    let wait_new_leader = |res: &FencedResource, after: u64, limit: Duration| -> Option<u64> {
        let t = Instant::now();
        while t.elapsed() < limit {
            if let Some(w) = res.writes().iter().find(|w| w.accepted && w.token > after) {
                return Some(w.at_ns);
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        None
    };
    if wait_new_leader(&resource, 0, settle).is_none() {
        eprintln!("leasehold: no contender got the lease within {settle:?}");
    }
    let mut i = 0usize;
    while t0.elapsed() < a.duration {
        std::thread::sleep(Duration::from_millis(500));
        let fault = match a.random {
            Some(_) => a.faults[(next(&mut seed) % a.faults.len() as u64) as usize].clone(),
            None => a.faults[i % a.faults.len()].clone(),
        };
        i += 1;
        let Some((token, sup)) = leader(&resource) else {
            continue;
        };
        let Some(idx) = contenders.iter().position(|c| c.pid() == sup) else {
            continue;
        };
        let at = mono_ns();
        match fault.as_str() {
            "none" => {
                std::thread::sleep(a.ttl);
                continue;
            }
            "kill" => {
                contenders[idx].signal(Signal::SIGKILL);
                let mut dead = contenders.remove(idx);
                let _ = dead.child.wait();
                if let Ok(c) = spawn(&a, &urls, &name, &resource.addr()) {
                    contenders.push(c);
                }
            }
            "term" => {
                contenders[idx].signal(Signal::SIGTERM);
            }
            "partition" => {
                if contenders[idx].proxies.is_empty() {
                    skipped.push("partition (not a redis:// URL on loopback)");
                    continue;
                }
                for p in &contenders[idx].proxies {
                    p.blackhole();
                }
            }
            "pause" => {
                contenders[idx].signal(Signal::SIGSTOP);
            }
            _ => continue,
        }
        faults.push(Fault {
            at_ns: at,
            kind: fault.clone(),
            supervisor: sup,
        });
        let took = wait_new_leader(&resource, token, settle);
        if let Some(new_at) = took {
            let d = ms(new_at.saturating_sub(at));
            if fault == "term" {
                handover.push(d);
            } else {
                failover.push(d);
            }
        }
        match fault.as_str() {
            "partition" => {
                std::thread::sleep(
                    (a.ttl * 2).saturating_sub(Duration::from_nanos(mono_ns() - at)),
                );
                for p in &contenders[idx].proxies {
                    p.heal();
                }
            }
            "pause" => {
                std::thread::sleep(
                    (a.ttl * 2).saturating_sub(Duration::from_nanos(mono_ns() - at)),
                );
                contenders[idx].signal(Signal::SIGCONT);
                // A frozen supervisor cannot stop its child: its writes overlap
                // until it wakes and notices; fencing must reject them.
                std::thread::sleep(Duration::from_millis(500));
                excused.push((at, mono_ns()));
            }
            "term" => {
                let _ = contenders[idx].child.wait();
                let old = contenders.remove(idx);
                drop(old);
                if let Ok(c) = spawn(&a, &urls, &name, &resource.addr()) {
                    contenders.push(c);
                }
            }
            _ => {}
        }
    }
    // Stop everyone; no worker may outlive its supervisor.
    for c in &contenders {
        c.signal(Signal::SIGCONT);
        c.signal(Signal::SIGTERM);
    }
    for c in &mut contenders {
        let _ = c.child.wait();
    }
    let end_ns = mono_ns();
    std::thread::sleep(Duration::from_millis(300));
    let writes = resource.writes();
    let mut workers: Vec<u32> = writes.iter().map(|w| w.worker).collect();
    workers.sort_unstable();
    workers.dedup();
    let t = Instant::now();
    while workers.iter().any(|p| pid_alive(*p)) && t.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(10));
    }
    let orphans: Vec<u32> = workers.iter().copied().filter(|p| pid_alive(*p)).collect();
    for p in &orphans {
        let _ = kill(Pid::from_raw(*p as i32), Signal::SIGKILL);
    }
    let analysis = analyse(&writes, &excused);
    let picture = svg(&analysis, &faults, &excused, start_ns, end_ns);
    let written = std::fs::write(&a.svg, picture);
    report(
        &a,
        &analysis,
        &faults,
        &mut failover,
        &mut handover,
        &orphans,
        &skipped,
    );
    match written {
        Ok(()) => Ok(exit::OK),
        Err(e) => Err(Failure::software(format!(
            "cannot write {}: {e}",
            a.svg.display()
        ))),
    }
}

fn report(
    a: &ChaosArgs,
    an: &Analysis,
    faults: &[Fault],
    failover: &mut [f64],
    handover: &mut [f64],
    orphans: &[u32],
    skipped: &[&str],
) {
    let count = |k: &str| faults.iter().filter(|f| f.kind == k).count();
    if a.json {
        println!(
            "{}",
            serde_json::json!({
                "ttl_ms": a.ttl.as_millis() as u64,
                "faults": {"kill": count("kill"), "term": count("term"), "partition": count("partition"), "pause": count("pause")},
                "holders": an.tenures.len(),
                "overlap_ms": an.overlap_ms,
                "overlap_outside_pauses_ms": an.overlap_outside_excused_ms,
                "stale_writes_rejected": an.rejected,
                "stale_writes_accepted": an.stale_accepted,
                "tokens_strictly_increase": an.tokens_increase,
                "orphans": orphans.len(),
                "failover_ms": {"p50": pct(failover, 0.5), "max": pct(failover, 1.0), "n": failover.len()},
                "handover_ms": {"p50": pct(handover, 0.5), "max": pct(handover, 1.0), "n": handover.len()},
                "skipped": skipped,
                "svg": a.svg.display().to_string(),
            })
        );
        return;
    }
    println!(
        "leasehold chaos: {} contenders, TTL {}",
        a.contenders,
        humantime::format_duration(a.ttl)
    );
    println!(
        "  faults injected        kill {} · term {} · partition {} · pause {}",
        count("kill"),
        count("term"),
        count("partition"),
        count("pause")
    );
    println!("  holders                {}", an.tenures.len());
    println!(
        "  overlap                {:.1} ms outside pauses (must be 0), {:.1} ms in all",
        an.overlap_outside_excused_ms, an.overlap_ms
    );
    println!(
        "  stale writes           {} rejected by fencing, {} accepted (must be 0)",
        an.rejected, an.stale_accepted
    );
    println!(
        "  tokens                 {}",
        if an.tokens_increase {
            "strictly increasing"
        } else {
            "NOT increasing"
        }
    );
    println!("  orphaned workers       {}", orphans.len());
    let spread = |v: &mut [f64], digits: usize| {
        if v.is_empty() {
            "none measured".to_string()
        } else {
            format!(
                "p50 {:.digits$} ms, max {:.digits$} ms ({} measured)",
                pct(v, 0.5),
                pct(v, 1.0),
                v.len()
            )
        }
    };
    println!("  failover after a fault {}", spread(failover, 0));
    println!("  handover after SIGTERM {}", spread(handover, 1));
    for s in skipped {
        println!("  skipped                {s}");
    }
    println!("  timeline               {}", a.svg.display());
}
