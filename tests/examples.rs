//! The programs in `examples/` run against a redis-server this test starts
//! (`cargo test` builds them; a stale or missing binary fails the test).

use leasehold_testkit as support;

use std::process::Command;
use std::time::Duration;

use support::RedisServer;

fn example(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    // target/<profile>/deps/examples-<hash> → target/<profile>/examples/<name>
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target dir")
        .join("examples");
    dir.join(name)
}

fn run(name: &str, r: &RedisServer) -> String {
    let path = example(name);
    let mut child = Command::new(&path)
        .env("LEASEHOLD_REDIS_URL", r.url())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e} (cargo test builds it)", path.display()));
    let t0 = std::time::Instant::now();
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        if t0.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            panic!("example {name} did not finish in 30 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("output");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "example {name} failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn every_example_runs() {
    let r = RedisServer::start();
    r.warm();
    assert!(run("lease", &r).contains("done: Released"));
    assert!(run("election", &r).contains("leading with token"));
    assert!(run("semaphore", &r).contains("at most 2 at a time"));
    assert!(run("token_cache", &r).contains("fetches made: 1"));
    assert!(run("quota", &r).contains("vote 4: denied"));
}
