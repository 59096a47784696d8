//! The model's Redis: one server's keys and the lease and semaphore scripts
//! of `src/backend/scripts/`, written again in Rust step for step.
//!
//! Each function below is one `.lua` file (with the helpers of `prelude.lua`);
//! the comments quote the Lua line each step stands for, so that a change to
//! a script has an obvious place here. The conformance test (`conformance.rs`)
//! runs these functions and the real scripts on a real `redis-server` side by
//! side and compares every reply, every published message and every key: if
//! a script changes and this file does not, that test fails.
//!
//! Conventions: times are Redis's clock, milliseconds (`Ms`) or microseconds
//! (`Us`); holder ids, values and run ids are small numbers rendered as the
//! strings Redis would hold (`Hid::text`, `Val::text`, `Run::hex`). Lua
//! numbers are doubles; every number here stays below 2^53, where they are
//! exact, so plain integers mirror them.

#![allow(dead_code)]

use std::fmt;

pub type Ms = u64;
pub type Us = u64;

/// A holder (or waiter) id. Rendered in the shape of a real holder id,
/// `<host>/<pid>/<32 hex digits>` (the scripts touch no other queue or slot
/// members), with the number in the hex digits: string order is number order,
/// which is what Redis uses to order zset members of equal score. `short()`
/// is the name traces use (`h003`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Hid(pub u8);

impl Hid {
    pub fn text(self) -> String {
        format!("model/1/{:032x}", self.0)
    }
    pub fn short(self) -> String {
        format!("h{:03}", self.0)
    }
}

/// A client's inbox channel (`<prefix>inbox:<id>`, one per connection), where
/// a release hands the lease to a waiter of that client.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Inbox(pub u8);

impl Inbox {
    pub fn channel(self) -> String {
        format!("leasehold:inbox:{}", self.0)
    }
}

/// Where a message is published: the name's events channel, or an inbox.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Chan {
    Name,
    Inbox(Inbox),
}

/// One published message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Pub {
    pub to: Chan,
    pub event: Event,
}

/// prelude.lua `tell`: to the waiter's inbox, or on the name's channel when
/// it has none.
fn tell(inbox: Option<Inbox>, event: Event) -> Pub {
    Pub {
        to: inbox.map_or(Chan::Name, Chan::Inbox),
        event,
    }
}

fn on_name(event: Event) -> Pub {
    Pub {
        to: Chan::Name,
        event,
    }
}

/// A holder's value (free text; one has a space, as `qinfo` must cope).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Val(pub u8);

pub const VALUES: [&str; 4] = ["", "v", "a b", "x y z"];

impl Val {
    pub fn text(self) -> &'static str {
        VALUES[self.0 as usize]
    }
}

/// A server's `run_id` (new on every start, and on a promoted replica).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Run(pub u16);

impl Run {
    pub fn hex(self) -> String {
        format!("{:040x}", 0x1ea5_e000_u64 + self.0 as u64)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Lease,
    Sem,
}

impl Kind {
    pub fn text(self) -> &'static str {
        match self {
            Kind::Lease => "lease",
            Kind::Sem => "sem",
        }
    }
}

/// The record's `holder` field: `""` (free) or an id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Who {
    Nobody,
    Id(Hid),
}

impl Who {
    pub fn text(self) -> String {
        match self {
            Who::Nobody => String::new(),
            Who::Id(h) => h.text(),
        }
    }
}

/// The name record `<prefix>{<name>}:lease`, field by field; `None` = field
/// absent (the hash exists while any field is set).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Record {
    pub kind: Option<Kind>,
    pub holder: Option<Who>,
    pub value: Option<Val>,
    pub exp: Option<Ms>,
    pub ttl: Option<Ms>,
    pub token: Option<u64>,
    pub run: Option<Run>,
    pub maxttl: Option<Ms>,
    pub qu: Option<Ms>,
    pub obs: Option<Ms>,
    pub w: Option<bool>,
}

impl Record {
    pub fn exists(&self) -> bool {
        *self != Record::default()
    }
}

/// `"<lapse ms> <ttl ms> <slots> <inbox> <value>"` in `qinfo` (inbox `-`:
/// none; slots 0: a lease waiter).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct QInfo {
    pub lapse: Ms,
    pub ttl: Ms,
    /// What the waiter waits for: 0 a lease, N a slot of a semaphore of N.
    pub slots: u32,
    pub inbox: Option<Inbox>,
    pub value: Val,
}

impl QInfo {
    pub fn text(&self) -> String {
        format!(
            "{} {} {} {} {}",
            self.lapse,
            self.ttl,
            self.slots,
            self.inbox.map_or("-".to_string(), Inbox::channel),
            self.value.text()
        )
    }
}

/// The server marker `"<run_id> <base ms> <longest ttl ms>"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Marker {
    pub run: Run,
    pub base: Ms,
    pub max: Ms,
}

/// Every key of one name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Name {
    pub rec: Record,
    /// zset waiter → arrival (µs), kept in Redis order (score, then member).
    pub queue: Vec<(Hid, Us)>,
    pub qinfo: Vec<(Hid, QInfo)>,
    /// zset holder → slot expiry (ms), in Redis order.
    pub slots: Vec<(Hid, Ms)>,
    /// holder → (token, value).
    pub slotinfo: Vec<(Hid, (u64, Val))>,
    /// PEXPIREAT of the keys that have one.
    pub queue_at: Option<Ms>,
    pub qinfo_at: Option<Ms>,
    pub slots_at: Option<Ms>,
    pub slotinfo_at: Option<Ms>,
}

/// One server's keys: the marker (one per server) and the names.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Store {
    pub marker: Option<Marker>,
    pub names: Vec<Name>,
}

/// What a script sees of the server: `INFO server` (`run_id`,
/// `uptime_in_seconds`, `server_time_usec`; `TIME` reads the same clock),
/// `INFO replication` (`second_repl_offset` ≠ -1: promoted since its start;
/// `connected_slaves`) and `INFO commandstats` (`FLUSHALL`/`FLUSHDB` called
/// since its start).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Env {
    pub now_us: Us,
    pub run: Run,
    pub uptime_s: u64,
    pub promoted: bool,
    pub flushed: bool,
    /// `connected_slaves`.
    pub replicas: u32,
    /// Deliberate changes of the scripts (none for the real protocol).
    pub mutants: ScriptMutants,
}

impl Env {
    pub fn now(&self) -> Ms {
        self.now_us / 1000
    }
}

/// `uptime_in_seconds` as Redis 7 computes it: whole seconds of the clock now
/// minus whole seconds of the clock at start (measured: 0.1 s after a start
/// at x.9 s it reads 1).
pub fn redis_uptime(start_ms: Ms, now_ms: Ms) -> u64 {
    (now_ms / 1000).saturating_sub(start_ms / 1000)
}

/// A message published on the name's events channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Event {
    Granted {
        token: u64,
        head: Hid,
        claim: Ms,
        next: Option<Hid>,
    },
    /// `released <token>`, or `released <token> <head>`.
    Released {
        token: u64,
        head: Option<Hid>,
    },
    Acquired(u64),
    Proclaimed(u64),
}

impl Event {
    /// The payload exactly as the script publishes it.
    pub fn text(&self) -> String {
        self.render(Hid::text)
    }

    /// The payload with short holder names (traces).
    pub fn short(&self) -> String {
        self.render(Hid::short)
    }

    fn render(&self, id: fn(Hid) -> String) -> String {
        match *self {
            Event::Granted {
                token,
                head,
                claim,
                next,
            } => format!(
                "granted {token} {} {claim} {}",
                id(head),
                next.map(id).unwrap_or_default()
            ),
            Event::Released { token, head: None } => format!("released {token}"),
            Event::Released {
                token,
                head: Some(h),
            } => format!("released {token} {}", id(h)),
            Event::Acquired(t) => format!("acquired {t}"),
            Event::Proclaimed(t) => format!("proclaimed {t}"),
        }
    }
}

