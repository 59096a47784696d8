//! Conformance: the model's Redis steps (`redis.rs`) against a real
//! `redis-server` running the real `.lua` files, on the same random sequences
//! of operations, comparing every reply, every published message and every
//! key after every step. This is what ties the model to the code: a change to
//! a script that the model does not follow fails here.
//!
//! The scripts are loaded exactly as `src/backend/scripts.rs` builds them
//! (which of them get `prelude.lua` in front is read from that file), with one
//! addition in front of all: a *clock shim* that shadows `redis` inside the
//! script so that `TIME` and `INFO` answer from the test's virtual clock and
//! server identity (`run_id`, uptime, promoted, flushed), and `PTTL`/`PEXPIRE`
//! count on the same clock. The script text after the shim is byte for byte
//! the one leasehold sends. Virtual time runs far in Redis's future (year
//! 2096), so no key ever expires in real time; the harness expires keys the
//! way Redis does (a key is gone once the clock is past its `PEXPIRETIME`),
//! before each step. Time therefore advances by any amount, to the
//! microsecond, without waiting and without flakiness.
//!
//! Faults are real: `restart` is a SIGKILLed server started again empty;
//! `restart from snapshot` starts it on an RDB saved earlier (`SAVE`);
//! `failover` does the same and reports itself promoted (a replica that
//! missed the latest writes); `FLUSHALL`, `SCRIPT FLUSH` (the harness then
//! reloads scripts on NOSCRIPT, as `Node::exec` does) and deleting the marker.
//!
//! `real_clock_sanity` checks the one thing the shim replaces: the real
//! `INFO` fields the prelude parses, and the exact scripts without the shim.

use std::collections::HashMap;
use std::fmt::Write as _;

use super::redis::*;
use super::resp::{Conn, Resp};
use leasehold_testkit::RedisServer;

const SCRIPTS_RS: &str = include_str!("../../src/backend/scripts.rs");
const PRELUDE: &str = include_str!("../../src/backend/scripts/prelude.lua");
const FILES: &[(&str, &str)] = &[
    (
        "acquire",
        include_str!("../../src/backend/scripts/acquire.lua"),
    ),
    (
        "release",
        include_str!("../../src/backend/scripts/release.lua"),
    ),
    ("renew", include_str!("../../src/backend/scripts/renew.lua")),
    ("leave", include_str!("../../src/backend/scripts/leave.lua")),
    (
        "confirm",
        include_str!("../../src/backend/scripts/confirm.lua"),
    ),
    (
        "status",
        include_str!("../../src/backend/scripts/status.lua"),
    ),
    (
        "observe",
        include_str!("../../src/backend/scripts/observe.lua"),
    ),
    (
        "proclaim",
        include_str!("../../src/backend/scripts/proclaim.lua"),
    ),
    (
        "sem_acquire",
        include_str!("../../src/backend/scripts/sem_acquire.lua"),
    ),
    (
        "sem_renew",
        include_str!("../../src/backend/scripts/sem_renew.lua"),
    ),
    (
        "sem_release",
        include_str!("../../src/backend/scripts/sem_release.lua"),
    ),
    (
        "sem_leave",
        include_str!("../../src/backend/scripts/sem_leave.lua"),
    ),
    (
        "sem_status",
        include_str!("../../src/backend/scripts/sem_status.lua"),
    ),
];

/// The text leasehold sends for script `name`: `scripts.rs` puts the
/// prelude and a newline in front of the scripts marked `+ prelude` in its
/// `scripts!` list.
pub fn exact_text(name: &str) -> String {
    let quoted = format!("= \"{name}\"");
    let line = SCRIPTS_RS
        .lines()
        .find(|l| l.contains(&quoted))
        .unwrap_or_else(|| panic!("script {name} is not in src/backend/scripts.rs"));
    let body = FILES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, b)| *b)
        .unwrap_or_else(|| panic!("no file for {name}"));
    if line.contains("+ prelude") {
        format!("{PRELUDE}\n{body}")
    } else {
        body.to_string()
    }
}

/// Put in front of every script: `redis.call`/`redis.pcall` answer `TIME`,
/// `INFO server|replication|commandstats`, `PTTL` and `PEXPIRE` from the
/// virtual clock in the hash `__model:clock`; everything else goes to Redis.
const SHIM: &str = r#"local __real = redis
local __c = __real.call('HMGET', '__model:clock', 'us', 'run', 'uptime', 'promoted', 'flushed', 'replicas')
local __us, __run, __up = tonumber(__c[1]), __c[2], __c[3]
local __ms = math.floor(__us / 1000)
local function __fake(f)
  return function(cmd, ...)
    local c = string.upper(cmd)
    if c == 'TIME' then
      return {string.format('%.0f', math.floor(__us / 1000000)), string.format('%.0f', __us % 1000000)}
    elseif c == 'INFO' then
      local s = ...
      if s == 'server' then
        return 'run_id:' .. __run .. '\r\nuptime_in_seconds:' .. __up .. '\r\nserver_time_usec:' .. string.format('%.0f', __us) .. '\r\n'
      elseif s == 'replication' then
        return 'role:master\r\nconnected_slaves:' .. __c[6] .. '\r\nsecond_repl_offset:' .. (__c[4] == '1' and '4321' or '-1') .. '\r\n'
      elseif s == 'commandstats' then
        return __c[5] == '1' and 'cmdstat_flushall:calls=1,usec=9,usec_per_call=9.00\r\n' or 'cmdstat_ping:calls=1,usec=1,usec_per_call=1.00\r\n'
      end
    elseif c == 'PTTL' then
      local at = __real.call('PEXPIRETIME', (...))
      if at < 0 then return at end
      return at - __ms
    elseif c == 'PEXPIRE' then
      local k, ms = ...
      return __real.call('PEXPIREAT', k, __ms + tonumber(ms))
    end
    return f(cmd, ...)
  end
