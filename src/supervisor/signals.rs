//! The signals a supervisor reacts to: SIGTERM, SIGINT and SIGHUP, in every
//! state (waiting, holding, stopping — consul#4439's lesson).

use tokio::signal::unix::{Signal, SignalKind, signal};

/// Listens for SIGTERM, SIGINT and SIGHUP from the moment it is made: pass
/// [`Signals::recv`] to
/// [`Supervisor::run_while_held`](super::Supervisor::run_while_held) as its
/// `shutdown`, so that a signal stops the job gracefully.
///
/// Installing replaces the default action of these signals (ending the
/// process) for the rest of its life, as tokio's handlers do.
#[derive(Debug)]
pub struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
}

impl Signals {
    /// Installs the handlers (needs a tokio runtime).
    ///
    /// # Errors
    /// When the runtime cannot register a handler (no signal driver).
    pub fn install() -> std::io::Result<Signals> {
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    /// The next signal received, as its number. Cancel-safe.
    pub async fn recv(&mut self) -> i32 {
        tokio::select! {
            _ = self.term.recv() => libc::SIGTERM,
            _ = self.int.recv() => libc::SIGINT,
            _ = self.hup.recv() => libc::SIGHUP,
        }
    }
}
