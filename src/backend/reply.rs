//! Decoding script replies: every shape a script may answer, one error
//! (`Error::Protocol`) for anything else.

use std::time::Duration;

use redis::Value;

use super::{HolderInfo, RenewReply};
use crate::error::{Error, Result};
use crate::token::{FencingToken, HolderId};

pub(super) fn parse_renew(v: Value) -> Result<RenewReply> {
    let reply = array("renew", v)?;
    if int_at("renew", &reply, 0)? == 1 {
        return Ok(RenewReply::Renewed);
    }
    let now = string_at("renew", &reply, 1)?;
    let reason = if now.is_empty() {
        "the lease key is gone (expired, deleted, or Redis lost its data)".to_string()
    } else if now.starts_with("foreign type") {
        format!("the lease key was overwritten: {now}")
    } else {
        format!("now held by {}", HolderId::from_raw(now).readable())
    };
    Ok(RenewReply::Refused { reason })
}

/// The same failure for every item of a failed batch.
pub(super) fn clone_unavailable(e: &Error) -> Error {
    match e {
        Error::Timeout { op, after } => Error::Timeout { op, after: *after },
        other => Error::Redis {
            op: "renew",
            source: redis::RedisError::from(std::io::Error::other(other.to_string())),
        },
    }
}

pub(super) fn is_noscript(v: &Value) -> bool {
    matches!(v, Value::ServerError(e) if e.code() == "NOSCRIPT")
}

pub(super) fn bad(op: &'static str, detail: impl Into<String>) -> Error {
    Error::Protocol {
        op,
        detail: detail.into(),
    }
}

pub(super) fn array(op: &'static str, v: Value) -> Result<Vec<Value>> {
    match v {
        Value::Array(items) => Ok(items),
        other => Err(bad(op, format!("expected an array, got {other:?}"))),
    }
}

pub(super) fn int(op: &'static str, v: &Value) -> Result<i64> {
    match v {
        Value::Int(i) => Ok(*i),
        Value::BulkString(b) => std::str::from_utf8(b)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad(op, "expected an integer")),
        other => Err(bad(op, format!("expected an integer, got {other:?}"))),
    }
}

pub(super) fn int_at(op: &'static str, items: &[Value], i: usize) -> Result<i64> {
    int(op, items.get(i).ok_or_else(|| bad(op, "reply too short"))?)
}

pub(super) fn u64_at(op: &'static str, items: &[Value], i: usize) -> Result<u64> {
    u64::try_from(int_at(op, items, i)?).map_err(|_| bad(op, "negative token"))
}

pub(super) fn string_at(op: &'static str, items: &[Value], i: usize) -> Result<String> {
    match items.get(i) {
        Some(Value::BulkString(b)) => Ok(String::from_utf8_lossy(b).into_owned()),
        Some(Value::SimpleString(s)) => Ok(s.clone()),
        Some(Value::Int(i)) => Ok(i.to_string()),
        Some(Value::Nil) | None => Ok(String::new()),
        Some(other) => Err(bad(op, format!("expected a string, got {other:?}"))),
    }
}

/// Parses `{pttl, holder, value, token}` starting at `at`.
pub(super) fn holder_info(op: &'static str, items: &[Value], at: usize) -> Result<HolderInfo> {
    let pttl = int_at(op, items, at)?;
    Ok(HolderInfo {
        // -1 means a lease key without TTL, which only a foreign writer makes;
        // treat it as expiring now rather than never.
        ttl_left: Duration::from_millis(pttl.max(0) as u64),
        holder: HolderId::from_raw(string_at(op, items, at + 1)?),
        value: string_at(op, items, at + 2)?,
        token: FencingToken(u64_at(op, items, at + 3).unwrap_or(0)),
    })
}