end
local redis = setmetatable({call = __fake(__real.call), pcall = __fake(__real.pcall)}, {__index = __real})
"#;

const NAMES: usize = 2;
/// Virtual time starts here (ms): far in the future of the real clock.
const EPOCH_MS: u64 = 4_000_000_000_000;

fn key(n: usize, part: &str) -> String {
    format!("leasehold:{{n{n}}}:{part}")
}
const MARKER: &str = "leasehold:epoch";

/// A small deterministic generator (xorshift64*), seeded per run.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    pub fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len() as u64) as usize]
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// One step of a conformance run.
#[derive(Clone, Copy, Debug)]
pub enum Op {
    Acquire {
        n: usize,
        who: Hid,
        ttl: Ms,
        value: Val,
        wait: bool,
        /// ARGV[7]: the replicas the caller's WAIT asks for.
        confirm: u32,
        /// ARGV[8]: the caller's inbox ("" when none).
        inbox: Option<Inbox>,
    },
    Renew {
        n: usize,
        who: Hid,
        ttl: Ms,
        repair: Option<(u64, Val)>,
        /// ARGV[5]: a grant's claim, with the grant's token.
        expect: Option<u64>,
        /// ARGV[6]: the replicas the caller's WAIT asks for.
        confirm: u32,
    },
    Release {
        n: usize,
        who: Hid,
        always: bool,
    },
    Leave {
        n: usize,
        who: Hid,
    },
    Confirm {
        n: usize,
        who: Hid,
        token: u64,
    },
    Status {
        n: usize,
    },
    Observe {
        n: usize,
        ms: Ms,
    },
    Proclaim {
        n: usize,
        who: Hid,
        value: Val,
    },
    SemAcquire {
        n: usize,
        who: Hid,
        ttl: Ms,
        value: Val,
        limit: u32,
        confirm: u32,
        /// ARGV[7]: "wait" (keep a place in the queue) or "try".
        wait: bool,
        /// ARGV[8]: the registration margin (ms).
        margin: Ms,
        /// ARGV[9]: the caller's inbox ("" when none).
        inbox: Option<Inbox>,
    },
    SemRenew {
        n: usize,
        who: Hid,
        ttl: Ms,
        /// ARGV[3]: the replicas the caller's WAIT asks for.
        confirm: u32,
        /// ARGV[4]: a grant's claim, with the grant's token.
        expect: Option<u64>,
    },
    SemRelease {
        n: usize,
        who: Hid,
        /// ARGV[3]: the limit.
        limit: u32,
    },
    SemLeave {
        n: usize,
        who: Hid,
        /// ARGV[3]: the limit.
        limit: u32,
    },
    SemStatus {
        n: usize,
    },
    /// The clock moves on (µs).
    Advance(u64),
    /// Replicas connect or leave (`connected_slaves`).
    Replicas(u32),
    Restart,
    Snapshot,
    RestartFromSnapshot,
    Failover,
    FlushAll,
    ScriptFlush,
    DelMarker,
}

const TTLS: &[Ms] = &[100, 150, 1000, 2500, 10_000];