/// A reply as Redis sends it (Lua numbers become integers, strings bulk
/// strings, tables arrays).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Reply {
    Int(i64),
    Bulk(String),
    Arr(Vec<Reply>),
    Err(String),
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reply::Int(i) => write!(f, "{i}"),
            Reply::Bulk(s) => write!(f, "{s:?}"),
            Reply::Err(e) => write!(f, "(error) {e}"),
            Reply::Arr(a) => {
                write!(f, "[")?;
                for (i, r) in a.iter().enumerate() {
                    if i > 0 {
                        write!(f, ", ")?;
                    }
                    write!(f, "{r}")?;
                }
                write!(f, "]")
            }
        }
    }
}

fn int(i: i64) -> Reply {
    Reply::Int(i)
}
fn bulk(s: impl Into<String>) -> Reply {
    Reply::Bulk(s.into())
}

/// `acquire.lua`'s replies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Acquired {
    /// `{1, token}`
    Yes { token: u64 },
    /// `{0, left, holder, value, token, first}`
    Held {
        left: Ms,
        holder: Hid,
        value: Val,
        token: u64,
        first: bool,
    },
    /// `{2, wait}`
    Quarantine { wait: Ms },
    /// `{3, wait, head}`
    Queued { wait: Ms, head: Hid },
    /// `LEASEHOLD_KIND sem`
    KindSem,
}

impl Acquired {
    pub fn reply(&self) -> Reply {
        match *self {
            Acquired::Yes { token } => Reply::Arr(vec![int(1), bulk(token.to_string())]),
            Acquired::Held {
                left,
                holder,
                value,
                token,
                first,
            } => Reply::Arr(vec![
                int(0),
                int(left as i64),
                bulk(holder.text()),
                bulk(value.text()),
                bulk(token.to_string()),
                int(first as i64),
            ]),
            Acquired::Quarantine { wait } => Reply::Arr(vec![int(2), int(wait as i64)]),
            Acquired::Queued { wait, head } => {
                Reply::Arr(vec![int(3), int(wait as i64), bulk(head.text())])
            }
            Acquired::KindSem => Reply::Err("LEASEHOLD_KIND sem".into()),
        }
    }
}

/// `renew.lua`'s (and `sem_renew.lua`'s) replies: `{1}` or `{0, why}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Renewed {
    Yes,
    /// Refused; the current holder, or `None` for `""` (free or expired).
    No(Option<Hid>),
    /// A claim refused: ours, but with another token (the grant lapsed and
    /// was handed on, then back to us).
    Lapsed,
    /// sem_renew.lua's claim refused: the slot is ours, but with another
    /// token.
    SlotLapsed,
}

/// renew.lua's reason for a claim whose token no longer matches.
pub const LAPSED: &str = "the grant lapsed and the lease was handed on";
/// sem_renew.lua's reason for the same.
pub const SLOT_LAPSED: &str = "the grant lapsed and the slot was handed on";

impl Renewed {
    pub fn reply(&self) -> Reply {
        match self {
            Renewed::Yes => Reply::Arr(vec![int(1)]),
            Renewed::No(h) => Reply::Arr(vec![int(0), bulk(h.map(Hid::text).unwrap_or_default())]),
            Renewed::Lapsed => Reply::Arr(vec![int(0), bulk(LAPSED)]),
            Renewed::SlotLapsed => Reply::Arr(vec![int(0), bulk(SLOT_LAPSED)]),
        }
    }
}

/// `sem_acquire.lua`'s replies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SemAcquired {
    /// `{1, token}`
    Yes { token: u64 },
    /// `{0, wait, used, first, last_token}`
    Full {
        wait: Ms,
        used: u32,
        first: bool,
        last: u64,
    },
    /// `{2, wait}`
    Quarantine { wait: Ms },
    /// `{3, wait, head}`: a slot is free, but the waiters in line before us
    /// take the free slots.
    Queued { wait: Ms, head: Hid },
    /// `LEASEHOLD_KIND lease`
    KindLease,
}

impl SemAcquired {
    pub fn reply(&self) -> Reply {
        match *self {
            SemAcquired::Yes { token } => Reply::Arr(vec![int(1), bulk(token.to_string())]),
            SemAcquired::Full {
                wait,
                used,
                first,
                last,
            } => Reply::Arr(vec![
                int(0),
                int(wait as i64),
                int(used as i64),
                int(first as i64),
                bulk(last.to_string()),
            ]),
            SemAcquired::Quarantine { wait } => Reply::Arr(vec![int(2), int(wait as i64)]),
            SemAcquired::Queued { wait, head } => {
                Reply::Arr(vec![int(3), int(wait as i64), bulk(head.text())])
            }
            SemAcquired::KindLease => Reply::Err("LEASEHOLD_KIND lease".into()),
        }
    }
}

/// Deliberate one-line changes of the scripts, to show that the checker
/// notices them (`model.rs` keeps one test per mutant that expects a
/// counterexample). All `false` is the real protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct ScriptMutants {
    /// renew.lua takes a free or expired lease (`if r[1] == ARGV[1] or not
    /// held`), and sem_renew.lua re-adds an expired slot (a plain `ZADD`, as
    /// redis-semaphore#175 did).
    pub renew_recreates: bool,
    /// prelude.lua `ready_at` returns 0: no quarantine after a wipe.
    pub no_quarantine: bool,
    /// prelude.lua compares no run_id: a record or a marker restored from an
    /// older snapshot counts as this server's own.
    pub ignore_run_id: bool,
    /// acquire.lua issues `last + 1`, without the clock floor.
    pub no_token_floor: bool,
}

fn zset_insert(z: &mut Vec<(Hid, u64)>, id: Hid, score: u64) {
    z.retain(|(h, _)| *h != id);
    // Redis order: score, then member (byte order of the member string,
    // which for `Hid::text` is number order).
    let at = z
        .iter()
        .position(|(h, s)| (*s, *h) > (score, id))
        .unwrap_or(z.len());
    z.insert(at, (id, score));
}

fn zset_remove(z: &mut Vec<(Hid, u64)>, at: &mut Option<Ms>, id: Hid) -> bool {
    let before = z.len();
    z.retain(|(h, _)| *h != id);
    if z.is_empty() {
        // An empty zset is deleted, and its TTL with it.
        *at = None;
    }
    z.len() != before
}

fn hash_set<V>(h: &mut Vec<(Hid, V)>, id: Hid, v: V) {
    match h.iter_mut().find(|(k, _)| *k == id) {
        Some(e) => e.1 = v,
        None => {
            h.push((id, v));
            h.sort_by_key(|(k, _)| *k);
        }
    }
}

fn hash_del<V>(h: &mut Vec<(Hid, V)>, at: &mut Option<Ms>, id: Hid) {
    h.retain(|(k, _)| *k != id);
    if h.is_empty() {
        *at = None;
    }
}

fn hash_get<V: Copy>(h: &[(Hid, V)], id: Hid) -> Option<V> {
    h.iter().find(|(k, _)| *k == id).map(|(_, v)| *v)
}

/// `PTTL`: -2 missing, -1 no TTL, else ms left.
fn pttl(exists: bool, at: Option<Ms>, now: Ms) -> i64 {
    match (exists, at) {
        (false, _) => -2,
        (true, None) => -1,
        (true, Some(t)) => t as i64 - now as i64,
    }
}

