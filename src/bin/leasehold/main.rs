//! `leasehold`: thin entry point. Parsing in `cli`, exit codes in `exit`,
//! one module per subcommand.

mod cache;
mod chaos;
mod cli;
mod demo;
mod docs;
mod exit;
mod faults;
mod quota;
mod run;
mod status;

use std::process::ExitCode;

use clap::Parser;
use clap::error::ErrorKind;

/// The variables that say how to reach and log into Redis. `run` keeps them
/// out of the job's environment unless `--pass-redis-env`.
pub const CONNECTION_ENV: [&str; 5] = [
    "LEASEHOLD_REDIS_URL",
    "LEASEHOLD_REDIS_PASSWORD",
    "LEASEHOLD_TLS_CA",
    "LEASEHOLD_TLS_CERT",
    "LEASEHOLD_TLS_KEY",
];

fn main() -> ExitCode {
    hide_secret_env();
    let cli = match cli::Cli::try_parse() {
        Ok(c) => c,
        Err(e) => return ExitCode::from(usage_error(e)),
    };
    init_logging(cli.verbose, cli.log_format);
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("leasehold: cannot start the runtime: {e}");
            return ExitCode::from(exit::SOFTWARE);
        }
    };
    // A current-thread runtime: the child is forked from the main thread, which
    // lives as long as the supervisor, so the parent-death signal is reliable.
    let code = match rt.block_on(dispatch(cli.command)) {
        Ok(code) => code,
        Err(failure) => {
            match &failure {
                exit::Failure::Lib(e) => report(e),
                exit::Failure::Msg(_, line) => eprintln!("leasehold: {}", printable(line)),
            }
            failure.code()
        }
    };
    ExitCode::from(code)
}

/// Runs one subcommand; errors are reported once, by `main`.
async fn dispatch(cmd: cli::Command) -> exit::Outcome {
    match cmd {
        cli::Command::Run(a) => run::run(a).await,
        cli::Command::Status(a) => status::status(a).await,
        cli::Command::Watch(a) => status::watch(a).await,
        cli::Command::Demo(a) => demo::demo(a).await,
        cli::Command::Chaos(a) => chaos::chaos(a).await,
        cli::Command::ChaosWorker(a) => chaos::worker(a),
        cli::Command::Quota(cli::QuotaCmd::Take(a)) => quota::take(a).await,
        cli::Command::Cache(cli::CacheCmd::Get(a)) => cache::get(a).await,
        cli::Command::Completions { shell } => docs::completions(shell),
        cli::Command::Man { subcommand } => docs::man(subcommand.as_deref()),
    }
}

/// Moves the password and the URL (which may hold one) out of the
/// environment block this process started with, which `/proc/PID/environ`
/// shows to every process of the same user — the job among them — and
/// overwrites the original bytes. The program still finds both (on the heap).
fn hide_secret_env() {
    for (name, c_name) in [
        ("LEASEHOLD_REDIS_PASSWORD", c"LEASEHOLD_REDIS_PASSWORD"),
        ("LEASEHOLD_REDIS_URL", c"LEASEHOLD_REDIS_URL"),
    ] {
        let Some(value) = std::env::var_os(name) else {
            continue;
        };
        // SAFETY: no other thread exists yet (first thing in main), so
        // nothing reads or changes the environment meanwhile. getenv points
        // at the value's bytes, NUL-terminated, in writable memory; they are
        // overwritten in place (same length), before set_var replaces the
        // entry (which may free a string that setenv allocated).
        unsafe {
            let p = libc::getenv(c_name.as_ptr());
            if !p.is_null() {
                std::ptr::write_bytes(p, b'*', libc::strlen(p));
            }
            std::env::set_var(name, &value);
        }
    }
}

/// Help and version go to stdout with 0; anything else is one line and 64.
fn usage_error(e: clap::Error) -> u8 {
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = e.print();
            exit::OK
        }
        _ => {
            let text = e.render().to_string();
            let line: Vec<&str> = text
                .lines()
                .take_while(|l| !l.trim().is_empty())
                .map(str::trim)
                .collect();
            let line = line.join(" ");
            let line = line.strip_prefix("error: ").unwrap_or(&line);
            eprintln!("leasehold: {} (see leasehold --help)", printable(line));
            exit::USAGE
        }
    }
}

fn init_logging(verbose: u8, format: cli::LogFormat) {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("LEASEHOLD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("leasehold={level}")));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let _ = match format {
        cli::LogFormat::Json => builder.json().try_init(),
        cli::LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
    };
}

/// Prints an error once, with its chain, prefixed like every message of ours.
fn report(e: &(dyn std::error::Error + 'static)) {
    let mut text = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        src = s.source();
    }
    eprintln!("leasehold: {}", printable(&text));
}

/// `s` with control and other non-printing characters escaped (`\u{1b}`,
/// `\n`), as the JSON output has them: text from Redis (a holder id, a
/// value, an error) must not reach the operator's terminal as escape
/// sequences.
pub fn printable(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() || is_invisible(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Format characters that reorder or hide text (bidirectional overrides,
/// zero-width characters).
fn is_invisible(c: char) -> bool {
    matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2069}' | '\u{feff}')
}