fn gen_op(rng: &mut Rng, model: &Store) -> Op {
    // Name 0 is mostly used as a lease and name 1 as a semaphore; now and
    // then each is used as the other kind (they must exclude each other).
    let lease_n = if rng.chance(90) { 0 } else { 1 };
    let sem_n = 1 - lease_n;
    let any = Hid(rng.below(4) as u8);
    // Renewals, releases and the like mostly come from whoever holds (a
    // lease of name 0, or a slot of name 1), so that their success paths run
    // as often as their refusals.
    let holder = match model.names[lease_n].rec.holder {
        Some(Who::Id(h)) if rng.chance(60) => h,
        _ => any,
    };
    let slots = &model.names[sem_n].slots;
    let slot_holder = if !slots.is_empty() && rng.chance(60) {
        slots[rng.below(slots.len() as u64) as usize].0
    } else {
        any
    };
    // Semaphore waiters leave (or give back a late grant), mostly from the
    // line or the slots.
    let sem_leaver = match (
        model.names[sem_n].queue.first(),
        model.names[sem_n].slots.last(),
    ) {
        (Some((h, _)), _) if rng.chance(50) => *h,
        (_, Some((h, _))) if rng.chance(30) => *h,
        _ => any,
    };
    let limit = rng.pick(&[1, 1, 1, 2, 2, 3]);
    let ttl = rng.pick(TTLS);
    let value = Val(rng.below(VALUES.len() as u64) as u8);
    let n = lease_n;
    // Each holder id belongs to one of two clients (inboxes 0 and 1), or to
    // one without an inbox (a quorum member, an older client).
    let inbox_of = |h: Hid| (h.0 < 2).then_some(Inbox(h.0 % 2));
    let confirm = if rng.chance(75) {
        0
    } else {
        rng.pick(&[1, 1, 2])
    };
    match rng.below(200) {
        0..=41 => Op::Acquire {
            n,
            who: any,
            ttl,
            value,
            wait: rng.chance(80),
            confirm,
            inbox: inbox_of(any),
        },
        42..=59 => {
            let t = model.names[n].rec.token.unwrap_or(0);
            let claim = rng.chance(25);
            Op::Renew {
                n,
                who: holder,
                ttl,
                repair: (!claim && rng.chance(15)).then(|| {
                    (
                        rng.pick(&[0, t.saturating_sub(1), t + 1, EPOCH_MS * 1000]),
                        value,
                    )
                }),
                expect: claim.then(|| rng.pick(&[t, t, t.saturating_sub(1), t + 1])),
                confirm,
            }
        }
        60..=73 => Op::Release {
            n,
            who: holder,
            always: rng.chance(20),
        },
        74..=78 => Op::Leave { n, who: any },
        79..=81 => Op::Confirm {
            n,
            who: holder,
            token: {
                let t = model.names[n].rec.token.unwrap_or(0);
                rng.pick(&[t, t + 1, t.saturating_sub(1)])
            },
        },
        82..=84 => Op::Status {
            n: rng.pick(&[0, 1]),
        },
        85..=86 => Op::Observe {
            n,
            ms: rng.pick(&[1, 500, 30_000]),
        },
        87..=88 => Op::Proclaim {
            n,
            who: holder,
            value,
        },
        89..=116 => {
            let margin = leasehold::backend::queue_margin(std::time::Duration::from_millis(ttl))
                .as_millis() as Ms;
            Op::SemAcquire {
                n: sem_n,
                who: any,
                ttl,
                value,
                limit,
                confirm,
                wait: rng.chance(80),
                margin: if rng.chance(80) {
                    margin
                } else {
                    rng.pick(&[0, 1, 250])
                },
                inbox: inbox_of(any),
            }
        }
        117..=127 => {
            // A claim with the slot's token (right), or another (wrong).
            let t = hash_token(model, sem_n, slot_holder);
            let claim = rng.chance(35);
            Op::SemRenew {
                n: sem_n,
                who: slot_holder,
                ttl,
                confirm,
                expect: claim.then(|| rng.pick(&[t, t, t.saturating_sub(1), t + 1])),
            }
        }
        128..=136 => Op::SemRelease {
            n: sem_n,
            who: slot_holder,
            limit,
        },
        137..=140 => Op::SemLeave {
            n: sem_n,
            who: sem_leaver,
            limit,
        },
        141 => Op::SemStatus { n: sem_n },
        142..=143 => Op::Replicas(rng.pick(&[0, 1, 2])),
        144..=189 => {
            // Mostly around the interesting instants: the claim window and
            // margins (100 ms), TTLs, whole seconds (uptime), and exact
            // boundaries (0 and 1 ms).
            let ms = rng.pick(&[
                0, 0, 1, 2, 50, 99, 100, 101, 150, 500, 999, 1000, 1001, 2500, 10_000, 30_000,
            ]);
            Op::Advance(ms * 1000 + rng.pick(&[0, 0, 1, 499, 999]))
        }
        190..=192 => Op::Snapshot,
        193..=194 => Op::Restart,
        195 => Op::RestartFromSnapshot,
        196 => Op::Failover,
        197 => Op::FlushAll,
        198 => Op::DelMarker,
        _ => Op::ScriptFlush,
    }
}

/// The token of `who`'s slot of name `n` (0: none).
fn hash_token(model: &Store, n: usize, who: Hid) -> u64 {
    model.names[n]
        .slotinfo
        .iter()
        .find(|(h, _)| *h == who)
        .map_or(0, |(_, (t, _))| *t)
}

/// The model's server: its keys and what the scripts see of it.
#[derive(Clone)]
struct ModelServer {
    store: Store,
    snapshot: Option<Store>,
    now_us: u64,
    run: u16,
    start_ms: Ms,
    promoted: bool,
    flushed: bool,
    replicas: u32,
}

impl ModelServer {
    fn env(&self) -> Env {
        Env {
            now_us: self.now_us,
            run: Run(self.run),
            uptime_s: redis_uptime(self.start_ms, self.now_us / 1000),
            promoted: self.promoted,
            flushed: self.flushed,
            replicas: self.replicas,
            mutants: ScriptMutants::default(),
        }
    }
}

struct Harness {
    server: RedisServer,
    conn: Conn,
    sub: Conn,
    shas: HashMap<&'static str, String>,
    m: ModelServer,
    dbfile: String,
    /// What happened so far, for the failure message.
    log: Vec<String>,
}

fn sha1_hex(c: &mut Conn, text: &str) -> String {
    // SCRIPT LOAD returns the SHA1 that EVALSHA expects.
    c.call(&[b"SCRIPT", b"LOAD", text.as_bytes()]).text()
}