impl Name {
    /// Redis expires a key once its clock is past the key's PEXPIREAT (a
    /// script sees the keys as of its start).
    pub fn expire_keys(&mut self, now: Ms) {
        if self.queue_at.is_some_and(|t| now > t) {
            self.queue.clear();
            self.queue_at = None;
        }
        if self.qinfo_at.is_some_and(|t| now > t) {
            self.qinfo.clear();
            self.qinfo_at = None;
        }
        if self.slots_at.is_some_and(|t| now > t) {
            self.slots.clear();
            self.slots_at = None;
        }
        if self.slotinfo_at.is_some_and(|t| now > t) {
            self.slotinfo.clear();
            self.slotinfo_at = None;
        }
    }

    /// prelude.lua `live_head`: the first waiter whose place has not lapsed;
    /// lapsed ones leave the line on the way.
    fn live_head(&mut self, now: Ms) -> Option<(Hid, QInfo)> {
        loop {
            // local h = redis.call('ZRANGE', queue, 0, 0)[1]
            let (h, _) = *self.queue.first()?;
            // if info and num(string.match(info, '^(%d+)')) > now then return h, info end
            if let Some(info) = hash_get(&self.qinfo, h)
                && info.lapse > now
            {
                return Some((h, info));
            }
            zset_remove(&mut self.queue, &mut self.queue_at, h);
            hash_del(&mut self.qinfo, &mut self.qinfo_at, h);
        }
    }

    /// prelude.lua `live_two`: the first two live waiters (head, next), with
    /// the lapsed places before the second one removed on the way.
    #[allow(clippy::type_complexity)]
    fn live_two(&mut self, now: Ms) -> (Option<(Hid, QInfo)>, Option<(Hid, QInfo)>) {
        let mut out = vec![];
        let mut i = 0;
        // while #out < 2: ZRANGE queue start start + 1 - #out; HMGET qinfo ...
        while out.len() < 2 && i < self.queue.len() {
            let (h, _) = self.queue[i];
            match hash_get(&self.qinfo, h) {
                Some(info) if info.lapse > now => {
                    out.push((h, info));
                    i += 1;
                }
                _ => {
                    zset_remove(&mut self.queue, &mut self.queue_at, h);
                    hash_del(&mut self.qinfo, &mut self.qinfo_at, h);
                }
            }
        }
        let mut it = out.into_iter();
        (it.next(), it.next())
    }

    /// prelude.lua `hand_on`: after a grant of `tok` to `head` (claim window
    /// `claim`), the head leaves the line, and "granted" goes to it, to the
    /// next in line (when its inbox is another) and on the name's channel
    /// while observed.
    fn hand_on(
        &mut self,
        (head, info): (Hid, QInfo),
        next: Option<(Hid, QInfo)>,
        tok: u64,
        claim: Ms,
        obs: Ms,
        now: Ms,
    ) -> Vec<Pub> {
        // ZREM queue head; HDEL qinfo head; if not next then HDEL rec 'qu' end
        zset_remove(&mut self.queue, &mut self.queue_at, head);
        hash_del(&mut self.qinfo, &mut self.qinfo_at, head);
        if next.is_none() {
            self.rec.qu = None;
        }
        let msg = Event::Granted {
            token: tok,
            head,
            claim,
            next: next.map(|(h, _)| h),
        };
        // tell(inbox, channel, msg)
        let mut out = vec![tell(info.inbox, msg)];
        // if next_info then ... if next_inbox ~= inbox then tell(next_inbox, channel, msg) end end
        if let Some((_, ni)) = next
            && ni.inbox != info.inbox
        {
            out.push(tell(ni.inbox, msg));
        }
        // if inbox ~= '-' and obs > now then PUBLISH channel msg end
        if info.inbox.is_some() && obs > now {
            out.push(on_name(msg));
        }
        out
    }

    fn rank(&self, id: Hid) -> Option<usize> {
        self.queue.iter().position(|(h, _)| *h == id)
    }
}

/// prelude.lua `claim_ms`: clamp(ttl/10, 100 ms, 1 s).
pub fn claim_ms(ttl: Ms) -> Ms {
    (ttl / 10).clamp(100, 1000)
}

/// prelude.lua `trusted`.
fn trusted(rec_run: Option<Run>, rec_w: Option<bool>, env: &Env) -> bool {
    // return rec_run == run or (rec_w == '1' and promoted())
    (rec_run.is_some() && env.mutants.ignore_run_id)
        || rec_run == Some(env.run)
        || (rec_w == Some(true) && env.promoted)
}

/// prelude.lua `ANNOUNCE_MS`: the shortest quarantine after a server is
/// found new.
pub const ANNOUNCE_MS: Ms = 3000;

/// prelude.lua `confirmed_by_all`: the caller WAITs for `want` replicas and
/// every replica connected now is among them (`"1"`).
fn confirmed_by_all(env: &Env, want: u32) -> bool {
    // local n = tonumber(arg) or (arg == 'w' and 1 or 0); if n <= 0 then return '0' end
    // if cs <= n then return '1' end
    want > 0 && env.replicas <= want
}

/// `string.format('%.0f', math.max(last + 1, now_us))`: the next token.
fn next_token(env: &Env, last: u64) -> u64 {
    if env.mutants.no_token_floor {
        return last + 1;
    }
    (last + 1).max(env.now_us)
}

impl Store {
    pub fn new(names: usize) -> Store {
        Store {
            marker: None,
            names: vec![Name::default(); names],
        }
    }

    pub fn expire_keys(&mut self, now: Ms) {
        for n in &mut self.names {
            n.expire_keys(now);
        }
    }

    /// prelude.lua `ready_at`: the Redis time from which a name last granted
    /// by `rec_run` (longest TTL `rec_max`; `None`: no record) may be granted
    /// again with `ttl`.
    #[allow(clippy::too_many_arguments)]
    fn ready_at(
        &mut self,
        env: &Env,
        rec_run: Option<Run>,
        rec_max: Option<Ms>,
        ttl: Ms,
        write: bool,
        rec_w: Option<bool>,
    ) -> Ms {
        let (run, now, uptime) = (env.run, env.now(), env.uptime_s);
        if env.mutants.no_quarantine {
            return 0;
        }
        // if rec_run and trusted(rec_run, rec_w, run) then return 0 end
        if rec_run.is_some() && trusted(rec_run, rec_w, env) {
            return 0;
        }
        // local mrun, mbase, mmax = nil, 0, 0 ... string.match(m, ...)
        let (mrun, mut mbase, mut mmax) = match self.marker {
            // (The mutant takes any marker for this server's own.)
            Some(m) if env.mutants.ignore_run_id => (Some(run), m.base, m.max),
            Some(m) => (Some(m.run), m.base, m.max),
            None => (None, 0, 0),
        };
        // if mrun ~= run then
        if mrun != Some(run) {
            // mbase = (math.floor(now / 1000) - uptime + 1) * 1000
            mbase = (now / 1000 - uptime + 1) * 1000;
            // if flushed or promoted() then mbase = now end
            if env.flushed || env.promoted {
                mbase = now;
            }
            // mmax = math.max(mmax, ttl)
            mmax = mmax.max(ttl);
            if write {
                self.marker = Some(Marker {
                    run,
                    base: mbase,
                    max: mmax,
                });
            }
        }
        // local longest = math.max(ttl, rec_max or mmax, ANNOUNCE_MS)
        let longest = ttl.max(rec_max.unwrap_or(mmax)).max(ANNOUNCE_MS);
        if write && longest > mmax {
            self.marker = Some(Marker {
                run,
                base: mbase,
                max: longest,
            });
        }
        mbase + longest
    }

