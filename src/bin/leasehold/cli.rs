//! Flags, parsed low (clap) and validated high (durations, URL, grace vs TTL).

use std::ffi::OsString;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

pub const DEFAULT_URL: &str = "redis://127.0.0.1:6379";

#[derive(Parser, Debug)]
#[command(
    name = "leasehold",
    version,
    about = "Exactly one instance across hosts, with failover, coordinated through Redis",
    after_help = crate::exit::HELP
)]
pub struct Cli {
    /// More log output (-v: what happens, -vv: debugging). Logs go to stderr.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,

    /// Log lines as text or as JSON objects (for log shippers).
    #[arg(long, value_enum, default_value = "text", global = true)]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run COMMAND only while holding the lease NAME; hand over on exit or loss.
    #[command(after_help = format!("{RUN_EXAMPLES}{}", crate::exit::HELP))]
    Run(RunArgs),
    /// Show who holds the lease NAME.
    Status(StatusArgs),
    /// Print one line per leadership change of NAME until interrupted.
    Watch(StatusArgs),
    /// Start a throwaway redis-server and three supervisors; kill leaders; print the failovers.
    Demo(DemoArgs),
    /// Inject faults into local contenders against your Redis and report what
    /// was guaranteed: overlap, stale writes, failover times, a timeline SVG.
    Chaos(ChaosArgs),
    /// (internal) the worker `chaos` supervises: writes to a fenced resource.
    #[command(hide = true)]
    ChaosWorker(ChaosWorkerArgs),
    /// Quota counters: at most N per period per key.
    #[command(subcommand)]
    Quota(QuotaCmd),
    /// A shared token cache with a single refresher.
    #[command(subcommand)]
    Cache(CacheCmd),
    /// Print a shell completion script (e.g. `leasehold completions bash >
    /// /etc/bash_completion.d/leasehold`).
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print a man page (roff) on stdout: `leasehold man > leasehold.1`,
    /// `leasehold man run > leasehold-run.1`.
    Man {
        /// The subcommand to document (default: leasehold itself).
        subcommand: Option<String>,
    },
}

/// `run --help`: examples (the exit codes follow).
const RUN_EXAMPLES: &str = concat!(
    "EXAMPLES:\n",
    "  A cron job on one host of many (give up if another runs it; hold the\n",
    "  lease a minute after, for hosts whose clocks differ):\n",
    "    leasehold run --name nightly-report --wait 30s --hold-after-exit 1m -- /opt/report/run.sh\n",
    "\n",
    "  An always-on service on one host at a time, failing over within 5 s:\n",
    "    leasehold run --name scheduler --ttl 5s --forever --value \"$(hostname):9000\" -- ./scheduler\n",
    "\n",
    "  Up to 3 consumers at once:\n",
    "    leasehold run --name consumers --slots 3 --forever -- ./consume\n",
    "\n",
    "  The job gets LEASEHOLD_NAME, LEASEHOLD_TOKEN (the fencing token) and LEASEHOLD_HOLDER.\n",
    "\n",
);

#[derive(Args, Debug)]
pub struct ChaosArgs {
    /// Redis URL(s), as for `run`. Partitions are injected only for redis://
    /// URLs (through a local proxy per contender).
    #[arg(long = "redis", value_name = "URL")]
    pub redis: Vec<String>,

    /// Lease TTL of the contenders.
    #[arg(long, default_value = "1s", value_parser = duration, value_name = "DUR")]
    pub ttl: Duration,

    /// How long to inject faults.
    #[arg(long, default_value = "30s", value_parser = duration, value_name = "DUR")]
    pub duration: Duration,

    /// How many contenders (`leasehold run --forever` each).
    #[arg(long, default_value_t = 3)]
    pub contenders: usize,