impl Harness {
    fn new() -> Harness {
        let server = RedisServer::start();
        let conn = Conn::open(server.port);
        let sub = Conn::open(server.port);
        let mut h = Harness {
            server,
            conn,
            sub,
            shas: HashMap::new(),
            m: ModelServer {
                store: Store::new(NAMES),
                snapshot: None,
                now_us: EPOCH_MS * 1000,
                run: 1,
                start_ms: EPOCH_MS - 3_600_000,
                promoted: false,
                flushed: false,
                replicas: 0,
            },
            dbfile: "dump.rdb".into(),
            log: vec![],
        };
        for (name, _) in FILES {
            let text = format!("{SHIM}\n{}", exact_text(name));
            let sha = sha1_hex(&mut h.conn, &text);
            h.shas.insert(name, sha);
        }
        h.subscribe();
        h
    }

    fn subscribe(&mut self) {
        let inboxes = (0..2).map(|i| Inbox(i).channel());
        for ch in (0..NAMES).map(|n| key(n, "events")).chain(inboxes) {
            let r = self.sub.cmd(&["SUBSCRIBE", &ch]);
            assert_eq!(r.items()[0].text(), "subscribe");
        }
    }

    fn reconnect(&mut self) {
        self.conn = Conn::open(self.server.port);
        self.sub = Conn::open(self.server.port);
        self.subscribe();
    }

    /// Messages published since the last call, in order, as "<channel>
    /// <payload>" (a PING on the subscriber connection is answered after
    /// everything published before).
    fn published(&mut self) -> Vec<String> {
        self.sub.send(&[b"PING"]);
        let mut out = vec![];
        loop {
            let m = self.sub.read().items();
            match m[0].text().as_str() {
                "message" => out.push(format!("{} {}", m[1].text(), m[2].text())),
                "pong" => return out,
                other => panic!("unexpected pub/sub reply {other}"),
            }
        }
    }

    /// Sets the virtual clock and expires keys the way Redis would.
    fn prepare(&mut self) {
        let e = self.m.env();
        let us = e.now_us.to_string();
        let up = e.uptime_s.to_string();
        let run = e.run.hex();
        let r = self.conn.cmd(&[
            "HSET",
            "__model:clock",
            "us",
            &us,
            "run",
            &run,
            "uptime",
            &up,
            "promoted",
            if e.promoted { "1" } else { "0" },
            "flushed",
            if e.flushed { "1" } else { "0" },
            "replicas",
            &e.replicas.to_string(),
        ]);
        assert!(matches!(r, Resp::Int(_)), "HSET clock: {r:?}");
        let now = e.now();
        for n in 0..NAMES {
            for part in ["queue", "qinfo", "slots", "slotinfo"] {
                let k = key(n, part);
                let at = self.conn.cmd(&["PEXPIRETIME", &k]).int();
                if at >= 0 && now > at as u64 {
                    self.conn.cmd(&["DEL", &k]);
                }
            }
        }
    }

    /// EVALSHA, loading the script on NOSCRIPT (as `Node::exec` does).
    fn eval(&mut self, script: &'static str, keys: &[String], args: &[String]) -> Reply {
        self.prepare();
        let sha = self.shas[script].clone();
        let nk = keys.len().to_string();
        let mut a: Vec<&[u8]> = vec![b"EVALSHA", sha.as_bytes(), nk.as_bytes()];
        a.extend(keys.iter().map(|k| k.as_bytes()));
        a.extend(args.iter().map(|k| k.as_bytes()));
        let r = self.conn.call(&a);
        let r = match r {
            Resp::Err(e) if e.starts_with("NOSCRIPT") => {
                let text = format!("{SHIM}\n{}", exact_text(script));
                assert_eq!(sha1_hex(&mut self.conn, &text), sha);
                self.conn.call(&a)
            }
            r => r,
        };
        r.reply()
    }

