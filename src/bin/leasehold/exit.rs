//! The only place exit codes live.

/// Success.
pub const OK: u8 = 0;
/// `quota take`: denied.
pub const DENIED: u8 = 1;
/// A usage error: bad flag, duration, name or URL (sysexits EX_USAGE).
pub const USAGE: u8 = 64;
/// Redis unreachable or refusing us at start (EX_UNAVAILABLE).
pub const UNAVAILABLE: u8 = 69;
/// Something unexpected inside leasehold or from Redis (EX_SOFTWARE).
pub const SOFTWARE: u8 = 70;
/// `--wait` elapsed without the lease (EX_TEMPFAIL).
pub const WAIT_ELAPSED: u8 = 75;
/// The lease was lost while the child ran; the child was stopped.
pub const LOST: u8 = 79;
/// The command could not be executed (as in shells).
pub const NOT_EXECUTABLE: u8 = 126;
/// The command was not found (as in shells).
pub const NOT_FOUND: u8 = 127;

/// The table shown in `--help`.
pub const HELP: &str = "\
Exit status of `run`:
  the child's     the child exited (128+N when killed by signal N)
  128+N           signal N while connecting or waiting for the lease
  64              usage error (bad flag, duration, name, URL, prefix, TLS file, a quorum
                  server given twice, a database Redis refuses, --grace too long for --ttl,
                  --ttl too short for any grace)
  69              Redis unreachable, refusing authentication, or refusing a command (ACL)
  70              unexpected error (e.g. a foreign key or foreign values at the lease's name)
  75              --wait elapsed without getting the lease
  79              the lease was lost while the child ran; the child was stopped
  126 / 127       the command is not executable / not found

quota take: 0 allowed, 1 denied. cache get: 0 value printed, 70 fetch failed,
75 fetch budget spent and nothing valid cached. 64 and 69 as above.";

/// Maps a library error to an exit code.
pub fn of_error(e: &leasehold::Error) -> u8 {
    use leasehold::Error as E;
    match e {
        E::BadUrl { .. } | E::BadName { .. } | E::BadConfig { .. } | E::NameInUse { .. } => USAGE,
        E::Unreachable { .. } | E::Auth { .. } | E::Refused { .. } | E::Timeout { .. } => {
            UNAVAILABLE
        }
        // A spent fetch budget is "try later" (75) wherever it is seen; a
        // failed fetch is the fetch command's failure (70).
        E::AcquireTimeout { .. } | E::BudgetExhausted { .. } => WAIT_ELAPSED,
        E::FetchFailed { .. } => SOFTWARE,
        _ if e.is_unavailable() => UNAVAILABLE,
        _ => SOFTWARE,
    }
}

/// Why a subcommand failed. It is reported once, by `main`, as one line
/// (escaped, with the error's chain), and mapped to its exit code there.
#[derive(Debug)]
pub enum Failure {
    /// An error of the library: its kind decides the code ([`of_error`]).
    Lib(leasehold::Error),
    /// Anything else: the code and the line to print.
    Msg(u8, String),
}

impl Failure {
    /// A usage error (64) saying `what`.
    pub fn usage(what: impl Into<String>) -> Failure {
        Failure::Msg(USAGE, what.into())
    }

    /// An unexpected failure (70) saying `what`.
    pub fn software(what: impl Into<String>) -> Failure {
        Failure::Msg(SOFTWARE, what.into())
    }

    pub fn code(&self) -> u8 {
        match self {
            Failure::Lib(e) => of_error(e),
            Failure::Msg(code, _) => *code,
        }
    }
}

impl From<leasehold::Error> for Failure {
    fn from(e: leasehold::Error) -> Failure {
        Failure::Lib(e)
    }
}

/// What a subcommand returns: the exit code it ended with (a child's status,
/// a denied quota…), or why it failed.
pub type Outcome = Result<u8, Failure>;