    /// Faults to inject, in turn: kill, term, partition, pause, none.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "kill,term,partition,pause"
    )]
    pub faults: Vec<String>,

    /// Pick faults at random (with this seed) instead of in turn.
    #[arg(long, value_name = "SEED")]
    pub random: Option<u64>,

    /// Where to write the timeline picture.
    #[arg(long, default_value = "leasehold-chaos.svg", value_name = "PATH")]
    pub svg: std::path::PathBuf,

    /// Print the figures as one JSON object.
    #[arg(long)]
    pub json: bool,

    /// Key prefix for the contenders' lease.
    #[arg(long, default_value = "leasehold:", value_name = "PREFIX")]
    pub prefix: String,
}

#[derive(Args, Debug)]
pub struct ChaosWorkerArgs {
    /// host:port of the fenced resource.
    #[arg(long)]
    pub resource: String,
}

#[derive(Subcommand, Debug)]
pub enum QuotaCmd {
    /// Take N from KEY's quota. Exit 0 when allowed, 1 when denied.
    Take(QuotaTakeArgs),
}

#[derive(Args, Debug)]
pub struct QuotaTakeArgs {
    /// The counter's key (e.g. votes:user-42).
    pub key: String,

    #[command(flatten)]
    pub conn: Conn,

    /// How many are allowed per period (1 to 2^53 - 1).
    #[arg(long)]
    pub limit: u64,

    /// The period: one number and a unit. Calendar: d (local days from
    /// midnight), w (weeks from Monday), mo (months from the 1st), y (years).
    /// Lengths (ms, s, m, h) that divide a day tile the local day from
    /// midnight on the wall clock (12h: 00:00-12:00, 12:00-24:00); other
    /// lengths (7h, 36h) are that much real time, counted from the Unix epoch.
    #[arg(long, value_parser = period, value_name = "PERIOD")]
    pub per: leasehold::quota::Period,

    /// Time zone whose calendar and wall clock the windows follow (IANA
    /// name; default UTC).
    #[arg(long, value_name = "ZONE")]
    pub tz: Option<String>,

    /// A sliding window: at most LIMIT in any interval of the period
    /// (a fixed length: ms, s, m, h, d or w).
    #[arg(long)]
    pub sliding: bool,

    /// How many to take (at most LIMIT); 0 only reads what is left.
    #[arg(short = 'n', long = "count", default_value_t = 1)]
    pub count: u64,

    /// Names this take: a retry with the same id within 10 minutes counts
    /// once. Without it a random id is used (and printed if the outcome is
    /// unknown).
    #[arg(long, value_name = "ID")]
    pub request_id: Option<String>,

    /// How long the take may keep trying; after that its outcome is unknown
    /// (exit 69).
    #[arg(long, default_value = "5s", value_parser = duration, value_name = "DUR")]
    pub timeout: Duration,

    /// One JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum CacheCmd {
    /// Print NAME's cached value; FETCH_CMD fetches a new one when it is
    /// missing or about to expire (exactly one process at a time).
    Get(CacheGetArgs),
}

#[derive(Args, Debug)]
pub struct CacheGetArgs {
    /// The cache entry's name.
    pub name: String,

    #[command(flatten)]
    pub conn: Conn,

    /// Refresh when less than this is left of the value's life.
    #[arg(long, default_value = "1m", value_parser = duration, value_name = "DUR")]
    pub refresh_before: Duration,

    /// At most this many fetches per calendar day of --tz, across all hosts
    /// (up to 2N can happen around that midnight: N before, N after).
    #[arg(long, value_name = "N")]
    pub max_fetches_per_day: Option<u64>,

    /// How long FETCH_CMD may run; its whole process group is killed after.
    #[arg(long, default_value = "30s", value_parser = duration, value_name = "DUR")]
    pub fetch_timeout: Duration,

    /// Lifetime of a value when FETCH_CMD does not print one (at most 365d).
    #[arg(long, default_value = "1h", value_parser = duration, value_name = "DUR")]
    pub default_lifetime: Duration,

