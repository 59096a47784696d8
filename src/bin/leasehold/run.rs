//! `leasehold run`: campaign, run the child while holding, hand over.

use std::time::{Duration, Instant};

use leasehold::supervisor::{Contain, Outcome, Signals, Supervisor, exit_code};
use leasehold::{Error, Guard, Lease, LeaseConfig, LeaseState, LostReason, Permit, ReleaseOutcome};

use crate::cli::RunArgs;
use crate::exit::{self, Failure};

/// First backoff after a failed child under `--forever`; doubles up to the max.
const BACKOFF_START: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// How long leaving the queue may delay an exit.
const LEAVE_LIMIT: Duration = Duration::from_secs(1);
/// How long removing the containment note may delay an exit.
const NOTE_LIMIT: Duration = Duration::from_millis(500);

pub async fn run(a: RunArgs) -> exit::Outcome {
    // Validate everything before touching Redis: one line, exit 64.
    let config = match LeaseConfig::new(a.ttl) {
        Ok(c) => c,
        Err(e) => return Err(e.into()),
    };
    if let Err(e) = leasehold::backend::keys::validate_name(&a.name) {
        return Err(e.into());
    }
    let Some((program, args)) = a.command.split_first() else {
        return Err(Failure::usage("no command given after --"));
    };
    let grace = a.grace.unwrap_or(a.ttl / 5);
    let mut supervisor = Supervisor::new(program.clone(), args.to_vec()).grace(grace);
    if !a.pass_redis_env {
        for var in crate::CONNECTION_ENV {
            supervisor = supervisor.env_remove(var);
        }
    }
    if let Err(e) = supervisor.check_fits(&config) {
        return Err(e.into());
    }
    let containment = match Contain::from(a.contain).resolve() {
        Ok(c) => c,
        Err(e) => return Err(e.into()),
    };
    let note = format!("contain={}", containment.name());
    let supervisor = supervisor.containment(containment);
    if let Some(addr) = a.metrics_addr {
        let exporter = metrics_exporter_prometheus::PrometheusBuilder::new()
            .with_http_listener(addr)
            .install();
        if let Err(e) = exporter {
            return Err(Failure::usage(format!(
                "cannot serve metrics on {addr}: {e}"
            )));
        }
    }
    let mut signals = match Signals::install() {
        Ok(s) => s,
        Err(e) => {
            return Err(Failure::software(format!(
                "cannot install signal handlers: {e}"
            )));
        }
    };

    // Connecting may take the connect timeout (a silent address): a signal
    // meanwhile ends it at once, as it would have before the handlers were in.
    let client = tokio::select! {
        c = a.conn.connect() => match c {
            Ok(c) => c,
            Err(e) => return Err(e.into()),
        },
        sig = signals.recv() => {
            tracing::info!("signal {sig} while connecting to Redis; exiting");
            return Ok((128 + sig) as u8);
        }
    };

    let mut wait_limit = a.wait.0;
    let mut backoff = Duration::ZERO;
    loop {
        // The child needs the lease for its stop budget at least: a lease
        // handed over with less of its claim window left is claimed first.
        let min_validity = supervisor.stop_budget() + Duration::from_millis(100);
        let acquiring = async {
            match a.slots {
                Some(n) => {
                    let b = client
                        .semaphore(a.name.clone(), n)
                        .ttl(a.ttl)
                        .value(a.value.clone())
                        .min_validity(min_validity);
                    match wait_limit {
                        Some(limit) => b.acquire_timeout(limit).await,
                        None => b.acquire().await,
                    }
                    .map(Holding::Permit)
                }
                None => {
                    let b = client
                        .lease(a.name.clone())
                        .ttl(a.ttl)
                        .value(a.value.clone())
                        .min_validity(min_validity);
                    match wait_limit {
                        Some(limit) => b.acquire_timeout(limit).await,
                        None => b.acquire().await,
                    }
                    .map(Holding::Lease)
                }
            }
        };
        let lease = tokio::select! {
            r = acquiring => match r {
                Ok(l) => l,
                Err(e @ Error::AcquireTimeout { .. }) => {
                    client.close(LEAVE_LIMIT).await;
                    return Err(e.into());
                }
                Err(e) => return Err(e.into()),
            },
            sig = signals.recv() => {
                tracing::info!("signal {sig} while waiting for '{}'; exiting", a.name);
                // Leave the queue first, so that the next in line need not
                // wait for our place to lapse.
                client.close(LEAVE_LIMIT).await;
                return Ok((128 + sig) as u8);
            }
        };
        // --wait bounds the first campaign only; under --forever later ones wait as long as needed.
        if a.forever {
            wait_limit = None;
        }
        tracing::info!(
            "acquired '{}' with token {}; starting {}",
            a.name,
            lease.token(),
            program.to_string_lossy()
        );
        // For `status`: how this holder's job is contained. In the
        // background: the child does not wait for it.
        let noting = {
            let (client, name, holder, note) = (
                client.clone(),
                a.name.clone(),
                lease.holder().clone(),
                note.clone(),
            );
            tokio::spawn(async move {
                if let Err(e) = client.backend().note(&name, &holder, &note).await {
                    tracing::debug!("could not note the containment for status: {e}");
                }
            })
        };
        let started = Instant::now();
        let outcome = supervisor.run_while_held(&lease, signals.recv()).await;
        noting.abort();
        let failed = match outcome {
            Err(e) => {
                let code = match e.kind() {
                    std::io::ErrorKind::NotFound => exit::NOT_FOUND,
                    std::io::ErrorKind::PermissionDenied => exit::NOT_EXECUTABLE,
                    _ => exit::SOFTWARE,
                };
                give_back(&client, lease, &mut signals).await;
                return Err(Failure::Msg(
                    code,
                    format!("cannot run {}: {e}", program.to_string_lossy()),
                ));
            }
            Ok(Outcome::Interrupted { signal, status }) => {
                tracing::info!("child ended after signal {signal}: {status}");
                give_back(&client, lease, &mut signals).await;
                return Ok(exit_code(status).clamp(0, 255) as u8);
            }
            Ok(Outcome::Lost { reason, status }) => {
                let line = format!(
                    "lost the lease '{}' ({reason}); the child was stopped ({status})",
                    a.name
                );
                give_back(&client, lease, &mut signals).await;
                if !a.forever {
                    return Err(Failure::Msg(exit::LOST, line));
                }
                eprintln!("leasehold: {}", crate::printable(&line));
                true
            }
            Ok(Outcome::Exited(status)) => {
                tracing::info!("child exited: {status}");
                if !a.hold_after_exit.is_zero()
                    && let Some(sig) = hold(&lease, a.hold_after_exit, &mut signals).await
                {
                    give_back(&client, lease, &mut signals).await;
                    return Ok((128 + sig) as u8);
                }
                give_back(&client, lease, &mut signals).await;
                if !a.forever {
                    return Ok(exit_code(status).clamp(0, 255) as u8);
                }
                !status.success()
            }
        };
        // --forever: back to campaigning, slower while the child keeps failing.
        backoff = if !failed || started.elapsed() > BACKOFF_MAX {
            Duration::ZERO
        } else {
            (backoff * 2).clamp(BACKOFF_START, BACKOFF_MAX)
        };
        if !backoff.is_zero() {
            tracing::info!("child failed; campaigning again in {backoff:?}");
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                sig = signals.recv() => return Ok((128 + sig) as u8),
            }
        }
    }
}