    fn apply(&mut self, op: &Op) -> (Reply, Vec<Pub>) {
        let env = self.m.env();
        let st = &mut self.m.store;
        let none = (Reply::Int(0), vec![]);
        match *op {
            Op::Acquire {
                n,
                who,
                ttl,
                value,
                wait,
                confirm,
                inbox,
            } => {
                let margin = leasehold::backend::queue_margin(std::time::Duration::from_millis(ttl))
                    .as_millis() as Ms;
                let (r, ev) = st.acquire(&env, n, who, ttl, value, wait, margin, confirm, inbox);
                (r.reply(), ev)
            }
            Op::Renew {
                n,
                who,
                ttl,
                repair,
                expect,
                confirm,
            } => (
                st.renew(&env, n, who, ttl, repair, expect, confirm).reply(),
                vec![],
            ),
            Op::Release { n, who, always } => {
                let (ok, ev) = st.release(&env, n, who, always);
                (Reply::Int(ok as i64), ev)
            }
            Op::Leave { n, who } => {
                let (c, ev) = st.leave(&env, n, who);
                (Reply::Int(c), ev)
            }
            Op::Confirm { n, who, token } => {
                (Reply::Int(st.confirm(&env, n, who, token) as i64), vec![])
            }
            Op::Status { n } => (st.status(&env, n), vec![]),
            Op::Observe { n, ms } => {
                st.observe(&env, n, ms);
                (Reply::Int(1), vec![])
            }
            Op::Proclaim { n, who, value } => {
                let (ok, ev) = st.proclaim(&env, n, who, value);
                (Reply::Int(ok as i64), ev)
            }
            Op::SemAcquire {
                n,
                who,
                ttl,
                value,
                limit,
                confirm,
                wait,
                margin,
                inbox,
            } => {
                let (r, ev) = st.sem_acquire(
                    &env, n, who, ttl, value, limit, confirm, wait, margin, inbox,
                );
                (r.reply(), ev)
            }
            Op::SemRenew {
                n,
                who,
                ttl,
                confirm,
                expect,
            } => (
                st.sem_renew(&env, n, who, ttl, confirm, expect).reply(),
                vec![],
            ),
            Op::SemRelease { n, who, limit } => {
                let (ok, ev) = st.sem_release(&env, n, who, limit);
                (Reply::Int(ok as i64), ev)
            }
            Op::SemLeave { n, who, limit } => {
                let (c, ev) = st.sem_leave(&env, n, who, limit);
                (Reply::Int(c), ev)
            }
            Op::SemStatus { n } => (st.sem_status(&env, n), vec![]),
            Op::Advance(us) => {
                self.m.now_us += us;
                none
            }
            Op::Replicas(r) => {
                self.m.replicas = r;
                none
            }
            Op::Restart => {
                self.m.store = Store::new(NAMES);
                self.new_server(false);
                none
            }
            Op::Snapshot => {
                self.m.snapshot = Some(self.m.store.clone());
                none
            }
            Op::RestartFromSnapshot | Op::Failover => {
                self.m.store = self.m.snapshot.clone().unwrap_or_else(|| Store::new(NAMES));
                self.new_server(matches!(op, Op::Failover));
                none
            }
            Op::FlushAll => {
                self.m.store = Store::new(NAMES);
                self.m.flushed = true;
                none
            }
            Op::DelMarker => {
                self.m.store.marker = None;
                none
            }
            Op::ScriptFlush => none,
        }
    }

    fn new_server(&mut self, promoted: bool) {
        self.m.run += 1;
        self.m.promoted = promoted;
        self.m.flushed = false;
        // A promoted replica has been up for a long time; a restarted server
        // just started.
        self.m.start_ms = if promoted {
            self.m.now_us / 1000 - 7_200_000
        } else {
            self.m.now_us / 1000
        };
    }

