//! `leasehold status` and `leasehold watch`.

use futures_util::StreamExt;
use leasehold::{Client, HolderInfo};

use crate::cli::StatusArgs;
use crate::exit::{self, Failure, Outcome};
use crate::printable;

async fn connect(a: &StatusArgs) -> Result<Client, Failure> {
    leasehold::backend::keys::validate_name(&a.name)?;
    Ok(a.conn.connect().await?)
}

fn json(name: &str, h: Option<&HolderInfo>, last_token: Option<u64>) -> String {
    let mut v = match h {
        Some(h) => serde_json::json!({
            "name": name,
            "state": "held",
            "holder": h.holder.as_str(),
            "host": h.holder.host(),
            "pid": h.holder.pid(),
            "value": h.value,
            "token": h.token.0,
            "ttl_ms": h.ttl_left.as_millis() as u64,
        }),
        None => serde_json::json!({ "name": name, "state": "free" }),
    };
    if let Some(t) = last_token {
        v["last_token"] = serde_json::json!(t);
    }
    v.to_string()
}

/// One line for people. Holder ids and values come from Redis, where anyone
/// with write access may have put escape sequences: they are escaped.
fn text(name: &str, h: Option<&HolderInfo>) -> String {
    match h {
        Some(h) => {
            let value = if h.value.is_empty() {
                String::new()
            } else {
                // Debug quotes and escapes it, control characters included.
                format!(", value {:?}", h.value)
            };
            format!(
                "'{name}' is held by {} (token {}){value}, expires in {:.1}s unless renewed; holder id {}",
                printable(&h.holder.readable()),
                h.token,
                h.ttl_left.as_secs_f64(),
                printable(h.holder.as_str())
            )
        }
        None => format!("'{name}' is free"),
    }
}

/// The containment named in a note of `leasehold run` ("contain=pidns"):
/// one of the modes it writes, nothing else (anyone with write access to
/// Redis could have written the note).
fn contained_by(note: &str) -> Option<String> {
    note.split(' ')
        .find_map(|kv| kv.strip_prefix("contain="))
        .filter(|m| leasehold::supervisor::Containment::NAMES.contains(m))
        .map(str::to_string)
}

pub async fn status(a: StatusArgs) -> Outcome {
    let client = connect(&a).await?;
    match client.status(&a.name).await {
        Ok(s) => {
            // A semaphore of that name, if any (not on a quorum).
            let slots = client.semaphore_status(&a.name).await.unwrap_or_default();
            // How each holder's job is contained, when `leasehold run` holds
            // it (its note); best effort, as the note itself.
            let ids: Vec<&str> = s
                .holder
                .iter()
                .chain(slots.iter())
                .map(|h| h.holder.as_str())
                .collect();
            let notes = client
                .backend()
                .notes(&a.name, &ids)
                .await
                .unwrap_or_default();
            let contain = |id: &str| -> Option<String> {
                let i = ids.iter().position(|x| *x == id)?;
                notes.get(i)?.as_deref().and_then(contained_by)
            };
            if a.json {
                let mut v: serde_json::Value =
                    serde_json::from_str(&json(&a.name, s.holder.as_ref(), Some(s.last_token)))
                        .unwrap_or_default();
                if let Some(h) = &s.holder
                    && let Some(c) = contain(h.holder.as_str())
                {
                    v["contain"] = serde_json::json!(c);
                }
                if let Some(q) = s.quarantine {
                    v["quarantine_ms"] = serde_json::json!(q.as_millis() as u64);
                }
                if !slots.is_empty() {
                    v["slots"] = slots
                        .iter()
                        .map(|h| {
                            let mut o = serde_json::json!({
                                "holder": h.holder.as_str(),
                                "host": h.holder.host(),
                                "pid": h.holder.pid(),
                                "value": h.value,
                                "token": h.token.0,
                                "ttl_ms": h.ttl_left.as_millis() as u64,
                            });
                            if let Some(c) = contain(h.holder.as_str()) {
                                o["contain"] = serde_json::json!(c);
                            }
                            o
                        })
                        .collect();
                }
                println!("{v}");
            } else {
                if slots.is_empty() || s.holder.is_some() {
                    println!("{}", text(&a.name, s.holder.as_ref()));
                }
                if let Some(h) = &s.holder
                    && let Some(c) = contain(h.holder.as_str())
                {
                    println!("its job runs under leasehold run, containment {c}");
                }
                if let Some(q) = s.quarantine {
                    println!(
                        "an acquisition now would wait {:.1}s: this Redis may lack writes it confirmed before (it restarted, failed over, or is new to leasehold), so every earlier holder's deadline must pass first",
                        q.as_secs_f64()
                    );
                }
                if !slots.is_empty() {
                    println!("'{}' semaphore: {} slot(s) held", a.name, slots.len());
                    for h in &slots {
                        let c = contain(h.holder.as_str())
                            .map(|c| format!(", containment {c}"))
                            .unwrap_or_default();
                        println!(
                            "  {} (token {}), expires in {:.1}s unless renewed{c}",
                            printable(&h.holder.readable()),
                            h.token,
                            h.ttl_left.as_secs_f64()
                        );
                    }
                }
            }
            Ok(exit::OK)
        }
        Err(e) => Err(e.into()),
    }
}

pub async fn watch(a: StatusArgs) -> Outcome {
    let client = connect(&a).await?;
    let stream = client.election(a.name.clone()).observe();
    tokio::pin!(stream);
    let mut interrupt = match leasehold::supervisor::Signals::install() {
        Ok(s) => s,
        Err(e) => {
            return Err(Failure::software(format!(
                "cannot install signal handlers: {e}"
            )));
        }
    };
    loop {
        tokio::select! {
            item = stream.next() => match item {
                Some(Ok(h)) => {
                    let now = humantime::format_rfc3339_millis(std::time::SystemTime::now());
                    let line = if a.json {
                        json(&a.name, h.as_ref(), None)
                    } else {
                        format!("{now} {}", text(&a.name, h.as_ref()))
                    };
                    use std::io::Write;
                    let mut out = std::io::stdout().lock();
                    // A closed pipe (e.g. `| head`) ends the watch quietly.
                    if writeln!(out, "{line}").and_then(|_| out.flush()).is_err() {
                        return Ok(exit::OK);
                    }
                }
                Some(Err(e)) => tracing::warn!("watch: {}", printable(&e.to_string())),
                None => return Ok(exit::OK),
            },
            _ = interrupt.recv() => return Ok(exit::OK),
        }
    }
}