    /// prelude.lua `raise_maxttl`: a grant with TTL `ttl` of name `n`, whose
    /// record said `rec_max`: the record's and the marker's longest TTL cover it.
    fn raise_maxttl(&mut self, env: &Env, n: usize, ttl: Ms, rec_max: Option<Ms>) {
        // if ttl > num(rec_max) then HSET rec maxttl ttl; note_ttl(epoch, run, ttl) end
        if ttl > rec_max.unwrap_or(0) {
            self.names[n].rec.maxttl = Some(ttl);
            self.note_ttl(env, ttl);
        }
    }

    /// prelude.lua `note_ttl`: raises the server's longest TTL.
    fn note_ttl(&mut self, env: &Env, ttl: Ms) {
        // if a == run and num(c) < ttl then redis.call('SET', epoch, a .. ' ' .. b .. ' ' .. ttl) end
        if let Some(m) = &mut self.marker
            && m.run == env.run
            && m.max < ttl
        {
            m.max = ttl;
        }
    }

    /// prelude.lua `note_refused`: a renewal refused by a server that did not
    /// grant the lease records the holder's TTL in the quarantine.
    fn note_refused(&mut self, env: &Env, n: usize, ttl: Ms, rec_run: Option<Run>) {
        // if rec_run == run then return end
        if rec_run == Some(env.run) {
            return;
        }
        // ready_at(epoch, run, now, uptime, nil, nil, ttl, true)
        self.ready_at(env, None, None, ttl, true, None);
        self.note_ttl(env, ttl);
        // if redis.call('EXISTS', rec) == 1 and num(redis.call('HGET', rec, 'maxttl')) < ttl then
        let rec = &mut self.names[n].rec;
        if rec.exists() && rec.maxttl.unwrap_or(0) < ttl {
            rec.maxttl = Some(ttl);
        }
    }

    /// `acquire.lua`. `wait`: ARGV[5] == "wait"; `confirm`: ARGV[7] (the
    /// replicas the caller's WAIT asks for); `inbox`: ARGV[8].
    #[allow(clippy::too_many_arguments)]
    pub fn acquire(
        &mut self,
        env: &Env,
        n: usize,
        me: Hid,
        ttl: Ms,
        value: Val,
        wait: bool,
        margin: Ms,
        confirm: u32,
        inbox: Option<Inbox>,
    ) -> (Acquired, Vec<Pub>) {
        let (now, now_us) = (env.now(), env.now_us);
        self.expire_keys(now);
        // local r = redis.pcall('HMGET', KEYS[1], 'kind', 'holder', 'exp', 'token', 'run', 'maxttl', 'qu', 'obs', 'value', 'w')
        let r = self.names[n].rec.clone();
        let holder = r.holder.unwrap_or(Who::Nobody);
        let exp = r.exp.unwrap_or(0);
        let last = r.token.unwrap_or(0);
        let qu = r.qu.unwrap_or(0);
        let obs = r.obs.unwrap_or(0);
        // if kind == 'sem' then ... ZCOUNT KEYS[5] '(' .. now '+inf' ... if live > 0 then LEASEHOLD_KIND sem
        if r.kind == Some(Kind::Sem) && self.names[n].slots.iter().any(|(_, e)| *e > now) {
            return (Acquired::KindSem, vec![]);
        }
        // local function queue_up(wait_ms)
        let queue_up = |s: &mut Store, wait_ms: Ms| {
            if !wait {
                return;
            }
            let name = &mut s.names[n];
            let until = now + wait_ms + margin;
            // ZADD KEYS[2] NX now_us me
            if name.rank(me).is_none() {
                zset_insert(&mut name.queue, me, now_us);
            }
            // HSET KEYS[3] me until_ms .. ' ' .. ttl .. ' 0 ' .. inbox .. ' ' .. value
            hash_set(
                &mut name.qinfo,
                me,
                QInfo {
                    lapse: until,
                    ttl,
                    slots: 0,
                    inbox,
                    value,
                },
            );
            // if until_ms > qu then keep_until = until_ms + ttl;
            // HSET qu keep_until; PEXPIREAT queue, qinfo keep_until
            if until > qu {
                let keep_until = until + ttl;
                name.rec.qu = Some(keep_until);
                name.queue_at = Some(keep_until);
                name.qinfo_at = Some(keep_until);
            }
        };
        // if holder ~= '' and exp > now then
        if let Who::Id(h) = holder
            && exp > now
        {
            if h == me {
                // HSET exp now + ttl, ttl, value, w confirmed_by_all(ARGV[7]);
                // if qu > 0 then ZREM queue me; HDEL qinfo me;
                // if EXISTS queue == 0 then HDEL qu end end; return {1, r[4] or '0'}
                let w = confirmed_by_all(env, confirm);
                let name = &mut self.names[n];
                name.rec.exp = Some(now + ttl);
                name.rec.ttl = Some(ttl);
                name.rec.value = Some(value);
                name.rec.w = Some(w);
                if qu > 0 {
                    zset_remove(&mut name.queue, &mut name.queue_at, me);
                    hash_del(&mut name.qinfo, &mut name.qinfo_at, me);
                    if name.queue.is_empty() {
                        name.rec.qu = None;
                    }
                }
                return (Acquired::Yes { token: last }, vec![]);
            }
            // queue_up(exp - now); first = waiting and ZRANK me == 0
            queue_up(self, exp - now);
            let first = wait && self.names[n].rank(me) == Some(0);
            return (
                Acquired::Held {
                    left: exp - now,
                    holder: h,
                    value: r.value.unwrap_or_default(),
                    token: last,
                    first,
                },
                vec![],
            );
        }
        // local ready = ready_at(KEYS[4], run, now, uptime, r[5], r[6] and num(r[6]) or (r[4] and 0 or nil), ttl, true, r[10])
        let rec_max = r.maxttl.or(r.token.map(|_| 0));
        let ready = self.ready_at(env, r.run, rec_max, ttl, true, r.w);
        // if now < ready then queue_up(ready - now); return {2, ready - now} end
        if now < ready {
            queue_up(self, ready - now);
            return (Acquired::Quarantine { wait: ready - now }, vec![]);
        }
        // if qu > 0 then
        if qu > 0 {
            let head = self.names[n].live_head(now);
            match head {
                // if head and head ~= me then ... return {3, lapses, head}
                Some((h, info)) if h != me => {
                    let lapses = info.lapse - now;
                    queue_up(self, lapses);
                    return (
                        Acquired::Queued {
                            wait: lapses,
                            head: h,
                        },
                        vec![],
                    );
                }
                // if head then ZREM queue me; HDEL qinfo me end
                Some(_) => {
                    let name = &mut self.names[n];
                    zset_remove(&mut name.queue, &mut name.queue_at, me);
                    hash_del(&mut name.qinfo, &mut name.qinfo_at, me);
                }
                None => {}
            }
            // if redis.call('EXISTS', KEYS[2]) == 0 then HDEL KEYS[1] qu end
            if self.names[n].queue.is_empty() {
                self.names[n].rec.qu = None;
            }
        }
        // local tok = max(last + 1, now_us); HSET kind lease holder me value exp ttl token run w
        let tok = next_token(env, last);
        {
            let rec = &mut self.names[n].rec;
            rec.kind = Some(Kind::Lease);
            rec.holder = Some(Who::Id(me));
            rec.value = Some(value);
            rec.exp = Some(now + ttl);
            rec.ttl = Some(ttl);
            rec.token = Some(tok);
            rec.run = Some(env.run);
            rec.w = Some(confirmed_by_all(env, confirm));
        }
        // raise_maxttl(KEYS[1], KEYS[4], run, ttl, r[6])
        self.raise_maxttl(env, n, ttl, r.maxttl);
        // if obs > now then PUBLISH acquired tok end
        let events = if obs > now {
            vec![on_name(Event::Acquired(tok))]
        } else {
            vec![]
        };
        (Acquired::Yes { token: tok }, events)
    }

