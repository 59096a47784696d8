//! The semaphore scripts (`sem_*.lua`) on one logical Redis.

use std::time::Duration;

use super::node::Node;
use super::reply::{array, bad, int, int_at, string_at, u64_at};
use super::scripts::{self, Call};
use super::{AcquireReply, HolderInfo};
use crate::error::{Error, Result};
use crate::token::{FencingToken, HolderId};

impl Node {
    /// `sem_acquire.lua`: one attempt at one of `limit` slots of `a.name`.
    pub async fn sem_attempt(&self, a: &super::Attempt<'_>, limit: u32) -> Result<AcquireReply> {
        let (name, holder, ttl, value, queue) = (a.name, a.holder, a.ttl, a.value, a.queue);
        let k = self.keys(name)?;
        let call = Call::new(&scripts::SEM_ACQUIRE)
            .key(&k.slots)
            .key(&k.slotinfo)
            .key(&k.lease)
            .key(&k.epoch)
            .key(&k.queue)
            .key(&k.qinfo)
            .arg(holder.as_str())
            .arg(ttl.as_millis() as u64)
            .arg(value)
            .arg(limit)
            .arg(&k.events)
            .arg(self.confirm_flag())
            .arg(if queue { "wait" } else { "try" })
            .arg(super::queue_margin(ttl).as_millis() as u64)
            .arg(if queue { self.inbox.as_str() } else { "" });
        let (mut replies, replicated) = self
            .exec(
                "semaphore",
                std::slice::from_ref(&call),
                Some(self.wait_limit(ttl)),
            )
            .await?;
        let r = array(
            "semaphore",
            replies
                .pop()
                .unwrap_or_else(|| Err(bad("semaphore", "no reply")))?,
        )?;
        let ms = |i| -> Result<Duration> {
            Ok(Duration::from_millis(
                int_at("semaphore", &r, i)?.max(0) as u64
            ))
        };
        match int_at("semaphore", &r, 0)? {
            1 => {
                if !replicated {
                    let _ = self.sem_release(name, holder, limit).await;
                    return Err(Error::NotReplicated {
                        op: "semaphore acquire",
                        want: self.min_replicas,
                    });
                }
                Ok(AcquireReply::Acquired {
                    token: FencingToken(u64_at("semaphore", &r, 1)?),
                })
            }
            0 => Ok(AcquireReply::Full {
                wait: ms(1)?,
                used: int_at("semaphore", &r, 2)?.max(0) as u32,
                first: int_at("semaphore", &r, 3).unwrap_or(0) == 1,
                last_token: FencingToken(u64_at("semaphore", &r, 4).unwrap_or(0)),
            }),
            2 => Ok(AcquireReply::Quarantined { wait: ms(1)? }),
            3 => Ok(AcquireReply::Queued {
                wait: ms(1)?,
                head: HolderId::from_raw(string_at("semaphore", &r, 2)?),
            }),
            other => Err(Error::Protocol {
                op: "semaphore",
                detail: format!("status {other}"),
            }),
        }
    }

    /// `sem_release.lua`: gives `holder`'s slot back (handing it to the
    /// first waiter in line, if any).
    pub async fn sem_release(&self, name: &str, holder: &HolderId, limit: u32) -> Result<bool> {
        let k = self.keys(name)?;
        let call = Call::new(&scripts::SEM_RELEASE)
            .key(&k.slots)
            .key(&k.slotinfo)
            .key(&k.lease)
            .key(&k.epoch)
            .key(&k.queue)
            .key(&k.qinfo)
            .arg(holder.as_str())
            .arg(&k.events)
            .arg(limit);
        Ok(int(
            "semaphore release",
            &self.call("semaphore release", call).await?,
        )? == 1)
    }

    /// `sem_leave.lua`: takes `holder` out of the semaphore's queue, and
    /// gives back a slot handed to it after it stopped waiting.
    pub async fn sem_leave(&self, name: &str, holder: &HolderId, limit: u32) -> Result<()> {
        let k = self.keys(name)?;
        let call = Call::new(&scripts::SEM_LEAVE)
            .key(&k.slots)
            .key(&k.slotinfo)
            .key(&k.lease)
            .key(&k.queue)
            .key(&k.qinfo)
            .arg(holder.as_str())
            .arg(&k.events)
            .arg(limit);
        self.call("leave", call).await.map(|_| ())
    }

    /// The unexpired holders of semaphore `name`.
    pub async fn sem_status(&self, name: &str) -> Result<Vec<HolderInfo>> {
        let k = self.keys(name)?;
        let call = Call::new(&scripts::SEM_STATUS)
            .key(&k.slots)
            .key(&k.slotinfo);
        let r = array(
            "semaphore status",
            self.call("semaphore status", call).await?,
        )?;
        let mut out = Vec::new();
        for i in (0..r.len()).step_by(3) {
            let info = string_at("semaphore status", &r, i + 2)?;
            let (token, value) = info.split_once(' ').unwrap_or((&info, ""));
            out.push(HolderInfo {
                holder: HolderId::from_raw(string_at("semaphore status", &r, i)?),
                ttl_left: Duration::from_millis(
                    int_at("semaphore status", &r, i + 1)?.max(0) as u64
                ),
                token: FencingToken(token.parse().unwrap_or(0)),
                value: value.to_string(),
            });
        }
        Ok(out)
    }
}