    /// After a failed fetch (or a spent budget), callers get that failure
    /// for this long without fetching again (0s: not at all; at most 1h).
    #[arg(long, default_value = "10s", value_parser = duration, value_name = "DUR")]
    pub retry_failed_after: Duration,

    /// Time zone whose calendar day the fetch budget counts (IANA name;
    /// default UTC).
    #[arg(long, value_name = "ZONE")]
    pub tz: Option<String>,

    /// The fetch command, after `--`. It prints the value on stdout's first
    /// line and, optionally, its lifetime on the second (e.g. 7200 or 2h); or
    /// a JSON object {"value": "...", "expires_in": 7200}, which a value of
    /// several lines needs.
    #[arg(last = true, required = true, value_name = "FETCH_CMD")]
    pub command: Vec<std::ffi::OsString>,
}

#[derive(Args, Debug, Clone)]
pub struct Conn {
    /// Redis URL (env LEASEHOLD_REDIS_URL; default redis://127.0.0.1:6379):
    /// redis://, rediss://, redis+sentinel://h1:26379,h2:26379/MASTER,
    /// redis+cluster://h1:7000,h2:7001. Repeat with 3 or more independent
    /// redis:// servers for a quorum. Passwords may come from
    /// LEASEHOLD_REDIS_PASSWORD instead.
    #[arg(long = "redis", value_name = "URL")]
    pub redis: Vec<String>,

    /// Single server or Sentinel: count an acquire or renewal only once N
    /// replicas have it (WAIT), so that a failover does not drop a held lease.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub min_replicas: u32,

    /// Prefix of every key leasehold writes.
    #[arg(long, default_value = "leasehold:", value_name = "PREFIX")]
    pub prefix: String,

    /// rediss://: trust this CA (PEM) instead of the system's roots.
    #[arg(long, env = "LEASEHOLD_TLS_CA", value_name = "FILE")]
    pub tls_ca: Option<std::path::PathBuf>,

    /// rediss://: client certificate (PEM) for mutual TLS.
    #[arg(
        long,
        env = "LEASEHOLD_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    pub tls_cert: Option<std::path::PathBuf>,

    /// rediss://: client key (PEM) for mutual TLS.
    #[arg(
        long,
        env = "LEASEHOLD_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    pub tls_key: Option<std::path::PathBuf>,
}

impl Conn {
    /// The Redis URL(s) to use.
    pub fn urls(&self) -> leasehold::Result<Vec<String>> {
        urls_or_env(&self.redis)
    }

    /// Connects as these flags say.
    pub async fn connect(&self) -> leasehold::Result<leasehold::Client> {
        let mut b = leasehold::Client::builder_many(self.urls()?)
            .prefix(self.prefix.clone())
            .min_replicas(self.min_replicas);
        if let Some(ca) = &self.tls_ca {
            b = b.tls_ca(ca);
        }
        if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
            b = b.tls_client_cert(cert, key);
        }
        b.connect().await
    }
}