    /// `release.lua`. `always`: ARGV[3] == "always". Returns 1/0.
    pub fn release(&mut self, env: &Env, n: usize, me: Hid, always: bool) -> (bool, Vec<Pub>) {
        let now = env.now();
        self.expire_keys(now);
        // local r = redis.pcall('HMGET', KEYS[1], 'holder', 'token', 'qu', 'obs', 'run', 'maxttl', 'w', 'kind')
        let r = self.names[n].rec.clone();
        // if failed(r) or r[1] ~= ARGV[1] or r[8] == 'sem' then return 0 end
        if r.holder != Some(Who::Id(me)) || r.kind == Some(Kind::Sem) {
            return (false, vec![]);
        }
        let mut tok = r.token.unwrap_or(0);
        let mut events = vec![];
        // if r[3] then
        if r.qu.is_some() {
            // local head, info, next, next_info = live_two(KEYS[2], KEYS[3], now)
            let (head, next) = self.names[n].live_two(now);
            // local _, ttl, inbox, value, slots = entry(info)
            // if head and slots == 0 and trusted(r[5], r[7], run) then
            if let Some((h, info)) = head
                && info.slots == 0
                && trusted(r.run, r.w, env)
            {
                // local claim = claim_ms(ttl)
                let claim = claim_ms(info.ttl);
                tok = next_token(env, r.token.unwrap_or(0));
                let name = &mut self.names[n];
                // HSET holder head value exp now + claim ttl token run w '0'
                name.rec.holder = Some(Who::Id(h));
                name.rec.value = Some(info.value);
                name.rec.exp = Some(now + claim);
                name.rec.ttl = Some(info.ttl);
                name.rec.token = Some(tok);
                name.rec.run = Some(env.run);
                name.rec.w = Some(false);
                // raise_maxttl(KEYS[1], KEYS[4], run, ttl, r[6])
                self.raise_maxttl(env, n, info.ttl, r.maxttl);
                // hand_on(KEYS[1], KEYS[2], KEYS[3], head, inbox, next, next_info, tok, claim, ARGV[2], num(r[4]), now)
                let obs = r.obs.unwrap_or(0);
                events.extend(self.names[n].hand_on((h, info), next, tok, claim, obs, now));
                return (true, events);
            }
            // HSET holder '' value ''
            let name = &mut self.names[n];
            name.rec.holder = Some(Who::Nobody);
            name.rec.value = Some(Val(0));
            // if head then tell(inbox, ARGV[2], 'released ' .. tok .. ' ' .. head); return 1 end
            // (also a head waiting for a semaphore's slot)
            if let Some((h, info)) = head {
                events.push(tell(
                    info.inbox,
                    Event::Released {
                        token: tok,
                        head: Some(h),
                    },
                ));
                return (true, events);
            }
            // HDEL qu
            name.rec.qu = None;
        } else {
            let name = &mut self.names[n];
            name.rec.holder = Some(Who::Nobody);
            name.rec.value = Some(Val(0));
        }
        let released = on_name(Event::Released {
            token: tok,
            head: None,
        });
        if always {
            events.push(released);
        } else if let Some(obs) = r.obs {
            // if num(r[4]) > tonumber(t[1]) * 1000 (TIME's whole seconds)
            if obs > env.now_us / 1_000_000 * 1000 {
                events.push(released);
            } else {
                self.names[n].rec.obs = None;
            }
        }
        (true, events)
    }

    /// `renew.lua`. `repair`: ARGV[3], ARGV[4] (quorum only); `expect`:
    /// ARGV[5] (a grant's claim); `confirm`: ARGV[6] (the replicas the
    /// caller's WAIT asks for).
    #[allow(clippy::too_many_arguments)]
    pub fn renew(
        &mut self,
        env: &Env,
        n: usize,
        me: Hid,
        ttl: Ms,
        repair: Option<(u64, Val)>,
        expect: Option<u64>,
        confirm: u32,
    ) -> Renewed {
        let mutants = env.mutants;
        let now = env.now();
        self.expire_keys(now);
        // local r = redis.pcall('HMGET', KEYS[1], 'holder', 'exp', 'token', 'run')
        let r = self.names[n].rec.clone();
        // local held = (r[1] or '') ~= '' and num(r[2]) > now
        let holder = match r.holder {
            Some(Who::Id(h)) => Some(h),
            _ => None,
        };
        let held = holder.is_some() && r.exp.unwrap_or(0) > now;
        // if held and r[1] == ARGV[1] and expect and expect ~= '' and r[3] ~= expect then
        if held
            && holder == Some(me)
            && let Some(t) = expect
            && r.token != Some(t)
        {
            return Renewed::Lapsed;
        }
        // if held and r[1] == ARGV[1] then HSET exp now + ttl, ttl, run,
        // w confirmed_by_all(ARGV[6]); return {1}
        // (The mutant also takes a free or expired lease: `if r[1] == ARGV[1]
        // or not held`, the SET-if-missing renewal of older lock libraries.)
        if (held && holder == Some(me)) || (mutants.renew_recreates && !held) {
            let rec = &mut self.names[n].rec;
            rec.holder = Some(Who::Id(me));
            rec.exp = Some(now + ttl);
            rec.ttl = Some(ttl);
            rec.run = Some(env.run);
            rec.w = Some(confirmed_by_all(env, confirm));
            return Renewed::Yes;
        }
        // if not held and ARGV[3] and ARGV[3] ~= '' then (quorum repair)
        if !held && let Some((tok, value)) = repair {
            // if num(tok) < num(r[3]) then tok = r[3] end
            let tok = tok.max(r.token.unwrap_or(0));
            let rec = &mut self.names[n].rec;
            rec.kind = Some(Kind::Lease);
            rec.holder = Some(Who::Id(me));
            rec.value = Some(value);
            rec.exp = Some(now + ttl);
            rec.ttl = Some(ttl);
            rec.token = Some(tok);
            rec.w = Some(confirmed_by_all(env, confirm));
            return Renewed::Yes;
        }
        // note_refused(KEYS[1], KEYS[2], ttl, r[4])
        self.note_refused(env, n, ttl, r.run);
        if held {
            Renewed::No(holder)
        } else {
            Renewed::No(None)
        }
    }

    /// `leave.lua`. Returns n (1 if it was queued or held a grant).
    pub fn leave(&mut self, env: &Env, n: usize, me: Hid) -> (i64, Vec<Pub>) {
        let now = env.now();
        self.expire_keys(now);
        // local r = redis.pcall('HMGET', KEYS[1], 'holder', 'exp', 'token')
        let r = self.names[n].rec.clone();
        let tok = r.token.unwrap_or(0);
        let mut events = vec![];
        let mut count = 0;
        let name = &mut self.names[n];
        // if redis.call('TYPE', KEYS[2])['ok'] == 'zset' then
        if !name.queue.is_empty() {
            let was_head = name.queue.first().map(|(h, _)| *h) == Some(me);
            count = zset_remove(&mut name.queue, &mut name.queue_at, me) as i64;
            // if TYPE qinfo == 'hash' then HDEL qinfo me
            hash_del(&mut name.qinfo, &mut name.qinfo_at, me);
            // if was_head and r[1] ~= ARGV[1] then ... tell(inbox, ARGV[2], 'released ' .. tok .. ' ' .. head)
            if was_head
                && r.holder != Some(Who::Id(me))
                && let Some((h, info)) = name.live_head(now)
            {
                events.push(tell(
                    info.inbox,
                    Event::Released {
                        token: tok,
                        head: Some(h),
                    },
                ));
            }
        }
        // if r[1] == ARGV[1] then (a grant that reached us too late)
        if r.holder == Some(Who::Id(me)) {
            name.rec.holder = Some(Who::Nobody);
            name.rec.value = Some(Val(0));
            // if head then tell(inbox, ..., 'released tok head') else PUBLISH 'released tok'
            events.push(match name.live_head(now) {
                Some((h, info)) => tell(
                    info.inbox,
                    Event::Released {
                        token: tok,
                        head: Some(h),
                    },
                ),
                None => on_name(Event::Released {
                    token: tok,
                    head: None,
                }),
            });
            count = 1;
        }
        // if n == 1 and EXISTS queue == 0 then HDEL qu end
        if count == 1 && name.queue.is_empty() {
            name.rec.qu = None;
        }
        (count, events)
    }