    fn run_real(&mut self, op: &Op) -> (Reply, Vec<String>) {
        let s = |x: &dyn ToString| x.to_string();
        let none = Reply::Int(0);
        let reply = match *op {
            Op::Acquire {
                n,
                who,
                ttl,
                value,
                wait,
                confirm,
                inbox,
            } => {
                let margin =
                    leasehold::backend::queue_margin(std::time::Duration::from_millis(ttl))
                        .as_millis();
                self.eval(
                    "acquire",
                    &[
                        key(n, "lease"),
                        key(n, "queue"),
                        key(n, "qinfo"),
                        MARKER.into(),
                        key(n, "slots"),
                    ],
                    &[
                        who.text(),
                        s(&ttl),
                        value.text().into(),
                        key(n, "events"),
                        (if wait { "wait" } else { "try" }).into(),
                        s(&margin),
                        confirm_arg(confirm),
                        inbox.map(Inbox::channel).unwrap_or_default(),
                    ],
                )
            }
            Op::Renew {
                n,
                who,
                ttl,
                repair,
                expect,
                confirm,
            } => {
                // As node.rs `renew_call` and `claim` send them: repair
                // token and value (or ""), the claim's token (or ""), the
                // WAIT's replica count.
                let (rt, rv) = match repair {
                    Some((t, v)) => (s(&t), v.text().to_string()),
                    None => (String::new(), String::new()),
                };
                let ex = expect.map(|t| s(&t)).unwrap_or_default();
                let args = vec![who.text(), s(&ttl), rt, rv, ex, confirm_arg(confirm)];
                self.eval("renew", &[key(n, "lease"), MARKER.into()], &args)
            }
            Op::Release { n, who, always } => self.eval(
                "release",
                &[
                    key(n, "lease"),
                    key(n, "queue"),
                    key(n, "qinfo"),
                    MARKER.into(),
                ],
                &[
                    who.text(),
                    key(n, "events"),
                    (if always { "always" } else { "" }).into(),
                ],
            ),
            Op::Leave { n, who } => self.eval(
                "leave",
                &[key(n, "lease"), key(n, "queue"), key(n, "qinfo")],
                &[who.text(), key(n, "events")],
            ),
            Op::Confirm { n, who, token } => {
                self.eval("confirm", &[key(n, "lease")], &[who.text(), s(&token)])
            }
            Op::Status { n } => self.eval("status", &[key(n, "lease"), MARKER.into()], &[]),
            Op::Observe { n, ms } => self.eval("observe", &[key(n, "lease")], &[s(&ms)]),
            Op::Proclaim { n, who, value } => self.eval(
                "proclaim",
                &[key(n, "lease")],
                &[who.text(), value.text().into(), key(n, "events")],
            ),
            Op::SemAcquire {
                n,
                who,
                ttl,
                value,
                limit,
                confirm,
                wait,
                margin,
                inbox,
            } => self.eval(
                "sem_acquire",
                &[
                    key(n, "slots"),
                    key(n, "slotinfo"),
                    key(n, "lease"),
                    MARKER.into(),
                    key(n, "queue"),
                    key(n, "qinfo"),
                ],
                &[
                    who.text(),
                    s(&ttl),
                    value.text().into(),
                    s(&limit),
                    key(n, "events"),
                    confirm_arg(confirm),
                    (if wait { "wait" } else { "try" }).into(),
                    s(&margin),
                    inbox.map(Inbox::channel).unwrap_or_default(),
                ],
            ),
            Op::SemRenew {
                n,
                who,
                ttl,
                confirm,
                expect,
            } => {
                // As node.rs `renew_call` (three arguments) and `claim`
                // (the grant's token fourth) send them.
                let mut args = vec![who.text(), s(&ttl), confirm_arg(confirm)];
                if let Some(t) = expect {
                    args.push(s(&t));
                }
                self.eval(
                    "sem_renew",
                    &[
                        key(n, "slots"),
                        key(n, "slotinfo"),
                        key(n, "lease"),
                        MARKER.into(),
                    ],
                    &args,
                )
            }
            Op::SemRelease { n, who, limit } => self.eval(
                "sem_release",
                &[
                    key(n, "slots"),
                    key(n, "slotinfo"),
                    key(n, "lease"),
                    MARKER.into(),
                    key(n, "queue"),
                    key(n, "qinfo"),
                ],
                &[who.text(), key(n, "events"), s(&limit)],
            ),
            Op::SemLeave { n, who, limit } => self.eval(
                "sem_leave",
                &[
                    key(n, "slots"),
                    key(n, "slotinfo"),
                    key(n, "lease"),
                    key(n, "queue"),
                    key(n, "qinfo"),
                ],
                &[who.text(), key(n, "events"), s(&limit)],
            ),
            Op::SemStatus { n } => {
                self.eval("sem_status", &[key(n, "slots"), key(n, "slotinfo")], &[])
            }
            Op::Advance(_)
            | Op::Replicas(_)
            | Op::DelMarker
            | Op::FlushAll
            | Op::ScriptFlush
            | Op::Snapshot => {
                match op {
                    Op::DelMarker => {
                        self.conn.cmd(&["DEL", MARKER]);
                    }
                    Op::FlushAll => {
                        self.conn.cmd(&["FLUSHALL"]);
                    }
                    Op::ScriptFlush => {
                        self.conn.cmd(&["SCRIPT", "FLUSH"]);
                    }
                    Op::Snapshot => {
                        let r = self.conn.cmd(&["SAVE"]);
                        assert_eq!(r.text(), "OK", "SAVE");
                        let dir = self.server.dir().to_path_buf();
                        std::fs::copy(dir.join(&self.dbfile), dir.join("snapshot.rdb"))
                            .expect("copy the snapshot");
                    }
                    _ => {}
                }
                none
            }
            Op::Restart | Op::RestartFromSnapshot | Op::Failover => {
                let dir = self.server.dir().to_path_buf();
                if matches!(op, Op::Restart) {
                    // Nothing to load: start empty.
                    let _ = std::fs::remove_file(dir.join("load.rdb"));
                } else if dir.join("snapshot.rdb").exists() {
                    std::fs::copy(dir.join("snapshot.rdb"), dir.join("load.rdb"))
                        .expect("copy the snapshot to load");
                } else {
                    let _ = std::fs::remove_file(dir.join("load.rdb"));
                }
                self.server.restart_with(&["--dbfilename", "load.rdb"]);
                self.dbfile = "load.rdb".into();
                self.reconnect();
                none
            }
        };
        let events = self.published();
        (reply, events)
    }

    /// Every key of the names and the marker, as text, from the real server.
    fn real_keys(&mut self) -> String {
        let mut out = String::new();
        let m = self.conn.cmd(&["GET", MARKER]);
        let _ = writeln!(out, "marker {}", m.text());
        for n in 0..NAMES {
            let rec = self.conn.cmd(&["HGETALL", &key(n, "lease")]).items();
            let mut fields: Vec<(String, String)> =
                rec.chunks(2).map(|p| (p[0].text(), p[1].text())).collect();
            fields.sort();
            let _ = writeln!(out, "n{n} lease {fields:?}");
            for (part, zset) in [
                ("queue", true),
                ("qinfo", false),
                ("slots", true),
                ("slotinfo", false),
            ] {
                let k = key(n, part);
                let items = if zset {
                    self.conn
                        .cmd(&["ZRANGE", &k, "0", "-1", "WITHSCORES"])
                        .items()
                } else {
                    self.conn.cmd(&["HGETALL", &k]).items()
                };
                let mut pairs: Vec<(String, String)> = items
                    .chunks(2)
                    .map(|p| (p[0].text(), p[1].text()))
                    .collect();
                if !zset {
                    pairs.sort();
                }
                let at = self.conn.cmd(&["PEXPIRETIME", &k]).int();
                let _ = writeln!(out, "n{n} {part} {pairs:?} at {at}");
            }
        }
        out
    }
}

