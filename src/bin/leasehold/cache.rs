//! `leasehold cache get`.

use std::time::Duration;

use tokio::process::Command;

use crate::cli::CacheGetArgs;
use crate::{exit, report};

/// Parses what FETCH_CMD printed: JSON {"value", "expires_in"} or lines
/// "value\n[lifetime]".
fn parse_fetched(out: &str, default: Duration) -> Result<(String, Duration), String> {
    let trimmed = out.trim();
    if trimmed.starts_with('{') {
        let v: serde_json::Value = serde_json::from_str(trimmed)
            .map_err(|e| format!("fetch command printed bad JSON: {e}"))?;
        let value = v["value"]
            .as_str()
            .ok_or("fetch command's JSON has no string \"value\"")?
            .to_string();
        let life = match &v["expires_in"] {
            serde_json::Value::Number(n) => {
                Duration::from_secs_f64(n.as_f64().unwrap_or(0.0).max(0.0))
            }
            serde_json::Value::Null => default,
            _ => return Err("\"expires_in\" must be a number of seconds".into()),
        };
        return Ok((value, life));
    }
    let mut lines = trimmed.lines();
    let value = lines.next().unwrap_or("").trim_end().to_string();
    if value.is_empty() {
        return Err("fetch command printed nothing".into());
    }
    let life = match lines.next().map(str::trim) {
        None | Some("") => default,
        Some(l) => match l.parse::<u64>() {
            Ok(secs) => Duration::from_secs(secs),
            Err(_) => humantime::parse_duration(l).map_err(|e| {
                format!("bad lifetime {l:?} on the fetch command's second line: {e}")
            })?,
        },
    };
    Ok((value, life))
}

pub async fn get(a: CacheGetArgs) -> u8 {
    let client = match a.conn.connect().await {
        Ok(c) => c,
        Err(e) => {
            report(&e);
            return exit::of_error(&e);
        }
    };
    let mut b = client
        .token_cache()
        .refresh_before(a.refresh_before)
        .fetch_timeout(a.fetch_timeout);
    if let Some(n) = a.max_fetches_per_day {
        b = b.max_fetches_per_day(n);
    }
    if let Some(tz) = &a.tz {
        b = b.time_zone(tz.clone());
    }
    let cache = match b.build() {
        Ok(c) => c,
        Err(e) => {
            report(&e);
            return exit::of_error(&e);
        }
    };
    let Some((program, args)) = a.command.split_first() else {
        eprintln!("leasehold: no fetch command given after --");
        return exit::USAGE;
    };
    let default = a.default_lifetime;
    let fetch = || async move {
        let out = Command::new(program)
            .args(args)
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::inherit())
            .kill_on_drop(true)
            .output()
            .await
            .map_err(|e| format!("cannot run {}: {e}", program.to_string_lossy()))?;
        if !out.status.success() {
            return Err(format!("fetch command failed: {}", out.status));
        }
        parse_fetched(&String::from_utf8_lossy(&out.stdout), default)
    };
    match cache.get_or_refresh(&a.name, fetch).await {
        Ok(v) => {
            println!("{v}");
            exit::OK
        }
        Err(e) => {
            report(&e);
            match e {
                leasehold::Error::BudgetExhausted { .. } => exit::WAIT_ELAPSED,
                leasehold::Error::FetchFailed { .. } => exit::SOFTWARE,
                other => exit::of_error(&other),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fetched_output_forms() {
        let d = Duration::from_secs(60);
        assert_eq!(parse_fetched("tok\n", d), Ok(("tok".into(), d)));
        assert_eq!(
            parse_fetched("tok\n7200\n", d),
            Ok(("tok".into(), Duration::from_secs(7200)))
        );
        assert_eq!(
            parse_fetched("tok\n2h\n", d),
            Ok(("tok".into(), Duration::from_secs(7200)))
        );
        assert_eq!(
            parse_fetched(r#"{"value":"t","expires_in":30}"#, d),
            Ok(("t".into(), Duration::from_secs(30)))
        );
        assert!(parse_fetched("", d).is_err());
        assert!(parse_fetched("tok\nsoon\n", d).is_err());
        assert!(parse_fetched("{\"x\":1}", d).is_err());
    }
}