    /// `confirm.lua` (quorum): raise the lease's token to `token` if ours.
    pub fn confirm(&mut self, env: &Env, n: usize, me: Hid, token: u64) -> bool {
        self.expire_keys(env.now());
        let rec = &mut self.names[n].rec;
        // if TYPE ~= 'hash' then return 0; if r[1] ~= ARGV[1] then return 0
        if !rec.exists() || rec.holder != Some(Who::Id(me)) {
            return false;
        }
        // if tonumber(ARGV[2]) > (tonumber(r[2]) or 0) then HSET token
        if token > rec.token.unwrap_or(0) {
            rec.token = Some(token);
        }
        true
    }

    /// `status.lua`.
    pub fn status(&mut self, env: &Env, n: usize) -> Reply {
        let now = env.now();
        self.expire_keys(now);
        let r = self.names[n].rec.clone();
        let last = r.token.unwrap_or(0).to_string();
        let kind = r.kind.unwrap_or(Kind::Lease).text();
        // if (r[1] or '') ~= '' and num(r[2]) > now then
        if let Some(Who::Id(h)) = r.holder
            && r.exp.unwrap_or(0) > now
        {
            return Reply::Arr(vec![
                int((r.exp.unwrap_or(0) - now) as i64),
                bulk(h.text()),
                bulk(r.value.unwrap_or_default().text()),
                bulk(last.clone()),
                bulk(last),
                bulk(kind),
                int(0),
            ]);
        }
        // ready_at(..., r[6], r[7] and num(r[7]) or (r[4] and 0 or nil), num(r[8]), false, r[9]) or 0
        let rec_max = r.maxttl.or(r.token.map(|_| 0));
        let ready = self.ready_at(env, r.run, rec_max, r.ttl.unwrap_or(0), false, r.w);
        Reply::Arr(vec![
            int(-2),
            bulk(""),
            bulk(""),
            bulk("0"),
            bulk(last),
            bulk(kind),
            int((ready as i64 - now as i64).max(0)),
        ])
    }

    /// `observe.lua`.
    pub fn observe(&mut self, env: &Env, n: usize, ms: Ms) {
        self.expire_keys(env.now());
        let until = env.now() + ms;
        let rec = &mut self.names[n].rec;
        if rec.obs.unwrap_or(0) < until {
            rec.obs = Some(until);
        }
    }

    /// `proclaim.lua`.
    pub fn proclaim(&mut self, env: &Env, n: usize, me: Hid, value: Val) -> (bool, Vec<Pub>) {
        let now = env.now();
        self.expire_keys(now);
        let rec = &mut self.names[n].rec;
        // if TYPE ~= 'hash' then return 0
        if !rec.exists() || rec.holder != Some(Who::Id(me)) || rec.exp.unwrap_or(0) <= now {
            return (false, vec![]);
        }
        rec.value = Some(value);
        (
            true,
            vec![on_name(Event::Proclaimed(rec.token.unwrap_or(0)))],
        )
    }