/// The same text from the model's keys.
pub fn model_keys(st: &Store) -> String {
    let mut out = String::new();
    let m = match st.marker {
        Some(m) => format!("{} {} {}", m.run.hex(), m.base, m.max),
        None => "Bulk(None)".into(),
    };
    let _ = writeln!(out, "marker {m}");
    for (n, name) in st.names.iter().enumerate() {
        let r = &name.rec;
        let mut fields: Vec<(String, String)> = vec![];
        let mut f = |k: &str, v: Option<String>| {
            if let Some(v) = v {
                fields.push((k.into(), v));
            }
        };
        f("kind", r.kind.map(|k| k.text().into()));
        f("holder", r.holder.map(Who::text));
        f("value", r.value.map(|v| v.text().into()));
        f("exp", r.exp.map(|x| x.to_string()));
        f("ttl", r.ttl.map(|x| x.to_string()));
        f("token", r.token.map(|x| x.to_string()));
        f("run", r.run.map(Run::hex));
        f("maxttl", r.maxttl.map(|x| x.to_string()));
        f("qu", r.qu.map(|x| x.to_string()));
        f("obs", r.obs.map(|x| x.to_string()));
        f("w", r.w.map(|x| if x { "1" } else { "0" }.into()));
        fields.sort();
        let _ = writeln!(out, "n{n} lease {fields:?}");
        // One collection key: its entries, and its expiry (-2 missing, -1 none).
        let mut key = |label: &str, entries: Vec<(String, String)>, at: Option<Ms>| {
            let at = match (entries.is_empty(), at) {
                (true, _) => -2,
                (false, None) => -1,
                (false, Some(t)) => t as i64,
            };
            let _ = writeln!(out, "n{n} {label} {entries:?} at {at}");
        };
        key(
            "queue",
            name.queue
                .iter()
                .map(|(h, s)| (h.text(), s.to_string()))
                .collect(),
            name.queue_at,
        );
        key(
            "qinfo",
            name.qinfo
                .iter()
                .map(|(h, i)| (h.text(), i.text()))
                .collect(),
            name.qinfo_at,
        );
        key(
            "slots",
            name.slots
                .iter()
                .map(|(h, e)| (h.text(), e.to_string()))
                .collect(),
            name.slots_at,
        );
        key(
            "slotinfo",
            name.slotinfo
                .iter()
                .map(|(h, (t, v))| (h.text(), format!("{t} {}", v.text())))
                .collect(),
            name.slotinfo_at,
        );
    }
    out
}

fn describe(op: &Op, now_us: u64) -> String {
    format!(
        "t={}.{:03} {op:?}",
        (now_us / 1000) - EPOCH_MS,
        now_us % 1000
    )
}

fn mismatch(log: &[String], seed: u64, step: usize, what: &str, real: &str, model: &str) -> ! {
    panic!(
        "conformance: {what} differ at step {step} (seed {seed}; rerun with LEASEHOLD_MODEL_SEED={seed})\n  real:  {real}\n  model: {model}\nlast steps:\n{}",
        log[log.len().saturating_sub(40)..].join("\n")
    )
}

/// Runs `steps` random operations from `seed` on both sides, comparing as it
/// goes. Returns how many operations of each kind ran.
pub fn run(seed: u64, steps: usize) -> HashMap<&'static str, usize> {
    let mut h = Harness::new();
    let mut rng = Rng::new(seed);
    let mut seen: HashMap<&'static str, usize> = HashMap::new();
    for step in 0..steps {
        let op = gen_op(&mut rng, &h.m.store);
        h.log.push(describe(&op, h.m.now_us));
        let (real, real_events) = h.run_real(&op);
        let (model, model_events) = h.apply(&op);
        let model_events: Vec<String> = model_events
            .iter()
            .map(|p| {
                let ch = match p.to {
                    Chan::Name => key(op_name(&op), "events"),
                    Chan::Inbox(i) => i.channel(),
                };
                format!("{ch} {}", p.event.text())
            })
            .collect();
        let real_cmp = match (&real, &model) {
            // Redis may add detail after the message of an error reply.
            (Reply::Err(r), Reply::Err(m)) if r.starts_with(m.as_str()) => model.clone(),
            _ => real.clone(),
        };
        if real_cmp != model {
            mismatch(
                &h.log,
                seed,
                step,
                "replies",
                &real.to_string(),
                &model.to_string(),
            );
        }
        if real_events != model_events {
            mismatch(
                &h.log,
                seed,
                step,
                "published messages",
                &format!("{real_events:?}"),
                &format!("{model_events:?}"),
            );
        }
        let rk = h.real_keys();
        let mk = model_keys(&h.m.store);
        if rk != mk {
            mismatch(&h.log, seed, step, "keys", &rk, &mk);
        }
        h.log.push(format!("    -> {model}  {model_events:?}"));
        *seen.entry(op_kind(&op, &model)).or_default() += 1;
        let sem = matches!(
            op,
            Op::SemAcquire { .. } | Op::SemRelease { .. } | Op::SemLeave { .. }
        );
        for e in &model_events {
            let label = match (sem, e.split(' ').nth(1)) {
                (false, Some("granted")) => "published: granted",
                (false, Some("released")) => "published: released",
                (false, Some("acquired")) => "published: acquired",
                (true, Some("granted")) => "published (semaphore): granted",
                (true, Some("released")) => "published (semaphore): released",
                (true, Some("acquired")) => "published (semaphore): acquired",
                _ => "published: other",
            };
            *seen.entry(label).or_default() += 1;
        }
    }
    seen
}