/// Keeps the lease for `d` after the child exited. Returns a signal if one came.
async fn hold(lease: &Holding, d: Duration, signals: &mut Signals) -> Option<i32> {
    tracing::info!(
        "holding '{}' for {d:?} after the child exited",
        lease.name()
    );
    tokio::select! {
        _ = tokio::time::sleep(d) => None,
        _ = lease.lost() => None,
        sig = signals.recv() => Some(sig),
    }
}

/// Releases the lease — bounded by its TTL, and cut short by a signal: `run`
/// never hangs deaf to signals here, and a lease not given back expires by
/// itself within one TTL (the child is already gone).
async fn give_back(client: &leasehold::Client, lease: Holding, signals: &mut Signals) {
    let name = lease.name().to_string();
    let holder = lease.holder().clone();
    let limit = lease.config().ttl();
    // The containment note goes with the lease (a name run once must not
    // keep it): after the release, briefly, best effort.
    let forget = async {
        let _ = tokio::time::timeout(NOTE_LIMIT, client.backend().note(&name, &holder, "")).await;
    };
    tokio::select! {
        _ = forget_after_release(lease, &name, limit, forget) => {}
        sig = signals.recv() => tracing::info!("signal {sig} while releasing '{name}'; it expires by itself"),
    }
}

/// Releases (bounded by the TTL), then runs `forget`.
async fn forget_after_release(
    lease: Holding,
    name: &str,
    limit: Duration,
    forget: impl std::future::Future<Output = ()>,
) {
    match tokio::time::timeout(limit, lease.release()).await {
        Ok(Ok(ReleaseOutcome::Released)) => tracing::info!("released '{name}'"),
        Ok(Ok(ReleaseOutcome::AlreadyLost(r))) => tracing::info!("'{name}' was already lost: {r}"),
        Ok(Err(e)) => tracing::warn!("could not release '{name}' (it expires by itself): {e}"),
        Err(_) => {
            tracing::warn!("releasing '{name}' took longer than {limit:?}; it expires by itself")
        }
    }
    forget.await;
}

/// What `run` holds: the lease, or one permit of a semaphore (`--slots`).
enum Holding {
    Lease(Lease),
    Permit(Permit),
}

impl Holding {
    fn config(&self) -> &LeaseConfig {
        match self {
            Holding::Lease(l) => l.config(),
            Holding::Permit(p) => p.config(),
        }
    }

    fn lost(&self) -> impl std::future::Future<Output = LostReason> + Send + 'static {
        match self {
            Holding::Lease(l) => futures_util::future::Either::Left(l.lost()),
            Holding::Permit(p) => futures_util::future::Either::Right(p.lost()),
        }
    }

    async fn release(self) -> leasehold::Result<ReleaseOutcome> {
        match self {
            Holding::Lease(l) => l.release().await,
            Holding::Permit(p) => p.release().await,
        }
    }
}

impl Guard for Holding {
    fn name(&self) -> &str {
        match self {
            Holding::Lease(l) => l.name(),
            Holding::Permit(p) => p.name(),
        }
    }

    fn token(&self) -> leasehold::FencingToken {
        match self {
            Holding::Lease(l) => l.token(),
            Holding::Permit(p) => p.token(),
        }
    }

    fn holder(&self) -> &leasehold::HolderId {
        match self {
            Holding::Lease(l) => l.holder(),
            Holding::Permit(p) => p.holder(),
        }
    }

    fn state(&self) -> tokio::sync::watch::Receiver<LeaseState> {
        match self {
            Holding::Lease(l) => l.state(),
            Holding::Permit(p) => p.state(),
        }
    }
}