    /// `sem_acquire.lua`. `wait`: ARGV[7] == "wait"; `margin`: ARGV[8];
    /// `confirm`: ARGV[6] (the replicas the caller's WAIT asks for);
    /// `inbox`: ARGV[9].
    #[allow(clippy::too_many_arguments)]
    pub fn sem_acquire(
        &mut self,
        env: &Env,
        n: usize,
        me: Hid,
        ttl: Ms,
        value: Val,
        limit: u32,
        confirm: u32,
        wait: bool,
        margin: Ms,
        inbox: Option<Inbox>,
    ) -> (SemAcquired, Vec<Pub>) {
        let (now, now_us) = (env.now(), env.now_us);
        self.expire_keys(now);
        // local r = redis.pcall('HMGET', KEYS[3], 'kind', 'holder', 'exp', 'token', 'run', 'maxttl', 'obs', 'w', 'qu')
        let r = self.names[n].rec.clone();
        // if r[1] == 'lease' and (r[2] or '') ~= '' and num(r[3]) > now then LEASEHOLD_KIND lease
        if r.kind == Some(Kind::Lease)
            && matches!(r.holder, Some(Who::Id(_)))
            && r.exp.unwrap_or(0) > now
        {
            return (SemAcquired::KindLease, vec![]);
        }
        // local qu = num(r[9])
        let qu = r.qu.unwrap_or(0);
        let name = &mut self.names[n];
        // ZRANGEBYSCORE KEYS[1] -inf now: ZREM, HDEL each
        let expired: Vec<Hid> = name
            .slots
            .iter()
            .filter(|(_, e)| *e <= now)
            .map(|(h, _)| *h)
            .collect();
        for h in expired {
            zset_remove(&mut name.slots, &mut name.slots_at, h);
            hash_del(&mut name.slotinfo, &mut name.slotinfo_at, h);
        }
        // local function keep(until_ms): if PTTL(k) < until_ms - now then PEXPIREAT k until_ms
        let keep = |name: &mut Name, until: Ms| {
            let d = until as i64 - now as i64;
            if pttl(!name.slots.is_empty(), name.slots_at, now) < d && !name.slots.is_empty() {
                name.slots_at = Some(until);
            }
            if pttl(!name.slotinfo.is_empty(), name.slotinfo_at, now) < d
                && !name.slotinfo.is_empty()
            {
                name.slotinfo_at = Some(until);
            }
        };
        // local function queue_up(wait_ms)
        let queue_up = |name: &mut Name, wait_ms: Ms| {
            // if not waiting then return true end
            if !wait {
                return;
            }
            // local until_ms = now + wait_ms + margin
            let until = now + wait_ms + margin;
            // ZADD KEYS[5] NX now_us me
            if name.rank(me).is_none() {
                zset_insert(&mut name.queue, me, now_us);
            }
            // HSET KEYS[6] me until_ms .. ' ' .. ttl .. ' ' .. limit .. ' ' .. inbox .. ' ' .. ARGV[3]
            hash_set(
                &mut name.qinfo,
                me,
                QInfo {
                    lapse: until,
                    ttl,
                    slots: limit,
                    inbox,
                    value,
                },
            );
            // if until_ms > qu then keep_until = until_ms + ttl;
            // HSET KEYS[3] qu keep_until; PEXPIREAT KEYS[5], KEYS[6] keep_until end
            if until > qu {
                let keep_until = until + ttl;
                name.rec.qu = Some(keep_until);
                name.queue_at = Some(keep_until);
                name.qinfo_at = Some(keep_until);
            }
        };
        // local function leave_line()
        let leave_line = |name: &mut Name| {
            // if qu > 0 then ZREM KEYS[5] me; HDEL KEYS[6] me;
            // if EXISTS KEYS[5] == 0 then HDEL KEYS[3] 'qu' end end
            if qu > 0 {
                zset_remove(&mut name.queue, &mut name.queue_at, me);
                hash_del(&mut name.qinfo, &mut name.qinfo_at, me);
                if name.queue.is_empty() {
                    name.rec.qu = None;
                }
            }
        };
        // if redis.call('ZSCORE', KEYS[1], me) then
        if name.slots.iter().any(|(h, _)| *h == me) {
            // ZADD XX now + ttl me; keep(now + ttl); leave_line()
            zset_insert(&mut name.slots, me, now + ttl);
            keep(name, now + ttl);
            leave_line(name);
            // local info = HGET slotinfo me or '0'; return {1, match(info, '^(%d+)') or '0'}
            let tok = hash_get(&name.slotinfo, me).map(|(t, _)| t).unwrap_or(0);
            return (SemAcquired::Yes { token: tok }, vec![]);
        }
        // The live slots (score > now, holder-shaped): used, first.
        let used = name.slots.iter().filter(|(_, e)| *e > now).count() as u32;
        // if used >= limit then
        if used >= limit {
            // local wait = math.max((first or now) - now, 0)
            let first = name
                .slots
                .iter()
                .find(|(_, e)| *e > now)
                .map_or(now, |(_, e)| *e);
            let wait_ms = first.saturating_sub(now);
            // if not queue_up(wait) then return foreign(5) end
            queue_up(name, wait_ms);
            // if waiting and redis.call('ZRANK', KEYS[5], me) == 0 then is_first = 1 end
            let is_first = wait && name.rank(me) == Some(0);
            // return {0, wait, used, is_first, r[4] or '0'}
            return (
                SemAcquired::Full {
                    wait: wait_ms,
                    used,
                    first: is_first,
                    last: r.token.unwrap_or(0),
                },
                vec![],
            );
        }
        // local ready = ready_at(KEYS[4], run, now, uptime, r[5], r[6] and num(r[6]) or (r[4] and 0 or nil), ttl, true, r[8])
        let rec_max = r.maxttl.or(r.token.map(|_| 0));
        let ready = self.ready_at(env, r.run, rec_max, ttl, true, r.w);
        // if now < ready then queue_up(ready - now); return {2, ready - now} end
        if now < ready {
            queue_up(&mut self.names[n], ready - now);
            return (SemAcquired::Quarantine { wait: ready - now }, vec![]);
        }
        // First come, first served: the free slots go to the first live
        // waiters in line; lapsed places leave the line on the way.
        // if qu > 0 then
        if qu > 0 {
            let name = &mut self.names[n];
            // local free, ahead, i, soonest, head = limit - used, 0, 0, nil, nil
            let free = limit - used;
            let (mut ahead, mut i) = (0, 0);
            let mut soonest: Option<Ms> = None;
            let mut head: Option<Hid> = None;
            // while ahead < free do
            while ahead < free {
                // local h = redis.call('ZRANGE', KEYS[5], i, i)[1]
                // if not h or h == me then return end
                let Some(&(h, _)) = name.queue.get(i) else {
                    break;
                };
                if h == me {
                    break;
                }
                // local lapse = num(string.match(HGET KEYS[6] h or '', '^(%d+)'))
                let lapse = hash_get(&name.qinfo, h).map_or(0, |q| q.lapse);
                if lapse > now {
                    // ahead, i = ahead + 1, i + 1; head = head or h;
                    // soonest = math.min(soonest or lapse, lapse)
                    ahead += 1;
                    i += 1;
                    head = head.or(Some(h));
                    soonest = Some(soonest.map_or(lapse, |s| s.min(lapse)));
                } else {
                    // ZREM KEYS[5] h; HDEL KEYS[6] h
                    zset_remove(&mut name.queue, &mut name.queue_at, h);
                    hash_del(&mut name.qinfo, &mut name.qinfo_at, h);
                }
            }
            // if ahead >= free then queue_up(soonest - now); return {3, soonest - now, head} end
            if ahead >= free {
                let w = soonest.expect("a live waiter ahead") - now;
                queue_up(name, w);
                return (
                    SemAcquired::Queued {
                        wait: w,
                        head: head.expect("a live waiter ahead"),
                    },
                    vec![],
                );
            }
            // leave_line()
            leave_line(name);
        }
        // local tok = max(num(r[4]) + 1, now_us); HSET kind sem token run w holder '' value ''
        let tok = next_token(env, r.token.unwrap_or(0));
        let name = &mut self.names[n];
        name.rec.kind = Some(Kind::Sem);
        name.rec.token = Some(tok);
        name.rec.run = Some(env.run);
        name.rec.holder = Some(Who::Nobody);
        name.rec.value = Some(Val(0));
        // local w = confirmed_by_all(ARGV[6]); if used > 0 and r[8] ~= '1' then w = '0' end
        name.rec.w = Some(confirmed_by_all(env, confirm) && (used == 0 || r.w == Some(true)));
        // raise_maxttl(KEYS[3], KEYS[4], run, ttl, r[6])
        self.raise_maxttl(env, n, ttl, r.maxttl);
        let name = &mut self.names[n];
        // ZADD slots now + ttl me; HSET slotinfo me tok .. ' ' .. value; keep(now + ttl)
        zset_insert(&mut name.slots, me, now + ttl);
        hash_set(&mut name.slotinfo, me, (tok, value));
        keep(name, now + ttl);
        let events = if r.obs.unwrap_or(0) > now {
            vec![on_name(Event::Acquired(tok))]
        } else {
            vec![]
        };
        (SemAcquired::Yes { token: tok }, events)
    }

    /// `sem_renew.lua`. `confirm`: ARGV[3] (the replicas the caller's WAIT
    /// asks for); `expect`: ARGV[4] (a grant's claim, with its token).
    pub fn sem_renew(
        &mut self,
        env: &Env,
        n: usize,
        me: Hid,
        ttl: Ms,
        confirm: u32,
        expect: Option<u64>,
    ) -> Renewed {
        let mutants = env.mutants;
        let now = env.now();
        self.expire_keys(now);
        let name = &mut self.names[n];
        // local exp = ZSCORE slots me; if not exp or tonumber(exp) <= now_ms then
        let exp = name.slots.iter().find(|(h, _)| *h == me).map(|(_, e)| *e);
        let live = exp.is_some_and(|e| e > now);
        if !live && !mutants.renew_recreates {
            // local rec_run = redis.pcall('HGET', KEYS[3], 'run')
            // note_refused(KEYS[3], KEYS[4], ttl, rec_run or nil); return {0, ''}
            let rec_run = name.rec.run;
            self.note_refused(env, n, ttl, rec_run);
            return Renewed::No(None);
        }
        // if expect and expect ~= '' then
        //   local info = HGET KEYS[2] ARGV[1] or ''
        //   if string.match(info, '^(%d+)') ~= expect then return {0, 'the grant lapsed ...'} end
        if let Some(t) = expect
            && hash_get(&name.slotinfo, me).map(|(tok, _)| tok) != Some(t)
        {
            return Renewed::SlotLapsed;
        }
        // ZADD XX now_ms + ttl me (the mutant: a plain ZADD, which re-creates)
        zset_insert(&mut name.slots, me, now + ttl);
        // local w = HGET KEYS[3] 'w'; if w == '1' and confirmed_by_all(ARGV[3]) == '0' then HSET w '0'
        if name.rec.w == Some(true) && !confirmed_by_all(env, confirm) {
            name.rec.w = Some(false);
        }
        // for i = 1, 2: if PTTL(k) < ttl then PEXPIRE k ttl
        if !name.slots.is_empty() && pttl(true, name.slots_at, now) < ttl as i64 {
            name.slots_at = Some(now + ttl);
        }
        if !name.slotinfo.is_empty() && pttl(true, name.slotinfo_at, now) < ttl as i64 {
            name.slotinfo_at = Some(now + ttl);
        }
        Renewed::Yes
    }

