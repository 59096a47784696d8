//! `leasehold cache get`.

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::process::Command;

use crate::cli::CacheGetArgs;
use crate::exit::{self, Failure, Outcome};

/// Kills the fetch command's whole process group when dropped: on a timeout
/// the fetch future is dropped, and `sh -c 'curl …'` must not leave `curl`
/// running to spend an upstream fetch nobody waits for. (Killing the group
/// after a normal exit also ends anything it left in the background.)
struct GroupKill(Pid);

impl Drop for GroupKill {
    fn drop(&mut self) {
        // Only signals; the group leader is reaped by tokio (kill_on_drop).
        let _ = killpg(self.0, Signal::SIGKILL);
    }
}

/// Runs FETCH_CMD in its own process group and returns its stdout.
async fn run_fetch(
    program: &std::ffi::OsStr,
    args: &[std::ffi::OsString],
) -> Result<Vec<u8>, String> {
    let child = Command::new(program)
        .args(args)
        .process_group(0)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", program.to_string_lossy()))?;
    let _group = child
        .id()
        .and_then(|pid| i32::try_from(pid).ok())
        .map(|pid| GroupKill(Pid::from_raw(pid)));
    let out = child
        .wait_with_output()
        .await
        .map_err(|e| format!("fetch command: {e}"))?;
    if !out.status.success() {
        return Err(format!("fetch command failed: {}", out.status));
    }
    Ok(out.stdout)
}

pub async fn get(a: CacheGetArgs) -> Outcome {
    if a.default_lifetime.is_zero() || a.default_lifetime > leasehold::cache::MAX_LIFETIME {
        return Err(Failure::usage(format!(
            "bad --default-lifetime {}: must be more than 0 and at most 365 days",
            humantime::format_duration(a.default_lifetime)
        )));
    }
    let Some((program, args)) = a.command.split_first() else {
        return Err(Failure::usage("no fetch command given after --"));
    };
    let client = match a.conn.connect().await {
        Ok(c) => c,
        Err(e) => return Err(e.into()),
    };
    let mut b = client
        .token_cache()
        .refresh_before(a.refresh_before)
        .fetch_timeout(a.fetch_timeout)
        .retry_failed_after(a.retry_failed_after);
    if let Some(n) = a.max_fetches_per_day {
        b = b.max_fetches_per_day(n);
    }
    if let Some(tz) = &a.tz {
        b = b.time_zone(tz.clone());
    }
    let cache = match b.build() {
        Ok(c) => c,
        Err(e) => return Err(e.into()),
    };
    let default = a.default_lifetime;
    let fetch = || async move {
        let stdout = run_fetch(program, args).await?;
        leasehold::cache::parse_fetch_output(&String::from_utf8_lossy(&stdout), default)
    };
    match cache.get_or_refresh(&a.name, fetch).await {
        Ok(v) => {
            println!("{v}");
            Ok(exit::OK)
        }
        Err(e) => Err(e.into()),
    }
}