/// A label for the coverage report: the operation and the reply's status.
fn op_kind(op: &Op, reply: &Reply) -> &'static str {
    let status = match reply {
        Reply::Arr(a) => match a.first() {
            Some(Reply::Int(i)) => *i,
            _ => -9,
        },
        Reply::Int(i) => *i,
        _ => -1,
    };
    match (op, status) {
        (Op::Acquire { .. }, 1) => "acquire: acquired",
        (Op::Acquire { .. }, 0) => "acquire: held",
        (Op::Acquire { .. }, 2) => "acquire: quarantine",
        (Op::Acquire { .. }, 3) => "acquire: queued",
        (Op::Acquire { .. }, _) => "acquire: error",
        (Op::Renew { .. }, _) if *reply == Renewed::Lapsed.reply() => "renew: claim, grant lapsed",
        (
            Op::Renew {
                expect: Some(_), ..
            },
            1,
        ) => "renew: claim, renewed",
        (Op::Renew { .. }, 1) => "renew: renewed",
        (Op::Renew { .. }, _) => "renew: refused",
        (Op::Release { .. }, 1) => "release: released",
        (Op::Release { .. }, _) => "release: not ours",
        (Op::Leave { .. }, 1) => "leave: left",
        (Op::Leave { .. }, _) => "leave: not queued",
        (Op::Confirm { .. }, _) => "confirm",
        (Op::Status { .. }, _) => "status",
        (Op::Observe { .. }, _) => "observe",
        (Op::Proclaim { .. }, _) => "proclaim",
        (Op::SemAcquire { .. }, 1) => "sem_acquire: acquired",
        (Op::SemAcquire { .. }, 0) => "sem_acquire: full",
        (Op::SemAcquire { .. }, 2) => "sem_acquire: quarantine",
        (Op::SemAcquire { .. }, 3) => "sem_acquire: queued",
        (Op::SemAcquire { .. }, _) => "sem_acquire: error",
        (Op::SemRenew { .. }, _) if *reply == Renewed::SlotLapsed.reply() => {
            "sem_renew: claim, grant lapsed"
        }
        (
            Op::SemRenew {
                expect: Some(_), ..
            },
            1,
        ) => "sem_renew: claim, renewed",
        (Op::SemRenew { .. }, 1) => "sem_renew: renewed",
        (Op::SemRenew { .. }, _) => "sem_renew: refused",
        (Op::SemRelease { .. }, 1) => "sem_release: released",
        (Op::SemRelease { .. }, _) => "sem_release: not ours",
        (Op::SemLeave { .. }, 1) => "sem_leave: left",
        (Op::SemLeave { .. }, _) => "sem_leave: not queued",
        (Op::SemStatus { .. }, _) => "sem_status",
        (Op::Advance(_), _) => "advance clock",
        (Op::Replicas(_), _) => "replicas change",
        (Op::Restart, _) => "restart empty",
        (Op::Snapshot, _) => "snapshot",
        (Op::RestartFromSnapshot, _) => "restart from snapshot",
        (Op::Failover, _) => "failover to stale replica",
        (Op::FlushAll, _) => "FLUSHALL",
        (Op::ScriptFlush, _) => "SCRIPT FLUSH",
        (Op::DelMarker, _) => "DEL marker",
    }
}

/// ARGV[7] of acquire.lua, ARGV[6] of sem_acquire.lua as `node.rs` sends
/// it (`confirm_flag`: the number of replicas, 0 without `--min-replicas`).
fn confirm_arg(n: u32) -> String {
    n.to_string()
}

/// The name an operation works on (whose events channel it publishes to).
fn op_name(op: &Op) -> usize {
    match *op {
        Op::Acquire { n, .. }
        | Op::Renew { n, .. }
        | Op::Release { n, .. }
        | Op::Leave { n, .. }
        | Op::Confirm { n, .. }
        | Op::Status { n }
        | Op::Observe { n, .. }
        | Op::Proclaim { n, .. }
        | Op::SemAcquire { n, .. }
        | Op::SemRenew { n, .. }
        | Op::SemRelease { n, .. }
        | Op::SemLeave { n, .. }
        | Op::SemStatus { n } => n,
        _ => 0,
    }
}

/// Redis 7.0+ (`PEXPIRETIME`) is needed to read keys' expiry exactly.
pub fn require_redis_7() {
    let r = RedisServer::start();
    let mut c = Conn::open(r.port);
    let info = c.cmd(&["INFO", "server"]).text();
    let major: u32 = info
        .lines()
        .find_map(|l| l.strip_prefix("redis_version:"))
        .and_then(|v| v.split('.').next())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    assert!(
        major >= 7,
        "the conformance test needs redis-server 7.0 or later (PEXPIRETIME); this one is {major}"
    );
}