    /// `sem_release.lua`. `limit`: ARGV[3].
    pub fn sem_release(&mut self, env: &Env, n: usize, me: Hid, limit: u32) -> (bool, Vec<Pub>) {
        let now = env.now();
        self.expire_keys(now);
        let name = &mut self.names[n];
        // local exp = ZSCORE KEYS[1] ARGV[1]; if failed(exp) or not exp then return 0 end
        let Some(exp) = name.slots.iter().find(|(h, _)| *h == me).map(|(_, e)| *e) else {
            return (false, vec![]);
        };
        // ZREM KEYS[1] ARGV[1]; HDEL KEYS[2] ARGV[1]
        zset_remove(&mut name.slots, &mut name.slots_at, me);
        hash_del(&mut name.slotinfo, &mut name.slotinfo_at, me);
        // if tonumber(exp) <= now then return 0 end
        if exp <= now {
            return (false, vec![]);
        }
        // local r = HMGET KEYS[3] 'qu' 'obs' 'token' 'run' 'maxttl' 'w' 'kind' 'holder' 'exp'
        let r = name.rec.clone();
        // local tok = r[3] or '0'
        let mut tok = r.token.unwrap_or(0);
        let mut events = vec![];
        // if r[7] == 'lease' and (r[8] or '') ~= '' and num(r[9]) > now then return 1 end
        if r.kind == Some(Kind::Lease)
            && matches!(r.holder, Some(Who::Id(_)))
            && r.exp.unwrap_or(0) > now
        {
            return (true, events);
        }
        // if r[1] then
        if r.qu.is_some() {
            // local ok, head, info, next, next_info = pcall(live_two, KEYS[5], KEYS[6], now)
            let (head, next) = name.live_two(now);
            // local live = redis.call('ZCOUNT', KEYS[1], '(' .. now, '+inf')
            let live = name.slots.iter().filter(|(_, e)| *e > now).count() as u32;
            // local _, ttl, inbox, value, slots = entry(info)
            // if head and slots > 0 and live < math.min(tonumber(ARGV[3]) or 1, slots)
            //   and trusted(r[4], r[6], run) then
            if let Some((h, info)) = head
                && info.slots > 0
                && live < limit.min(info.slots)
                && trusted(r.run, r.w, env)
            {
                // local claim = claim_ms(ttl)
                let claim = claim_ms(info.ttl);
                // tok = string.format('%.0f', math.max(num(r[3]) + 1, now_us))
                tok = next_token(env, r.token.unwrap_or(0));
                // HSET KEYS[3] 'kind' 'sem' 'token' tok 'run' run 'w' '0'
                name.rec.kind = Some(Kind::Sem);
                name.rec.token = Some(tok);
                name.rec.run = Some(env.run);
                name.rec.w = Some(false);
                // raise_maxttl(KEYS[3], KEYS[4], run, ttl, r[5])
                self.raise_maxttl(env, n, info.ttl, r.maxttl);
                let name = &mut self.names[n];
                // ZADD KEYS[1] now + claim head; HSET KEYS[2] head tok .. ' ' .. value
                zset_insert(&mut name.slots, h, now + claim);
                hash_set(&mut name.slotinfo, h, (tok, info.value));
                // for i = 1, 2: if PTTL(KEYS[i]) < claim then PEXPIRE KEYS[i] claim
                if pttl(true, name.slots_at, now) < claim as i64 {
                    name.slots_at = Some(now + claim);
                }
                if pttl(true, name.slotinfo_at, now) < claim as i64 {
                    name.slotinfo_at = Some(now + claim);
                }
                // hand_on(KEYS[3], KEYS[5], KEYS[6], head, inbox, next, next_info, tok, claim, ARGV[2], num(r[2]), now)
                let obs = r.obs.unwrap_or(0);
                events.extend(name.hand_on((h, info), next, tok, claim, obs, now));
                return (true, events);
            }
            // if head then tell(inbox, ARGV[2], 'released ' .. tok .. ' ' .. head); return 1 end
            if let Some((h, info)) = head {
                events.push(tell(
                    info.inbox,
                    Event::Released {
                        token: tok,
                        head: Some(h),
                    },
                ));
                return (true, events);
            }
            // redis.call('HDEL', KEYS[3], 'qu')
            name.rec.qu = None;
        }
        // if num(r[2]) > now then PUBLISH ARGV[2] 'released ' .. tok end
        if r.obs.unwrap_or(0) > now {
            events.push(on_name(Event::Released {
                token: tok,
                head: None,
            }));
        }
        (true, events)
    }

    /// `sem_leave.lua`. `limit`: ARGV[3]. Returns n (1 if it was queued or
    /// held a slot).
    pub fn sem_leave(&mut self, env: &Env, n: usize, me: Hid, limit: u32) -> (i64, Vec<Pub>) {
        let now = env.now();
        self.expire_keys(now);
        let name = &mut self.names[n];
        let mut events = vec![];
        // local was_head = ZRANGE KEYS[4] 0 0 [1] == ARGV[1]
        let was_head = name.queue.first().map(|(h, _)| *h) == Some(me);
        // local n = redis.call('ZREM', KEYS[4], ARGV[1])
        let mut count = zset_remove(&mut name.queue, &mut name.queue_at, me) as i64;
        // if n == 1 and TYPE KEYS[5] == 'hash' then HDEL KEYS[5] ARGV[1] end
        if count == 1 {
            hash_del(&mut name.qinfo, &mut name.qinfo_at, me);
        }
        // if redis.call('ZREM', KEYS[1], ARGV[1]) == 1 then HDEL KEYS[2] ARGV[1]; n = 1 end
        if zset_remove(&mut name.slots, &mut name.slots_at, me) {
            hash_del(&mut name.slotinfo, &mut name.slotinfo_at, me);
            count = 1;
        }
        // if n == 0 then return 0 end
        if count == 0 {
            return (0, events);
        }
        // if was_head or ZCOUNT KEYS[1] '(' .. now '+inf' < (tonumber(ARGV[3]) or 1) then
        let live = name.slots.iter().filter(|(_, e)| *e > now).count() as u32;
        if was_head || live < limit {
            // local ok, head, info = pcall(live_head, KEYS[4], KEYS[5], now)
            if let Some((h, info)) = name.live_head(now) {
                // local tok = HGET KEYS[3] 'token' or '0'
                let tok = name.rec.token.unwrap_or(0);
                // tell(inbox, ARGV[2], 'released ' .. tok .. ' ' .. head)
                events.push(tell(
                    info.inbox,
                    Event::Released {
                        token: tok,
                        head: Some(h),
                    },
                ));
            }
        }
        // if EXISTS KEYS[4] == 0 then HDEL KEYS[3] 'qu' end
        if name.queue.is_empty() {
            name.rec.qu = None;
        }
        (1, events)
    }

    /// `sem_status.lua`: holder, ms left, "token value" of unexpired slots.
    pub fn sem_status(&mut self, env: &Env, n: usize) -> Reply {
        let now = env.now();
        self.expire_keys(now);
        let name = &self.names[n];
        let mut out = vec![];
        // ZRANGEBYSCORE slots now_ms + 1 +inf WITHSCORES
        for (h, e) in name.slots.iter().filter(|(_, e)| *e > now) {
            out.push(bulk(h.text()));
            out.push(int((*e - now) as i64));
            let info = match hash_get(&name.slotinfo, *h) {
                Some((t, v)) => format!("{t} {}", v.text()),
                None => "0 ".into(),
            };
            out.push(bulk(info));
        }
        Reply::Arr(out)
    }
}
