//! `leasehold demo`: a throwaway redis-server, three supervisors of one sample
//! job, the leader killed a few times, and a timeline of the failovers.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::faults::pid_alive;
use futures_util::StreamExt;
use leasehold::Client;

use crate::cli::DemoArgs;
use crate::exit::{self, Failure, Outcome};

struct Redis {
    child: Child,
    port: u16,
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Instance {
    n: usize,
    child: Child,
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn start_redis(dir: &Path) -> Result<Redis, String> {
    let bin = std::env::var("LEASEHOLD_REDIS_SERVER").unwrap_or_else(|_| "redis-server".into());
    let port = free_port().map_err(|e| format!("no free loopback port: {e}"))?;
    let child = Command::new(&bin)
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| {
            format!(
                "cannot start {bin}: {e}. Install Redis 6.2+ (Debian: apt-get install redis-server), or run scripts/demo.sh, which installs it"
            )
        })?;
    Ok(Redis { child, port })
}

fn spawn_instance(n: usize, url: &str, ttl: Duration, dir: &Path) -> std::io::Result<Instance> {
    let exe = std::env::current_exe()?;
    // The sample job: note its pid by token, then work until stopped. The
    // host's pid, from /proc/self: in a PID namespace `$$` is not.
    let job = r#"read -r pid _ < /proc/self/stat; echo $pid > "$DEMO_DIR/child-$LEASEHOLD_TOKEN"; exec sleep 3600"#;
    let child = Command::new(exe)
        .args(["run", "--name", "demo-job", "--redis", url, "--ttl"])
        .arg(humantime::format_duration(ttl).to_string())
        .args(["--", "sh", "-c", job])
        .env("DEMO_DIR", dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()?;
    Ok(Instance { n, child })
}

pub async fn demo(a: DemoArgs) -> Outcome {
    match run_demo(a).await {
        Ok(()) => Ok(exit::OK),
        Err(msg) => Err(Failure::Msg(exit::UNAVAILABLE, format!("demo: {msg}"))),
    }
}

async fn run_demo(a: DemoArgs) -> Result<(), String> {
    let dir: PathBuf = std::env::temp_dir().join(format!("leasehold-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let result = demo_in(&a, &dir).await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn demo_in(a: &DemoArgs, dir: &Path) -> Result<(), String> {
    let redis = start_redis(dir)?;
    let url = format!("redis://127.0.0.1:{}", redis.port);
    let t0 = Instant::now();
    let client = loop {
        match Client::connect(&url).await {
            Ok(c) => break c,
            Err(e) if t0.elapsed() > Duration::from_secs(5) => {
                return Err(format!("redis-server did not come up: {e}"));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    };
    println!(
        "redis-server on 127.0.0.1:{} (throwaway); three supervisors run one job, lease TTL {}",
        redis.port,
        humantime::format_duration(a.ttl)
    );
    println!(
        "each: leasehold run --name demo-job --ttl {} -- <job>",
        humantime::format_duration(a.ttl)
    );
    let mut instances = Vec::new();
    for n in 1..=3 {
        instances.push(spawn_instance(n, &url, a.ttl, dir).map_err(|e| e.to_string())?);
    }
    let mut next_n = 4;
    let leaders = client.election("demo-job").observe();
    tokio::pin!(leaders);
    let start = Instant::now();
    let stamp = |t: Instant| format!("{:>6.2}s", t.duration_since(start).as_secs_f64());

    // Waits for the next holder whose token is above `after`.
    macro_rules! next_leader {
        ($after:expr) => {{
            let limit = tokio::time::sleep(a.ttl * 3 + Duration::from_secs(5));
            tokio::pin!(limit);
            loop {
                tokio::select! {
                    item = leaders.next() => match item {
                        Some(Ok(Some(h))) if h.token.0 > $after => break (h, Instant::now()),
                        Some(_) => continue,
                        None => return Err("the leader stream ended".into()),
                    },
                    _ = &mut limit => return Err("no leader took over in time".into()),
                }
            }
        }};
    }

    let (mut leader, at) = next_leader!(0);
    println!(
        "{} instance {} leads (token {})",
        stamp(at),
        which(&instances, &leader),
        leader.token
    );
    let mut failovers = Vec::new();
    for _ in 0..a.kills {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let pid = leader.holder.pid().unwrap_or(0);
        let Some(idx) = instances.iter().position(|i| i.child.id() == pid) else {
            return Err("the leader is not one of the demo's instances".into());
        };
        let child_pid: Option<u32> =
            std::fs::read_to_string(dir.join(format!("child-{}", leader.token)))
                .ok()
                .and_then(|s| s.trim().parse().ok());
        let mut victim = instances.remove(idx);
        let killed_at = Instant::now();
        let _ = victim.child.kill();
        let _ = victim.child.wait();
        println!(
            "{} SIGKILL the supervisor of instance {} (pid {pid})",
            stamp(killed_at),
            victim.n
        );
        let job_gone = child_pid.map(|p| {
            let t = Instant::now();
            while pid_alive(p) && t.elapsed() < Duration::from_secs(2) {
                std::thread::sleep(Duration::from_millis(5));
            }
            !pid_alive(p)
        });
        if let Some(gone) = job_gone {
            println!(
                "          its job {} with it (parent-death signal)",
                if gone { "died" } else { "is STILL RUNNING" }
            );
        }
        instances.push(spawn_instance(next_n, &url, a.ttl, dir).map_err(|e| e.to_string())?);
        next_n += 1;
        let (h, at) = next_leader!(leader.token.0);
        let took = at.duration_since(killed_at);
        println!(
            "{} instance {} leads (token {}): failover took {:.0} ms (TTL {})",
            stamp(at),
            which(&instances, &h),
            h.token,
            took.as_secs_f64() * 1000.0,
            humantime::format_duration(a.ttl)
        );
        failovers.push(took);
        leader = h;
    }

    // A graceful handover: SIGTERM makes the leader stop its job and release.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pid = leader.holder.pid().unwrap_or(0);
    let termed_at = Instant::now();
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    println!("{} SIGTERM the leader (pid {pid})", stamp(termed_at));
    let (h, at) = next_leader!(leader.token.0);
    let handover = at.duration_since(termed_at);
    println!(
        "{} instance {} leads (token {}): handover took {:.1} ms",
        stamp(at),
        which(&instances, &h),
        h.token,
        handover.as_secs_f64() * 1000.0
    );

    for mut i in instances {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(i.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = i.child.wait();
    }
    drop(redis);
    if !failovers.is_empty() {
        let ms: Vec<String> = failovers
            .iter()
            .map(|d| format!("{:.0}", d.as_secs_f64() * 1000.0))
            .collect();
        println!(
            "summary: crash failovers {} ms with TTL {} ms (a crashed leader cannot release: its lease runs out at most one TTL after its last renewal); graceful handover {:.1} ms",
            ms.join(", "),
            a.ttl.as_millis(),
            handover.as_secs_f64() * 1000.0
        );
    }
    Ok(())
}

fn which(instances: &[Instance], h: &leasehold::HolderInfo) -> String {
    let pid = h.holder.pid().unwrap_or(0);
    instances
        .iter()
        .find(|i| i.child.id() == pid)
        .map(|i| i.n.to_string())
        .unwrap_or_else(|| format!("pid {pid}"))
}
