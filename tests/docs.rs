//! Completion scripts and man pages come from the clap definitions; check
//! that bash accepts the one and `man` renders the other.

use leasehold_testkit as support;

use std::process::Command;

use support::leasehold_output;

#[test]
fn bash_accepts_the_completion_script() {
    let (code, script, err) = leasehold_output(&["completions", "bash"]);
    assert_eq!(code, 0, "{err}");
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("leasehold.bash");
    std::fs::write(&path, &script).expect("write");
    // Sourced, it registers a completion for `leasehold` that knows `run`.
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "set -e; source '{}'; complete -p leasehold; COMP_WORDS=(leasehold r); COMP_CWORD=1; _leasehold leasehold r leasehold; echo \"${{COMPREPLY[@]}}\"",
            path.display()
        ))
        .output()
        .expect("bash");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("complete"), "{stdout}");
    assert!(stdout.contains("run"), "{stdout}");
    for shell in ["zsh", "fish", "powershell", "elvish"] {
        let (code, script, err) = leasehold_output(&["completions", shell]);
        assert_eq!(code, 0, "{shell}: {err}");
        assert!(script.contains("leasehold"), "{shell}");
    }
}

#[test]
fn man_renders_the_man_pages() {
    let dir = tempfile::tempdir().expect("dir");
    for (args, title, expect) in [
        (vec!["man"], "leasehold", "SUBCOMMANDS"),
        (vec!["man", "run"], "leasehold-run", "--hold-after-exit"),
    ] {
        let (code, roff, err) = leasehold_output(&args);
        assert_eq!(code, 0, "{err}");
        let path = dir.path().join(format!("{title}.1"));
        std::fs::write(&path, &roff).expect("write");
        let out = Command::new("man")
            .arg("-l")
            .arg(&path)
            .env("MANPAGER", "cat")
            .env("MANWIDTH", "100")
            .output()
            .expect("man (man-db)");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(text.contains(title), "{text}");
        assert!(text.contains(expect), "{title}: {text}");
    }
    let (code, _, err) = leasehold_output(&["man", "nope"]);
    assert_eq!(code, 64, "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}
