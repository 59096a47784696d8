//! `leasehold completions` and `leasehold man`: generated from the same clap
//! definitions as the parser, so they cannot drift from it.

use std::io::Write;

use clap::CommandFactory;

use crate::cli::Cli;
use crate::exit::{self, Failure, Outcome};

/// Prints the completion script for `shell`.
pub fn completions(shell: clap_complete::Shell) -> Outcome {
    let mut cmd = Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, "leasehold", &mut out);
    write_out(&out)
}

/// Prints the man page (roff) of leasehold or of one of its subcommands.
pub fn man(subcommand: Option<&str>) -> Outcome {
    let mut cmd = Cli::command();
    cmd.build();
    let page = match subcommand {
        None => cmd,
        Some(name) => match cmd.find_subcommand(name) {
            // Titled leasehold-<sub>, as man pages of subcommands are (clap
            // names are 'static; this runs once per process).
            Some(sub) => {
                let title: &'static str =
                    Box::leak(format!("leasehold-{}", sub.get_name()).into_boxed_str());
                sub.clone().name(title)
            }
            None => {
                return Err(Failure::usage(format!(
                    "no subcommand {name:?} (see leasehold --help)"
                )));
            }
        },
    };
    let mut out = Vec::new();
    if let Err(e) = clap_mangen::Man::new(page).render(&mut out) {
        return Err(Failure::software(format!(
            "cannot render the man page: {e}"
        )));
    }
    write_out(&out)
}

fn write_out(bytes: &[u8]) -> Outcome {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Ok(()) => Ok(exit::OK),
        // A closed pipe (`| head`) is not an error.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(exit::OK),
        Err(e) => Err(Failure::software(format!("cannot write to stdout: {e}"))),
    }
}