/// `--redis` URLs, else `$LEASEHOLD_REDIS_URL`, else the default. A URL in
/// the environment that is not UTF-8 is refused, not replaced by the default.
pub fn urls_or_env(given: &[String]) -> leasehold::Result<Vec<String>> {
    if !given.is_empty() {
        return Ok(given.to_vec());
    }
    match std::env::var("LEASEHOLD_REDIS_URL") {
        Ok(u) => Ok(vec![u]),
        Err(std::env::VarError::NotPresent) => Ok(vec![DEFAULT_URL.into()]),
        Err(std::env::VarError::NotUnicode(_)) => Err(leasehold::Error::BadConfig {
            what: "LEASEHOLD_REDIS_URL",
            value: "(not shown)".into(),
            rule: "is not valid UTF-8: a Redis URL is text (percent-encode other bytes)".into(),
        }),
    }
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Lease name (letters, digits, - _ . : / @ + =).
    #[arg(long)]
    pub name: String,

    #[command(flatten)]
    pub conn: Conn,

    /// Lease TTL: the failover time after a crash.
    #[arg(long, default_value = "10s", value_parser = duration, value_name = "DUR")]
    pub ttl: Duration,

    /// How long to wait for the lease before giving up with exit 75 ("forever" to never give up).
    #[arg(long, default_value = "forever", value_parser = wait, value_name = "DUR|forever")]
    pub wait: Wait,

    /// After the child exits (or the lease is lost), campaign again instead of exiting.
    #[arg(long)]
    pub forever: bool,

    /// Time between SIGTERM and SIGKILL when stopping the child (default TTL/5).
    /// Must fit in half the TTL.
    #[arg(long, value_parser = duration, value_name = "DUR")]
    pub grace: Option<Duration>,

    /// Keep the lease this long after the child exits (so hosts with skewed
    /// clocks do not run a cron job twice).
    #[arg(long, default_value = "0s", value_parser = duration, value_name = "DUR")]
    pub hold_after_exit: Duration,

    /// Value published with the lease (e.g. this instance's address).
    #[arg(long, default_value = "")]
    pub value: String,

    /// Serve Prometheus metrics on http://HOST:PORT/metrics (is_holder,
    /// fencing token, acquisitions, losses, renew latency, time to acquire).
    #[arg(long, value_name = "HOST:PORT")]
    pub metrics_addr: Option<std::net::SocketAddr>,

    /// What holds the job's processes together so that none outlives the
    /// lease: pidns (its own PID namespace; everything dies with the
    /// supervisor), cgroup (a cgroup v2 of its own, killed whole), group (its
    /// process group; the supervisor is a child subreaper), or auto (the best
    /// this host allows, in that order).
    #[arg(long, value_enum, default_value = "auto", value_name = "MODE")]
    pub contain: ContainArg,

    /// Leave LEASEHOLD_REDIS_URL, LEASEHOLD_REDIS_PASSWORD and
    /// LEASEHOLD_TLS_{CA,CERT,KEY} in the job's environment. By default they
    /// are removed: a job holding the Redis credentials can rewrite any lease.
    #[arg(long)]
    pub pass_redis_env: bool,

    /// Hold one of N slots instead of the single lease: at most N instances
    /// run at once (like `consul lock -n`).
    #[arg(long, value_name = "N")]
    pub slots: Option<u32>,

    /// The command to run, after `--`.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<OsString>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContainArg {
    Auto,
    Pidns,
    Cgroup,
    Group,
}

impl From<ContainArg> for leasehold::supervisor::Contain {
    fn from(c: ContainArg) -> Self {
        use leasehold::supervisor::Contain;
        match c {
            ContainArg::Auto => Contain::Auto,
            ContainArg::Pidns => Contain::PidNs,
            ContainArg::Cgroup => Contain::Cgroup,
            ContainArg::Group => Contain::Group,
        }
    }
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// Lease name.
    #[arg(long)]
    pub name: String,

    #[command(flatten)]
    pub conn: Conn,

    /// One JSON object per line instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// How many times to kill the leader.
    #[arg(long, default_value_t = 3)]
    pub kills: u32,

    /// Lease TTL used by the demo's supervisors.
    #[arg(long, default_value = "2s", value_parser = duration, value_name = "DUR")]
    pub ttl: Duration,
}

fn period(s: &str) -> Result<leasehold::quota::Period, String> {
    match leasehold::quota::Period::parse(s) {
        Ok(p) => Ok(p),
        Err(leasehold::Error::BadConfig { rule, .. }) => Err(rule),
        Err(e) => Err(e.to_string()),
    }
}

fn duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("{e} (use e.g. 500ms, 10s, 2m)"))?;
    Ok(d)
}

/// `--wait`: a duration, or `forever` (None).
#[derive(Clone, Copy, Debug)]
pub struct Wait(pub Option<Duration>);

fn wait(s: &str) -> Result<Wait, String> {
    if s == "forever" {
        Ok(Wait(None))
    } else {
        duration(s).map(|d| Wait(Some(d)))
    }
}
