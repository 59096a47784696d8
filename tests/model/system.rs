//! The protocol as a state machine for the checker: a few clients, one Redis
//! (or a quorum of three), a network, a fenced resource, and faults.
//!
//! Time is discrete (ms of Redis's clock, which is also "real" time) and
//! event driven: the checker moves the clock to the next instant at which
//! something is due — a client's timer, the end of a message's delay window,
//! the end of a pause — and in between explores every order of the actions
//! enabled at that instant. Timers fire on time (a client that is not paused
//! cannot skip one); a message is delivered at any instant within its delay
//! window, or lost (a fault).
//!
//! Clients follow the code, step for step:
//! - `waiter.rs`: the fast path (one attempt, reply ignored unless acquired),
//!   then subscribe (the name's channel and the client's inbox) and attempt
//!   in a loop (a client still subscribed from its last acquisition skips
//!   the fast path: its first attempt is the loop's); after a failed attempt sleep until the reply's wait counted
//!   from the attempt's send instant (plus 1 ms and jitter when not first),
//!   woken early by a release naming us, a grant in our inbox (`take_grant`:
//!   used as it is only when its token is larger than the one our latest
//!   "held" attempt saw and enough of the claim window is left, counted from
//!   that attempt's send instant; otherwise claimed with a renewal that
//!   checks the grant's token), or the note that we are next after a grant
//!   (come when it lapses). The `select!` picks any ready branch; tokio's
//!   `Notify` keeps one permit. A semaphore waiter does the same with
//!   sem_acquire.lua ("wait", its inbox): all slots taken counts as "held"
//!   (the Full reply's last token stands for the holder's token, its
//!   `first` decides the timing), free slots with waiters ahead as
//!   "queued"; a grant of a freed slot is claimed with sem_renew.lua and the
//!   grant's token, and a waiter that gives up leaves with sem_leave.lua.
//! - `renewal.rs`: deadline `sent + ttl − drift` (from the send instant),
//!   renewal every `renew_every` (`ttl/3`), retries every `retry_every`
//!   (ttl/20, at most 500 ms), lost at the deadline even with a renewal in
//!   flight; a refusal loses the lease at once; after a reconnect every
//!   lease without a renewal in flight is renewed at once (`RenewAll`).
//! - `lease/mod.rs`: `Released` is said (the work stops) before the release
//!   is sent; release waits for a renewal in flight.
//! - the supervisor: the work (the child) is inside its lease from the
//!   acquisition until the safety deadline; after a refusal it is stopped
//!   within the stop budget (and by the deadline); on release it stops first.
//! - `quorum.rs`: every server asked at once with a per-server timeout; a
//!   majority within the validity time, then confirm.lua on the majority;
//!   otherwise what was taken is given back (release, `released` always).
//!
//! The server steps are the scripts (`redis.rs`). A client's clock runs at a
//! constant rate that differs from Redis's by at most the drift the design
//! allows (`ttl/100 + 2 ms` per TTL): `Rate::Slow` is that extreme.

use std::fmt::Write as _;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use leasehold::LeaseConfig;
use stateright::{Model, Property};

use super::redis::*;

/// The model's time origin (Redis ms): the start of a second.
pub const T0: Ms = 10_000_000;
/// notify.rs `LINGER`: how long a channel nobody waits on stays subscribed.
const LINGER: Ms = 2000;

// ---------------------------------------------------------------------------
// The client side's arithmetic, from the crate itself.
// ---------------------------------------------------------------------------

static ORIGIN: LazyLock<Instant> = LazyLock::new(Instant::now);

fn d(ms: Ms) -> Duration {
    Duration::from_millis(ms)
}

/// `deadline::safety_deadline(sent, ttl) − sent`, in local ms: `ttl − drift`.
fn validity(ttl: Ms) -> Ms {
    let o = *ORIGIN;
    (leasehold::deadline::safety_deadline(o, d(ttl)) - o).as_millis() as Ms
}

/// `deadline::drift(ttl)`.
fn drift(ttl: Ms) -> Ms {
    leasehold::deadline::drift(d(ttl)).as_millis() as Ms
}

// ---------------------------------------------------------------------------
// Configuration.
// ---------------------------------------------------------------------------

/// A client clock's rate against Redis's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Rate {
    /// As slow as the drift margin allows: `ttl − drift` local ms take `ttl`
    /// real ms (the deadline lands exactly on Redis's expiry when the request
    /// is processed the instant it is sent).
    Slow,
    Exact,
    /// As fast, the other way.
    Fast,
}

#[derive(Clone, Debug)]
pub struct ClientCfg {
    pub ttl: Ms,
    pub rate: Rate,
    /// How many times it acquires (then it stays idle).
    pub acquisitions: u8,
    /// `LeaseBuilder::min_validity`: `run` passes its stop budget.
    pub min_validity: Ms,
    /// After a refusal the work is stopped within this (grace + kill margin).
    pub stop_budget: Ms,
    /// The waiter's jitter (0–3 ms in the code; fixed per client here).
    pub jitter: Ms,
}

impl ClientCfg {
    /// A library user (no stop budget) with TTL `ttl`.
    pub fn new(ttl: Ms) -> ClientCfg {
        ClientCfg {
            ttl,
            rate: Rate::Exact,
            acquisitions: 1,
            min_validity: 0,
            stop_budget: 0,
            jitter: 0,
        }
    }

    /// A `leasehold run` supervisor: default grace (TTL/5) + kill margin.
    pub fn supervisor(ttl: Ms) -> ClientCfg {
        let budget = ttl / 5 + leasehold::supervisor::KILL_MARGIN.as_millis() as Ms;
        ClientCfg {
            min_validity: budget,
            stop_budget: budget,
            ..ClientCfg::new(ttl)
        }
    }

    pub fn rate(mut self, r: Rate) -> Self {
        self.rate = r;
        self
    }
    pub fn acquisitions(mut self, n: u8) -> Self {
        self.acquisitions = n;
        self
    }
    pub fn jitter(mut self, j: Ms) -> Self {
        self.jitter = j;
        self
    }

    fn config(&self) -> LeaseConfig {
        LeaseConfig::new(d(self.ttl)).expect("a valid TTL")
    }
    fn renew_every(&self) -> Ms {
        self.config().renew_every().as_millis() as Ms
    }
    fn retry_every(&self) -> Ms {
        self.config().retry_every().as_millis() as Ms
    }
    fn margin(&self) -> Ms {
        leasehold::backend::queue_margin(d(self.ttl)).as_millis() as Ms
    }

    /// Real ms that `local` ms of this client's clock take.
    pub fn real(&self, local: Ms) -> Ms {
        let t = self.ttl;
        let dr = drift(t);
        match self.rate {
            Rate::Exact => local,
            Rate::Slow => (local * t).div_ceil(t - dr),
            Rate::Fast => local * (t - dr) / t,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// A lease on one Redis.
    Lease,
    /// A semaphore of `limit` slots on one Redis.
    Sem { limit: u32 },
    /// A lease on three independent servers (`quorum.rs`).
    Quorum,
}

/// How Redis reports `uptime_in_seconds`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Uptime {
    /// As Redis 7 does: whole seconds now minus whole seconds at start.
    Redis,
    /// Whole seconds elapsed since the start (what the design assumed
    /// before 863754e; for experiments with `probe`).
    #[allow(dead_code)]
    Elapsed,
}

#[derive(Clone, Copy, Debug, Default)]
pub struct Faults {
    /// How many faults one run may contain.
    pub budget: u8,
    pub crash: bool,
    /// A client may freeze for this long (0: never).
    pub pause: Ms,
    pub lose: bool,
    pub restart_empty: bool,
    /// Restart from an older copy (an RDB snapshot or a lagging AOF).
    pub restart_older: bool,
    /// Fail over to a replica (an older copy), which reports itself promoted.
    pub failover: bool,
    /// Only these servers fail (a bit per server).
    pub faulty_nodes: u8,
    /// How many times the older copy (snapshot / replica) may catch up with
    /// the data (not a fault).
    pub syncs: u8,
}

/// Client-side mutants (the script-side ones are in `ScriptMutants`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Mutants {
    pub script: ScriptMutants,
    /// The safety deadline counts from the reply instead of the send instant.
    pub deadline_from_reply: bool,
    /// `take_grant` uses a grant unclaimed whatever its token (the code
    /// before 2fc5732: known issue 1).
    pub grant_without_token_check: bool,
    /// One holder id for every acquisition of a client (a process-wide id,
    /// as many lock libraries use).
    pub reuse_holder_id: bool,
}

#[derive(Clone, Debug)]
pub struct Sys {
    pub label: &'static str,
    pub mode: Mode,
    pub clients: Vec<ClientCfg>,
    /// One-way delay of commands and replies: [min, max] ms.
    pub delay: (Ms, Ms),
    /// Largest delay of a published message.
    pub pubsub_delay: Ms,
    /// A client notices a restarted server (reconnects, renews everything)
    /// within this window after the restart.
    pub reconnect: (Ms, Ms),
    pub op_timeout: Ms,
    pub faults: Faults,
    /// `--min-replicas 1`: `WAIT` after every acquire and renewal.
    pub min_replicas: bool,
    /// How many `WAIT`s of one run may time out (a bound, as `late`).
    pub wait_timeouts: u8,
    pub uptime: Uptime,
    pub mutants: Mutants,
    /// Explore up to this long after T0.
    pub horizon: Ms,
    /// Liveness: a free lease with a live waiter is held within this long
    /// of the last fault.
    pub liveness_bound: Ms,
    /// Servers: 1, or 3 for `Mode::Quorum`.
    pub nodes: usize,
    /// How many writes each tenure may make to the fenced resource.
    pub writes: u8,
    /// A message is delivered at either end of its delay window (false),
    /// or at any instant within it (true: many more interleavings).
    pub any_delay: bool,
    /// How many messages of one run may take longer than the shortest delay
    /// (delay-bounded exploration; `u8::MAX`: all of them).
    pub late: u8,
    /// Clients start acquiring at any instant up to this long after T0
    /// (and again at once after each tenure, as `run --forever` does).
    pub start_window: Ms,
    /// A holder releases at any instant (true), or only as it acquires and
    /// at its renewal instants (before or after the renewal goes out).
    pub release_anytime: bool,
    /// A sleeping waiter may give up (its `acquire()` future is dropped, or
    /// `acquire_timeout` runs out): it leaves the queue (leave.lua,
    /// sem_leave.lua).
    pub give_up: bool,
    /// When not empty: the only instants (ms after T0) at which a crash, a
    /// pause or a restart strikes (time stops there; it is event driven).
    pub fault_instants: Vec<Ms>,
}

impl Sys {
    /// Three servers, Redlock as `quorum.rs` does it.
    pub fn quorum(label: &'static str, ttl: Ms) -> Sys {
        Sys {
            mode: Mode::Quorum,
            nodes: 3,
            ..Sys::base(label, ttl)
        }
    }

    /// Two library clients with TTL `ttl` on one Redis, no faults.
    pub fn base(label: &'static str, ttl: Ms) -> Sys {
        Sys {
            label,
            mode: Mode::Lease,
            clients: vec![ClientCfg::new(ttl), ClientCfg::new(ttl)],
            delay: (1, 10),
            pubsub_delay: 10,
            reconnect: (1, 30),
            op_timeout: 5000,
            faults: Faults::default(),
            min_replicas: false,
            wait_timeouts: 1,
            uptime: Uptime::Redis,
            mutants: Mutants::default(),
            horizon: 3 * ttl,
            liveness_bound: 2 * ttl + 500,
            nodes: 1,
            writes: 0,
            any_delay: false,
            late: 2,
            start_window: 0,
            release_anytime: false,
            give_up: false,
            fault_instants: vec![],
        }
    }
}

// ---------------------------------------------------------------------------
// State.
// ---------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Req {
    /// acquire.lua; `wait`: keep a place in the queue ("wait", else "try").
    Acquire {
        wait: bool,
    },
    /// renew.lua; `repair`: the quorum's token, to re-create a lost lease.
    Renew {
        repair: Option<u64>,
    },
    /// renew.lua with ARGV[5]: the claim of a grant with this token.
    Claim {
        token: u64,
    },
    /// release.lua; `always`: publish `released` (quorum).
    Release {
        always: bool,
    },
    Leave,
    /// confirm.lua (quorum).
    Confirm {
        token: u64,
    },
    /// sem_acquire.lua, always "wait" (waiter.rs queues semaphore
    /// attempts too), with the client's inbox.
    SemAcquire,
    SemRenew,
    /// sem_renew.lua with ARGV[4]: the claim of a grant with this token.
    SemClaim {
        token: u64,
    },
    SemRelease,
    /// sem_leave.lua.
    SemLeave,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Rep {
    /// acquire.lua's reply; false: `WAIT` did not reach the replica.
    Acquire(Acquired, bool),
    Renew(Renewed, bool),
    SemAcquire(SemAcquired, bool),
    Done(bool),
    /// The connection failed (the server restarted under the request).
    Failed,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Body {
    Req(Hid, Req),
    Rep(Rep),
    Pub(Event),
    /// The client's connection to the server came back after a restart.
    Reconnected,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Msg {
    /// Must be delivered (or lost) by then.
    pub deadline: Ms,
    /// Not before.
    pub earliest: Ms,
    pub client: u8,
    pub node: u8,
    /// The client's request id (replies carry it back).
    pub id: u8,
    pub body: Body,
}

impl Msg {
    fn to_server(&self) -> bool {
        matches!(self.body, Body::Req(..))
    }
    fn is_command(&self) -> bool {
        matches!(self.body, Body::Req(..) | Body::Rep(_))
    }
}

/// One server's answer to a quorum request, as the client tallies it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Vote {
    None,
    /// Acquired with this token / renewed / confirmed.
    Yes(u64),
    /// Held by another, for this long.
    Held(Ms),
    /// Quarantine (or a queue ahead), for this long.
    Wait(Ms),
    /// Refused (renewal, confirm, release).
    No,
    /// No clear answer (an error, or none in time).
    Failed,
}

/// What an acquisition attempt that did not get the lease tells the waiter
/// (`AcquireReply` in `backend/mod.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// `Err(e) if e.is_unavailable()`: back off.
    Unavailable,
    /// Held by someone else (`token`: the holder's; 0 on a quorum, which
    /// has no grants).
    Held {
        wait: Ms,
        first: bool,
        token: u64,
    },
    Queued(Ms),
    Quarantined(Ms),
    NoMajority(Ms),
    /// LEASEHOLD_KIND: `acquire()` returns the error.
    Refused,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Flight {
    pub id: u8,
    pub sent: Ms,
    /// Abandoned then (the deadline; quorum: the per-node timeout).
    pub until: Ms,
    pub votes: [Vote; 3],
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Hold {
    pub token: u64,
    /// Ghost: the order in which tenures began.
    pub seq: u8,
    pub deadline: Ms,
    pub due: Ms,
    /// A renewal in flight.
    pub flight: Option<Flight>,
    /// When the tenure began (at the client).
    pub since: Ms,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Phase {
    Idle,
    Done,
    /// An acquisition attempt is in flight (`fast`: the first one, before
    /// subscribing). Quorum: one request per server, tallied at `until`.
    Attempt {
        id: u8,
        sent: Ms,
        until: Ms,
        fast: bool,
        votes: [Vote; 3],
    },
    /// Quorum: confirm.lua on the granting majority.
    Confirm {
        id: u8,
        sent: Ms,
        until: Ms,
        fast: bool,
        token: u64,
        votes: [Vote; 3],
        /// Where to give it back if it does not count.
        maybe: [bool; 3],
        outcome: Outcome,
    },
    /// Giving back what an attempt that does not count may have taken (a
    /// grant not replicated in time; a quorum attempt without a majority).
    Undo {
        id: u8,
        sent: Ms,
        until: Ms,
        fast: bool,
        pending: [bool; 3],
        outcome: Outcome,
    },
    /// In the waiter's `select!`.
    Sleep {
        until: Ms,
    },
    Backoff {
        until: Ms,
    },
    /// `take_grant` claims a grant with a renewal.
    Claim {
        id: u8,
        sent: Ms,
        token: u64,
        timeout: Ms,
    },
    Hold(Hold),
    /// Lost by a refusal: the work is being stopped.
    Stopping {
        until: Ms,
    },
    /// Released: waits for a renewal in flight (until it lands or is
    /// abandoned), then release.lua on every server.
    Releasing {
        landing: Option<Flight>,
        id: Option<u8>,
        pending: [bool; 3],
        timeout: Ms,
    },
}

/// What a waiter has been told (`notify.rs` `Mailbox` and the `released`
/// Notify), and whether it listens at all.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Mail {
    pub open: bool,
    pub grant: Option<(u64, Ms)>,
    pub on_deck: Option<Ms>,
    pub permit: bool,
    pub released: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Client {
    /// Acquisitions begun so far (each gets a fresh holder id).
    pub acq: u8,
    /// The holder id of the current acquisition: fresh for each one
    /// (`HolderId::generate` in lease/mod.rs), unless the mutant
    /// `reuse_holder_id` keeps the first.
    pub id: u8,
    pub phase: Phase,
    pub paused: Option<Ms>,
    pub crashed: bool,
    pub next_id: u8,
    /// `last_held`: the send instant of the latest attempt answered "held by
    /// someone else", with the token it saw.
    pub last_held: Option<(Ms, u64)>,
    pub backoff: Ms,
    pub mail: Mail,
    pub writes: u8,
    /// renewal.rs `reconnected`: the latest reconnect (0: none). A lease
    /// whose acquisition or renewal was sent before it is renewed at once.
    pub reconnected: Ms,
    /// Until when the channels of the last acquisition's wait linger
    /// (notify.rs LINGER, 2 s after the wait ended; 0: it did not wait): an
    /// acquisition begun before then skips the fast path.
    pub linger_until: Ms,
}

impl Client {
    pub fn hid(&self, c: usize) -> Hid {
        Hid((c as u8) * 16 + self.id)
    }
    fn waiting(&self) -> bool {
        matches!(
            self.phase,
            Phase::Attempt { .. }
                | Phase::Confirm { .. }
                | Phase::Undo { .. }
                | Phase::Sleep { .. }
                | Phase::Backoff { .. }
                | Phase::Claim { .. }
        )
    }
    fn holding(&self) -> bool {
        matches!(self.phase, Phase::Hold(_) | Phase::Stopping { .. })
    }
    /// Inside its work: the child may be running.
    pub fn in_work(&self, now: Ms) -> bool {
        !self.crashed
            && match &self.phase {
                Phase::Hold(h) => now < h.deadline,
                Phase::Stopping { until } => now < *until,
                _ => false,
            }
    }
    /// The next instant at which a timer of this client fires.
    fn timer(&self) -> Option<Ms> {
        if self.crashed {
            return None;
        }
        match &self.phase {
            Phase::Idle | Phase::Done => None,
            Phase::Attempt { until, .. }
            | Phase::Confirm { until, .. }
            | Phase::Undo { until, .. }
            | Phase::Claim { timeout: until, .. }
            | Phase::Sleep { until }
            | Phase::Backoff { until }
            | Phase::Stopping { until } => Some(*until),
            Phase::Hold(h) => Some(match &h.flight {
                Some(f) => f.until.min(h.deadline),
                None => h.due.min(h.deadline),
            }),
            Phase::Releasing {
                landing, timeout, ..
            } => Some(landing.as_ref().map_or(*timeout, |f| f.until)),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Server {
    pub store: Store,
    /// The older copy: the last snapshot, or what the replica has.
    pub older: Option<Store>,
    pub run: Run,
    pub start: Ms,
    pub promoted: bool,
}

/// The fenced resource: accepts a write whose token is at least the highest
/// it has seen.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Fence {
    pub max: u64,
    pub seq: u8,
    pub accepted: u8,
    /// Set when it accepted a write of an older tenure after one of a newer
    /// tenure, or the same token from two tenures.
    pub violated: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct State {
    pub now: Ms,
    pub servers: Vec<Server>,
    pub clients: Vec<Client>,
    pub net: Vec<Msg>,
    pub fence: Fence,
    pub faults_left: u8,
    pub syncs_left: u8,
    /// How many more messages may be late.
    pub late_left: u8,
    /// How many more `WAIT`s may time out.
    pub wait_timeouts_left: u8,
    pub next_run: u16,
    /// Ghost: tenures begun so far.
    pub tenures: u8,
    /// Ghost: the last fault.
    pub calm_since: Ms,
    /// Ghost: since when a live waiter has found the lease free (no tenure).
    pub stuck_since: Option<Ms>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RestartKind {
    Empty,
    Older,
    Failover,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// The clock moves to the next instant at which something is due.
    Tick,
    /// Message `i` arrives; for a command with `WAIT`, whether the replica
    /// acknowledged it.
    Deliver(u8, bool),
    Lose(u8),
    Start(u8),
    Timer(u8),
    /// The waiter's `select!` takes its mailbox's permit.
    Called(u8),
    /// The waiter's `select!` takes a `released` notification.
    Woken(u8),
    /// The holder finishes its work and releases.
    Finish(u8),
    /// A waiter stops waiting (`LeaveOnDrop`).
    GiveUp(u8),
    Write(u8),
    Crash(u8),
    Pause(u8),
    Resume(u8),
    Restart(u8, RestartKind),
}

// ---------------------------------------------------------------------------
// Transitions.
// ---------------------------------------------------------------------------

/// `quorum.rs` `node_timeout`: clamp(ttl/10, 20 ms, 1 s).
fn node_timeout(ttl: Ms) -> Ms {
    (ttl / 10).clamp(20, 1000)
}

impl Sys {
    fn is_quorum(&self) -> bool {
        self.mode == Mode::Quorum
    }

    fn majority(&self) -> usize {
        self.nodes / 2 + 1
    }

    fn all_nodes(&self) -> [bool; 3] {
        [true, self.nodes > 1, self.nodes > 2]
    }

    fn env(&self, s: &State, n: usize) -> Env {
        let sv = &s.servers[n];
        Env {
            now_us: s.now * 1000,
            run: sv.run,
            uptime_s: match self.uptime {
                Uptime::Redis => redis_uptime(sv.start, s.now),
                Uptime::Elapsed => (s.now - sv.start) / 1000,
            },
            promoted: sv.promoted,
            flushed: false,
            // One replica (the one a failover promotes).
            replicas: 1,
            mutants: self.mutants.script,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn send(&self, s: &mut State, c: usize, node: usize, id: u8, body: Body, window: (Ms, Ms)) {
        s.net.push(Msg {
            earliest: s.now + window.0,
            deadline: s.now + window.1,
            client: c as u8,
            node: node as u8,
            id,
            body,
        });
    }

    fn new_id(&self, s: &mut State, c: usize) -> u8 {
        let cl = &mut s.clients[c];
        let id = cl.next_id;
        cl.next_id = cl.next_id.wrapping_add(1);
        id
    }

    /// Sends request `r` of client `c` to the servers in `to`; returns its id.
    fn request(&self, s: &mut State, c: usize, to: [bool; 3], r: Req) -> u8 {
        let id = self.new_id(s, c);
        let hid = s.clients[c].hid(c);
        for (n, on) in to.iter().enumerate() {
            if *on {
                self.send(s, c, n, id, Body::Req(hid, r.clone()), self.delay);
            }
        }
        id
    }

    fn attempt_req(&self) -> Req {
        match self.mode {
            Mode::Lease => Req::Acquire { wait: true },
            Mode::Sem { .. } => Req::SemAcquire,
            // quorum.rs asks every node with `queue = false` ("try").
            Mode::Quorum => Req::Acquire { wait: false },
        }
    }

    fn renew_req(&self, token: u64) -> Req {
        match self.mode {
            Mode::Lease => Req::Renew { repair: None },
            Mode::Sem { .. } => Req::SemRenew,
            Mode::Quorum => Req::Renew {
                repair: Some(token),
            },
        }
    }

    /// `Backend::claim`: renew.lua (sem_renew.lua) with the grant's token.
    fn claim_req(&self, token: u64) -> Req {
        match self.mode {
            Mode::Sem { .. } => Req::SemClaim { token },
            _ => Req::Claim { token },
        }
    }

    /// `Backend::leave`: leave.lua (sem_leave.lua).
    fn leave_req(&self) -> Req {
        match self.mode {
            Mode::Sem { .. } => Req::SemLeave,
            _ => Req::Leave,
        }
    }

    fn release_req(&self) -> Req {
        match self.mode {
            Mode::Lease => Req::Release { always: false },
            Mode::Sem { .. } => Req::SemRelease,
            Mode::Quorum => Req::Release { always: true },
        }
    }

    /// One acquisition attempt (the fast path's, or the loop's).
    fn attempt(&self, s: &mut State, c: usize, fast: bool) {
        if !fast {
            // Subscribed (and confirmed) before the attempt; what the line
            // told us before it is dropped as it is sent (waiter.rs, ecc72ee).
            let mail = &mut s.clients[c].mail;
            mail.open = true;
            mail.grant = None;
            mail.on_deck = None;
        }
        let id = self.request(s, c, self.all_nodes(), self.attempt_req());
        let cfg = &self.clients[c];
        let now = s.now;
        let until = if self.is_quorum() {
            now + cfg.real(node_timeout(cfg.ttl))
        } else {
            now + cfg.real(self.op_timeout)
        };
        s.clients[c].phase = Phase::Attempt {
            id,
            sent: now,
            until,
            fast,
            votes: [Vote::None; 3],
        };
    }

    /// The lease is ours: from the request sent at `sent`, for `first_ttl`.
    fn hold(&self, s: &mut State, c: usize, token: u64, sent: Ms, first_ttl: Ms) {
        let cfg = &self.clients[c];
        let from = if self.mutants.deadline_from_reply {
            s.now
        } else {
            sent
        };
        let deadline = from + cfg.real(validity(first_ttl));
        let mut due = sent + cfg.real(cfg.renew_every().min(first_ttl / 3));
        // Sent before the latest reconnect: maybe to a server that is gone.
        if sent < s.clients[c].reconnected {
            due = s.now;
        }
        let seq = s.tenures;
        s.tenures += 1;
        let linger = if s.clients[c].mail.open && !self.is_quorum() {
            s.now + self.clients[c].real(LINGER)
        } else {
            0
        };
        let cl = &mut s.clients[c];
        cl.linger_until = linger;
        cl.mail = Mail::default();
        cl.writes = 0;
        cl.phase = Phase::Hold(Hold {
            token,
            seq,
            deadline,
            due,
            flight: None,
            since: s.now,
        });
    }

    /// `waiter.rs` `take_grant`: used as it is only when its token proves it
    /// newer than the latest attempt that saw another holder, and enough of
    /// its claim window is left counted from that attempt's send instant;
    /// otherwise claimed with a renewal that checks its token.
    fn take_grant(&self, s: &mut State, c: usize, token: u64, claim: Ms) {
        let cfg = &self.clients[c];
        if let Some((sent, seen)) = s.clients[c].last_held
            && (seen < token || self.mutants.grant_without_token_check)
            && !self.min_replicas
        {
            let deadline = sent + cfg.real(validity(claim));
            let need = cfg.min_validity.max(claim / 2);
            if deadline > s.now + cfg.real(need) {
                self.hold(s, c, token, sent, claim);
                return;
            }
        }
        let id = self.request(s, c, self.all_nodes(), self.claim_req(token));
        let now = s.now;
        s.clients[c].phase = Phase::Claim {
            id,
            sent: now,
            token,
            timeout: now + cfg.real(self.op_timeout),
        };
    }

    fn backoff(&self, s: &mut State, c: usize) {
        let cfg = &self.clients[c];
        let cl = &mut s.clients[c];
        let w = cl.backoff;
        cl.backoff = (w * 2).min(2000);
        cl.phase = Phase::Backoff {
            until: s.now + cfg.real(w),
        };
    }

    /// Sleeps until `local` ms after the attempt's send instant `sent`.
    fn sleep(&self, s: &mut State, c: usize, sent: Ms, local: Ms) {
        let until = (sent + self.clients[c].real(local)).max(s.now);
        s.clients[c].phase = Phase::Sleep { until };
    }

    /// The tenure ended (lost, released or stopped): acquire again at once
    /// if it has acquisitions left.
    fn end_tenure(&self, s: &mut State, c: usize) {
        let cl = &mut s.clients[c];
        cl.mail = Mail::default();
        if cl.acq + 1 < self.clients[c].acquisitions {
            cl.acq += 1;
            if !self.mutants.reuse_holder_id {
                cl.id = cl.acq;
            }
            self.start(s, c);
        } else {
            cl.phase = Phase::Done;
        }
    }

    /// `acquire()`: a fresh holder id, then the fast path — or, when the
    /// client's last acquisition subscribed (the channels linger), a fresh
    /// wake-up registered at once and the loop's first attempt, whose reply
    /// is waited on (waiter.rs, `subscription_if_ready`).
    fn start(&self, s: &mut State, c: usize) {
        let subscribed = s.now < s.clients[c].linger_until;
        let cl = &mut s.clients[c];
        cl.linger_until = 0;
        cl.last_held = None;
        cl.backoff = 50;
        cl.mail = Mail::default();
        self.attempt(s, c, !subscribed);
    }

    fn start_release(&self, s: &mut State, c: usize) {
        let id = self.request(s, c, self.all_nodes(), self.release_req());
        let cfg = &self.clients[c];
        // quorum.rs releases with a per-node timeout of node_timeout(10 s).
        let limit = if self.is_quorum() {
            node_timeout(10_000)
        } else {
            self.op_timeout
        };
        s.clients[c].phase = Phase::Releasing {
            landing: None,
            id: Some(id),
            pending: self.all_nodes(),
            timeout: s.now + cfg.real(limit),
        };
    }

    /// What the waiter does with an attempt that did not get the lease.
    fn outcome(&self, s: &mut State, c: usize, sent: Ms, fast: bool, o: Outcome) {
        let cfg = self.clients[c].clone();
        if fast {
            // The fast path: anything but the lease → subscribe, attempt.
            return self.attempt(s, c, false);
        }
        let cl = &mut s.clients[c];
        match o {
            Outcome::Unavailable => self.backoff(s, c),
            Outcome::Held { wait, first, token } => {
                cl.last_held = Some((sent, token));
                cl.backoff = 50;
                let w = if first { wait } else { wait + 1 + cfg.jitter };
                self.sleep(s, c, sent, w);
            }
            Outcome::Queued(w) | Outcome::Quarantined(w) => {
                cl.last_held = None;
                self.sleep(s, c, sent, w + cfg.jitter);
            }
            Outcome::NoMajority(w) => {
                cl.last_held = None;
                cl.backoff = 50;
                self.sleep(s, c, sent, w + cfg.jitter);
            }
            Outcome::Refused => self.end_tenure(s, c),
        }
    }

    /// Gives back what an attempt may have taken on the servers in `maybe`,
    /// then goes on with `o`. On a quorum the give-back announces itself
    /// (`released`, always) only when the attempt had a majority of grants
    /// (`loud`): a split vote's give-back is quiet (quorum.rs).
    #[allow(clippy::too_many_arguments)]
    fn undo(
        &self,
        s: &mut State,
        c: usize,
        sent: Ms,
        fast: bool,
        maybe: [bool; 3],
        loud: bool,
        o: Outcome,
    ) {
        if maybe == [false; 3] {
            return self.outcome(s, c, sent, fast, o);
        }
        let req = match self.release_req() {
            Req::Release { always } => Req::Release {
                always: always && loud,
            },
            r => r,
        };
        let id = self.request(s, c, maybe, req);
        let cfg = &self.clients[c];
        let limit = if self.is_quorum() {
            node_timeout(cfg.ttl)
        } else {
            self.op_timeout
        };
        s.clients[c].phase = Phase::Undo {
            id,
            sent,
            until: s.now + cfg.real(limit),
            fast,
            pending: maybe,
            outcome: o,
        };
    }

    /// A single server answered an attempt.
    fn single_attempt(&self, s: &mut State, c: usize, sent: Ms, fast: bool, rep: Rep) {
        let ttl = self.clients[c].ttl;
        match rep {
            Rep::Acquire(Acquired::Yes { token }, true)
            | Rep::SemAcquire(SemAcquired::Yes { token }, true) => {
                self.hold(s, c, token, sent, ttl)
            }
            // node.rs: not on enough replicas — give it back, NotReplicated.
            Rep::Acquire(Acquired::Yes { .. }, false)
            | Rep::SemAcquire(SemAcquired::Yes { .. }, false) => self.undo(
                s,
                c,
                sent,
                fast,
                [true, false, false],
                false,
                Outcome::Unavailable,
            ),
            Rep::Failed => self.outcome(s, c, sent, fast, Outcome::Unavailable),
            Rep::Acquire(Acquired::Queued { wait, .. }, _) => {
                self.outcome(s, c, sent, fast, Outcome::Queued(wait))
            }
            Rep::Acquire(
                Acquired::Held {
                    left, first, token, ..
                },
                _,
            ) => self.outcome(
                s,
                c,
                sent,
                fast,
                Outcome::Held {
                    wait: left,
                    first,
                    token,
                },
            ),
            Rep::Acquire(Acquired::Quarantine { wait }, _)
            | Rep::SemAcquire(SemAcquired::Quarantine { wait }, _) => {
                self.outcome(s, c, sent, fast, Outcome::Quarantined(wait))
            }
            // waiter.rs: all slots taken is "held by someone else": the
            // name's last token plays the holder's token (a grant with a
            // larger one came after this attempt), `first` the timing.
            Rep::SemAcquire(
                SemAcquired::Full {
                    wait, first, last, ..
                },
                _,
            ) => self.outcome(
                s,
                c,
                sent,
                fast,
                Outcome::Held {
                    wait,
                    first,
                    token: last,
                },
            ),
            Rep::SemAcquire(SemAcquired::Queued { wait, .. }, _) => {
                self.outcome(s, c, sent, fast, Outcome::Queued(wait))
            }
            _ => self.outcome(s, c, sent, fast, Outcome::Refused),
        }
    }

    /// `quorum.rs` `attempt`, once every node answered or timed out.
    fn quorum_attempt(&self, s: &mut State, c: usize, sent: Ms, fast: bool, votes: [Vote; 3]) {
        let cfg = self.clients[c].clone();
        let n = self.nodes;
        let mut granted = vec![];
        let mut held = vec![];
        let mut quarantine = 0;
        let mut failed = 0;
        let mut maybe = [false; 3];
        for (i, v) in votes.iter().take(n).enumerate() {
            match *v {
                Vote::Yes(t) => {
                    granted.push((i, t));
                    maybe[i] = true;
                }
                Vote::Held(l) => held.push(l),
                Vote::Wait(w) => quarantine = quarantine.max(w),
                _ => {
                    failed += 1;
                    maybe[i] = true;
                }
            }
        }
        let outcome = if failed > n - self.majority() {
            Outcome::Unavailable
        } else if quarantine > 0 {
            Outcome::Quarantined(quarantine)
        } else {
            // When will enough nodes be free? The k-th smallest TTL left.
            let free_now = n - held.len();
            held.sort();
            let wait = match self.majority().checked_sub(free_now) {
                Some(k) if k >= 1 && k <= held.len() => held[k - 1],
                _ => 20 + cfg.jitter,
            };
            if held.is_empty() {
                Outcome::NoMajority(wait)
            } else {
                Outcome::Held {
                    wait,
                    first: false,
                    token: 0,
                }
            }
        };
        let in_time = s.now - sent < cfg.real(validity(cfg.ttl));
        if granted.len() >= self.majority() && in_time {
            let token = granted.iter().map(|(_, t)| *t).max().unwrap_or(0);
            let mut to = [false; 3];
            for (i, _) in &granted {
                to[*i] = true;
            }
            let id = self.request(s, c, to, Req::Confirm { token });
            s.clients[c].phase = Phase::Confirm {
                id,
                sent,
                until: s.now + cfg.real(node_timeout(cfg.ttl)),
                fast,
                token,
                votes: to.map(|on| if on { Vote::None } else { Vote::No }),
                maybe,
                outcome,
            };
            return;
        }
        let loud = granted.len() >= self.majority();
        self.undo(s, c, sent, fast, maybe, loud, outcome);
    }

    /// The confirm round is over: the lease counts if a majority confirmed
    /// and the whole attempt took less than the validity time.
    #[allow(clippy::too_many_arguments)]
    fn quorum_confirmed(&self, s: &mut State, c: usize, p: Phase) {
        let Phase::Confirm {
            sent,
            fast,
            token,
            votes,
            maybe,
            outcome,
            ..
        } = p
        else {
            unreachable!()
        };
        let cfg = &self.clients[c];
        let yes = votes.iter().filter(|v| matches!(v, Vote::Yes(_))).count();
        if yes >= self.majority() && s.now - sent < cfg.real(validity(cfg.ttl)) {
            return self.hold(s, c, token, sent, cfg.ttl);
        }
        // It had a majority of grants: others may wait for it; announce.
        self.undo(s, c, sent, fast, maybe, true, outcome);
    }

    /// A renewal's replies (or timeouts) are in: `tally_renew`.
    fn renewed(&self, s: &mut State, c: usize, mut h: Hold, f: Flight) {
        let cfg = &self.clients[c];
        let n = self.nodes;
        let yes = f
            .votes
            .iter()
            .take(n)
            .filter(|v| matches!(v, Vote::Yes(_)))
            .count();
        let no = f.votes.iter().take(n).filter(|v| **v == Vote::No).count();
        if yes >= self.majority() {
            let from = if self.mutants.deadline_from_reply {
                s.now
            } else {
                f.sent
            };
            h.deadline = from + cfg.real(validity(cfg.ttl));
            h.due = f.sent + cfg.real(cfg.renew_every());
            if f.sent < s.clients[c].reconnected {
                h.due = s.now;
            }
            s.clients[c].phase = Phase::Hold(h);
        } else if no > n - self.majority() {
            // Refused: lost now; the work stops within the stop budget.
            let until = (s.now + cfg.real(cfg.stop_budget)).min(h.deadline);
            s.clients[c].phase = Phase::Stopping { until };
        } else {
            // Unknown outcome: the deadline stays; retry.
            h.due = (s.now + cfg.real(cfg.retry_every())).min(h.deadline);
            s.clients[c].phase = Phase::Hold(h);
        }
    }

    fn on_reply(&self, s: &mut State, c: usize, node: usize, id: u8, rep: Rep) {
        let n = self.nodes;
        let phase = s.clients[c].phase.clone();
        match phase {
            Phase::Attempt {
                id: want,
                sent,
                until,
                fast,
                mut votes,
            } if want == id => {
                if !self.is_quorum() {
                    return self.single_attempt(s, c, sent, fast, rep);
                }
                votes[node] = match rep {
                    Rep::Acquire(Acquired::Yes { token }, _) => Vote::Yes(token),
                    Rep::Acquire(Acquired::Held { left, .. }, _) => Vote::Held(left),
                    Rep::Acquire(
                        Acquired::Quarantine { wait } | Acquired::Queued { wait, .. },
                        _,
                    ) => Vote::Wait(wait),
                    _ => Vote::Failed,
                };
                if votes.iter().take(n).all(|v| *v != Vote::None) {
                    self.quorum_attempt(s, c, sent, fast, votes);
                } else {
                    s.clients[c].phase = Phase::Attempt {
                        id,
                        sent,
                        until,
                        fast,
                        votes,
                    };
                }
            }
            Phase::Confirm { id: want, .. } if want == id => {
                let mut p = phase;
                if let Phase::Confirm { votes, .. } = &mut p {
                    votes[node] = match rep {
                        Rep::Done(true) => Vote::Yes(0),
                        _ => Vote::No,
                    };
                    if votes.iter().take(n).any(|v| *v == Vote::None) {
                        s.clients[c].phase = p;
                        return;
                    }
                }
                self.quorum_confirmed(s, c, p);
            }
            Phase::Undo {
                id: want,
                sent,
                until,
                fast,
                mut pending,
                outcome,
            } if want == id => {
                pending[node] = false;
                if pending == [false; 3] {
                    self.outcome(s, c, sent, fast, outcome);
                } else {
                    s.clients[c].phase = Phase::Undo {
                        id,
                        sent,
                        until,
                        fast,
                        pending,
                        outcome,
                    };
                }
            }
            Phase::Claim {
                id: want,
                sent,
                token,
                ..
            } if want == id => match rep {
                Rep::Renew(Renewed::Yes, true) => {
                    let ttl = self.clients[c].ttl;
                    self.hold(s, c, token, sent, ttl)
                }
                // Refused, not replicated, or unknown: attempt again.
                _ => self.attempt(s, c, false),
            },
            Phase::Hold(mut h) if h.flight.as_ref().map(|f| f.id) == Some(id) => {
                let mut f = h.flight.take().expect("in flight");
                f.votes[node] = match rep {
                    Rep::Renew(Renewed::Yes, true) => Vote::Yes(0),
                    Rep::Renew(Renewed::No(_), _) => Vote::No,
                    _ => Vote::Failed,
                };
                if f.votes.iter().take(n).any(|v| *v == Vote::None) {
                    h.flight = Some(f);
                    s.clients[c].phase = Phase::Hold(h);
                } else {
                    self.renewed(s, c, h, f);
                }
            }
            Phase::Releasing {
                landing: Some(mut f),
                id: None,
                ..
            } if f.id == id => {
                f.votes[node] = Vote::Failed;
                if f.votes.iter().take(n).all(|v| *v != Vote::None) {
                    self.start_release(s, c);
                } else if let Phase::Releasing { landing, .. } = &mut s.clients[c].phase {
                    *landing = Some(f);
                }
            }
            Phase::Releasing {
                id: Some(want),
                mut pending,
                timeout,
                ..
            } if want == id => {
                pending[node] = false;
                if pending == [false; 3] {
                    self.end_tenure(s, c);
                } else {
                    s.clients[c].phase = Phase::Releasing {
                        landing: None,
                        id: Some(want),
                        pending,
                        timeout,
                    };
                }
            }
            // A reply nobody waits for any more.
            _ => {}
        }
    }

    fn on_event(&self, s: &mut State, c: usize, e: Event) {
        let cfg = &self.clients[c];
        let me = s.clients[c].hid(c);
        let now = s.now;
        let mail = &mut s.clients[c].mail;
        if !mail.open {
            return;
        }
        match e {
            Event::Granted {
                token,
                head,
                claim,
                next,
            } => {
                if head == me {
                    mail.grant = Some((token, claim));
                    mail.permit = true;
                }
                if next == Some(me) {
                    mail.on_deck = Some(now + cfg.real(claim));
                    mail.permit = true;
                }
            }
            Event::Released { head: Some(h), .. } => {
                if h == me {
                    mail.permit = true;
                }
            }
            Event::Released { head: None, .. } => mail.released = true,
            Event::Acquired(_) | Event::Proclaimed(_) => {}
        }
    }

    /// Server `m.node` runs the script for request `m`.
    fn serve(&self, s: &mut State, m: &Msg, sync: bool) {
        let (c, node) = (m.client as usize, m.node as usize);
        let Body::Req(hid, req) = &m.body else {
            unreachable!()
        };
        let (hid, cfg) = (*hid, &self.clients[c]);
        let env = self.env(s, node);
        let st = &mut s.servers[node].store;
        let ok = !self.waited(m) || sync;
        let (rep, events) = match req {
            Req::Acquire { wait } => {
                let (r, ev) = st.acquire(
                    &env,
                    0,
                    hid,
                    cfg.ttl,
                    Val(0),
                    *wait,
                    cfg.margin(),
                    self.min_replicas as u32,
                    // node.rs: the client's inbox when it queues ("wait").
                    wait.then_some(Inbox(c as u8)),
                );
                (Rep::Acquire(r, ok), ev)
            }
            Req::Renew { repair } => (
                Rep::Renew(
                    st.renew(
                        &env,
                        0,
                        hid,
                        cfg.ttl,
                        repair.map(|t| (t, Val(0))),
                        None,
                        self.min_replicas as u32,
                    ),
                    ok,
                ),
                vec![],
            ),
            Req::Claim { token } => (
                Rep::Renew(
                    st.renew(
                        &env,
                        0,
                        hid,
                        cfg.ttl,
                        None,
                        Some(*token),
                        self.min_replicas as u32,
                    ),
                    ok,
                ),
                vec![],
            ),
            Req::Release { always } => {
                let (done, ev) = st.release(&env, 0, hid, *always);
                (Rep::Done(done), ev)
            }
            Req::Leave => {
                let (n, ev) = st.leave(&env, 0, hid);
                (Rep::Done(n == 1), ev)
            }
            Req::Confirm { token } => (Rep::Done(st.confirm(&env, 0, hid, *token)), vec![]),
            Req::SemAcquire => {
                let Mode::Sem { limit } = self.mode else {
                    unreachable!()
                };
                // semaphore.rs: "wait", the queue margin, the inbox.
                let (r, ev) = st.sem_acquire(
                    &env,
                    0,
                    hid,
                    cfg.ttl,
                    Val(0),
                    limit,
                    self.min_replicas as u32,
                    true,
                    cfg.margin(),
                    Some(Inbox(c as u8)),
                );
                (Rep::SemAcquire(r, ok), ev)
            }
            Req::SemRenew => (
                Rep::Renew(
                    st.sem_renew(&env, 0, hid, cfg.ttl, self.min_replicas as u32, None),
                    ok,
                ),
                vec![],
            ),
            Req::SemClaim { token } => (
                Rep::Renew(
                    st.sem_renew(
                        &env,
                        0,
                        hid,
                        cfg.ttl,
                        self.min_replicas as u32,
                        Some(*token),
                    ),
                    ok,
                ),
                vec![],
            ),
            Req::SemRelease => {
                let Mode::Sem { limit } = self.mode else {
                    unreachable!()
                };
                let (done, ev) = st.sem_release(&env, 0, hid, limit);
                (Rep::Done(done), ev)
            }
            Req::SemLeave => {
                let Mode::Sem { limit } = self.mode else {
                    unreachable!()
                };
                let (n, ev) = st.sem_leave(&env, 0, hid, limit);
                (Rep::Done(n == 1), ev)
            }
        };
        if sync {
            // WAIT returned (the replica has everything up to here), or a
            // snapshot was taken / the replica caught up.
            s.servers[node].older = Some(s.servers[node].store.clone());
            if !self.waited(m) {
                s.syncs_left -= 1;
            }
        }
        self.send(s, c, node, m.id, Body::Rep(rep), self.delay);
        for p in events {
            for d in 0..s.clients.len() {
                // The name's channel reaches every subscribed client; an
                // inbox only its own client (while a waiter of it listens).
                let to_d = match p.to {
                    Chan::Name => true,
                    Chan::Inbox(i) => i.0 as usize == d,
                };
                if to_d && s.clients[d].mail.open && !s.clients[d].crashed {
                    let w = (self.delay.0, self.pubsub_delay);
                    self.send(s, d, node, 0, Body::Pub(p.event), w);
                }
            }
        }
    }

    fn deliver(&self, s: &mut State, m: Msg, sync: bool) {
        let c = m.client as usize;
        match m.body.clone() {
            Body::Req(..) => self.serve(s, &m, sync),
            Body::Rep(r) => self.on_reply(s, c, m.node as usize, m.id, r),
            Body::Pub(e) => self.on_event(s, c, e),
            Body::Reconnected => {
                let cl = &mut s.clients[c];
                cl.reconnected = s.now;
                // renewal.rs RenewAll: every lease not in flight is due now.
                if let Phase::Hold(h) = &mut cl.phase
                    && h.flight.is_none()
                {
                    h.due = s.now;
                }
                // notify.rs wake_all: every waiter is woken once.
                if cl.mail.open {
                    cl.mail.permit = true;
                    if matches!(cl.phase, Phase::Sleep { .. }) {
                        cl.mail.released = true;
                    }
                }
            }
        }
    }

    fn timer(&self, s: &mut State, c: usize) {
        let now = s.now;
        let n = self.nodes;
        match s.clients[c].phase.clone() {
            Phase::Attempt {
                sent, fast, votes, ..
            } => {
                if self.is_quorum() {
                    // Nodes that did not answer in time count as failed.
                    let votes = votes.map(|v| if v == Vote::None { Vote::Failed } else { v });
                    self.quorum_attempt(s, c, sent, fast, votes);
                } else {
                    self.outcome(s, c, sent, fast, Outcome::Unavailable);
                }
            }
            p @ Phase::Confirm { .. } => {
                let mut p = p;
                if let Phase::Confirm { votes, .. } = &mut p {
                    *votes = votes.map(|v| if v == Vote::None { Vote::No } else { v });
                }
                self.quorum_confirmed(s, c, p);
            }
            Phase::Undo {
                sent,
                fast,
                outcome,
                ..
            } => self.outcome(s, c, sent, fast, outcome),
            Phase::Claim { .. } | Phase::Sleep { .. } | Phase::Backoff { .. } => {
                self.attempt(s, c, false)
            }
            Phase::Stopping { .. } => self.end_tenure(s, c),
            Phase::Hold(mut h) => {
                if now >= h.deadline {
                    // Lost at the deadline, even with a renewal in flight.
                    self.end_tenure(s, c);
                } else if let Some(mut f) = h.flight.take() {
                    // The per-node timeout: tally what came.
                    f.votes = f
                        .votes
                        .map(|v| if v == Vote::None { Vote::Failed } else { v });
                    self.renewed(s, c, h, f);
                } else if now >= h.due {
                    let cfg = &self.clients[c];
                    let id = self.request(s, c, self.all_nodes(), self.renew_req(h.token));
                    let until = if self.is_quorum() {
                        now + cfg.real(node_timeout(cfg.ttl))
                    } else {
                        h.deadline
                    };
                    h.flight = Some(Flight {
                        id,
                        sent: now,
                        until,
                        votes: std::array::from_fn(|i| if i < n { Vote::None } else { Vote::No }),
                    });
                    s.clients[c].phase = Phase::Hold(h);
                }
            }
            Phase::Releasing {
                landing: Some(_), ..
            } => self.start_release(s, c),
            Phase::Releasing { .. } => self.end_tenure(s, c),
            Phase::Idle | Phase::Done => {}
        }
    }

    fn restart(&self, s: &mut State, node: usize, kind: RestartKind) {
        let now = s.now;
        let sv = &mut s.servers[node];
        sv.store = match kind {
            RestartKind::Empty => Store::new(1),
            _ => sv.older.clone().unwrap_or_else(|| Store::new(1)),
        };
        sv.run = Run(s.next_run);
        s.next_run += 1;
        sv.promoted = kind == RestartKind::Failover;
        // A promoted replica has been up for long; a restarted server just
        // started.
        sv.start = if sv.promoted { now - 3_600_000 } else { now };
        if sv.promoted {
            sv.older = None;
        }
        // Requests not yet served fail with the connection.
        let mut failed = vec![];
        s.net.retain(|m| {
            if m.to_server() && m.node as usize == node {
                failed.push((m.client as usize, m.id));
                false
            } else {
                true
            }
        });
        for (c, id) in failed {
            self.send(s, c, node, id, Body::Rep(Rep::Failed), self.delay);
        }
        for c in 0..s.clients.len() {
            if !s.clients[c].crashed {
                self.send(s, c, node, 0, Body::Reconnected, self.reconnect);
            }
        }
    }

    fn write(&self, s: &mut State, c: usize) {
        let (token, seq) = match &s.clients[c].phase {
            Phase::Hold(h) => (h.token, h.seq),
            _ => return,
        };
        s.clients[c].writes += 1;
        let f = &mut s.fence;
        if token < f.max {
            return; // rejected: the resource did its job
        }
        if f.accepted > 0 && (seq < f.seq || (token == f.max && seq != f.seq)) {
            f.violated = true;
        }
        f.max = token;
        f.seq = seq;
        f.accepted += 1;
    }

    /// The earliest instant after now at which something is due, unless
    /// something is due now.
    fn next_instant(&self, s: &State) -> Option<Ms> {
        let now = s.now;
        let mut next = Ms::MAX;
        for cl in &s.clients {
            if cl.crashed {
                continue;
            }
            if cl.phase == Phase::Idle {
                // It starts at some instant of the start window, at its end
                // at the latest.
                if now >= T0 + self.start_window {
                    return None;
                }
                next = next.min(T0 + self.start_window);
            }
            if let Some(p) = cl.paused {
                if p <= now {
                    return None;
                }
                next = next.min(p);
                continue;
            }
            // A ready branch of the waiter's `select!` runs at once.
            if matches!(cl.phase, Phase::Sleep { .. }) && (cl.mail.permit || cl.mail.released) {
                return None;
            }
            if let Some(t) = cl.timer() {
                if t <= now {
                    return None;
                }
                next = next.min(t);
            }
        }
        let mut late = 0;
        for m in &s.net {
            let rcv = &s.clients[m.client as usize];
            // A paused client reads nothing, and its requests not yet on
            // the wire (sent as it froze) go out when it resumes.
            if rcv.paused.is_some() {
                continue;
            }
            if m.deadline <= now {
                return None;
            }
            if m.earliest == now {
                // Waiting past its earliest instant makes it late.
                late += 1;
                if late > s.late_left {
                    return None;
                }
            }
            if m.earliest > now {
                next = next.min(m.earliest);
            }
            next = next.min(m.deadline);
        }
        // Faults strike at the instants where something happens, or only
        // at these (e.g. just before a second turns, for Redis's uptime).
        if s.faults_left > 0
            && let Some(x) = self
                .fault_instants
                .iter()
                .map(|x| T0 + x)
                .find(|x| *x > now)
        {
            next = next.min(x);
        }
        (next != Ms::MAX && next <= T0 + self.horizon).then_some(next)
    }

    fn deliverable(&self, s: &State, m: &Msg) -> bool {
        let on_time = if self.any_delay {
            m.earliest <= s.now
        } else {
            m.earliest == s.now || m.deadline <= s.now
        };
        on_time && s.clients[m.client as usize].paused.is_none()
    }

    /// Request ids only tell a client's current request from stale ones:
    /// renumber them from 0 so that states differing only in old ids merge.
    fn canonical_ids(&self, s: &mut State) {
        for c in 0..s.clients.len() {
            let mut ids: Vec<u8> = s
                .net
                .iter()
                .filter(|m| m.client as usize == c && m.is_command())
                .map(|m| m.id)
                .collect();
            let cl = &mut s.clients[c];
            let own = phase_ids(&mut cl.phase);
            ids.extend(own.iter().map(|i| **i));
            ids.sort();
            ids.dedup();
            let map = |id: u8| ids.iter().position(|x| *x == id).expect("known id") as u8;
            for i in own {
                *i = map(*i);
            }
            cl.next_id = ids.len() as u8;
            for m in s.net.iter_mut() {
                if m.client as usize == c && m.is_command() {
                    m.id = map(m.id);
                }
            }
        }
    }

    fn update_ghosts(&self, s: &mut State) {
        let capacity = match self.mode {
            Mode::Sem { limit } => limit as usize,
            _ => 1,
        };
        let holding = s.clients.iter().filter(|c| c.holding()).count();
        let live_waiter = s
            .clients
            .iter()
            .any(|c| !c.crashed && c.paused.is_none() && c.waiting());
        let stuck = live_waiter && holding < capacity;
        s.stuck_since = if stuck {
            Some(s.stuck_since.unwrap_or(s.now))
        } else {
            None
        };
    }

    /// A request whose delivery now is independent of every other action
    /// enabled in `s` (which must not let time pass): the only deliverable
    /// request to its server, served in a single way (no WAIT, no sync, no
    /// loss left in the budget), by a script that publishes nothing in the
    /// model (so which clients listen does not matter), while time cannot
    /// move (a fault cannot strike). Such a delivery changes only its
    /// server and adds a reply; client actions change only clients and add
    /// messages (the net is kept sorted, so the order is immaterial); the
    /// properties read only clients, the fence and time.
    fn independent_delivery(&self, s: &State) -> Option<usize> {
        if self.min_replicas || s.syncs_left > 0 || (s.faults_left > 0 && self.faults.lose) {
            return None;
        }
        let silent = |m: &Msg| {
            matches!(
                m.body,
                Body::Req(
                    _,
                    Req::Acquire { .. }
                        | Req::Renew { .. }
                        | Req::Claim { .. }
                        | Req::Confirm { .. }
                        | Req::SemAcquire
                        | Req::SemRenew
                        | Req::SemClaim { .. }
                )
            )
        };
        let due: Vec<(usize, &Msg)> = s
            .net
            .iter()
            .enumerate()
            .filter(|(_, m)| m.to_server() && self.deliverable(s, m))
            .collect();
        due.iter()
            .find(|(_, m)| silent(m) && due.iter().filter(|(_, o)| o.node == m.node).count() == 1)
            .map(|(i, _)| *i)
    }

    /// A command followed by `WAIT` (`--min-replicas`).
    fn waited(&self, m: &Msg) -> bool {
        self.min_replicas
            && matches!(
                m.body,
                Body::Req(
                    _,
                    Req::Acquire { .. }
                        | Req::Renew { .. }
                        | Req::Claim { .. }
                        | Req::SemAcquire
                        | Req::SemRenew
                        | Req::SemClaim { .. }
                )
            )
    }

    fn node_faulty(&self, n: usize) -> bool {
        self.faults.faulty_nodes == 0 || self.faults.faulty_nodes & (1 << n) != 0
    }
}

/// The request ids a phase refers to.
fn phase_ids(p: &mut Phase) -> Vec<&mut u8> {
    match p {
        Phase::Attempt { id, .. }
        | Phase::Confirm { id, .. }
        | Phase::Undo { id, .. }
        | Phase::Claim { id, .. } => vec![id],
        Phase::Hold(h) => h.flight.as_mut().map(|f| &mut f.id).into_iter().collect(),
        Phase::Releasing { landing, id, .. } => landing
            .as_mut()
            .map(|f| &mut f.id)
            .into_iter()
            .chain(id.as_mut())
            .collect(),
        _ => vec![],
    }
}

impl Model for Sys {
    type State = State;
    type Action = Action;

    fn init_states(&self) -> Vec<State> {
        let server = |i: usize| Server {
            store: Store::new(1),
            older: None,
            run: Run(i as u16),
            // Up for an hour, used for the first time.
            start: T0 - 3_600_000,
            promoted: false,
        };
        vec![State {
            now: T0,
            servers: (0..self.nodes).map(server).collect(),
            clients: self
                .clients
                .iter()
                .map(|_| Client {
                    acq: 0,
                    id: 0,
                    phase: Phase::Idle,
                    paused: None,
                    crashed: false,
                    next_id: 0,
                    last_held: None,
                    backoff: 50,
                    mail: Mail::default(),
                    linger_until: 0,
                    writes: 0,
                    reconnected: 0,
                })
                .collect(),
            net: vec![],
            fence: Fence::default(),
            faults_left: self.faults.budget,
            syncs_left: self.faults.syncs,
            late_left: self.late,
            wait_timeouts_left: self.wait_timeouts,
            next_run: self.nodes as u16,
            tenures: 0,
            calm_since: T0,
            stuck_since: None,
        }]
    }

    fn actions(&self, s: &State, out: &mut Vec<Action>) {
        let now = s.now;
        let quiet = self.next_instant(s).is_some();
        if quiet {
            out.push(Action::Tick);
        } else if let Some(i) = self.independent_delivery(s) {
            // Partial-order reduction: this delivery commutes with every
            // other enabled action, so exploring it alone first loses no
            // reachable combination of client states.
            out.push(Action::Deliver(i as u8, false));
            return;
        }
        // A message may be lost whenever it could be delivered. A crash, a
        // pause or a restart strikes when nothing is due any more at this
        // instant (between two instants: faults are not squeezed between
        // events of the same millisecond, which only multiplies states).
        let lose = s.faults_left > 0 && self.faults.lose;
        let fault = s.faults_left > 0
            && quiet
            && (self.fault_instants.is_empty() || self.fault_instants.contains(&(now - T0)));
        for (i, m) in s.net.iter().enumerate() {
            if !self.deliverable(s, m) {
                continue;
            }
            // For a command: whether the older copy (snapshot, replica)
            // catches up right after it — always possible with WAIT, which
            // the reply then reports; otherwise within the `syncs` budget.
            // (Only writes change what a snapshot holds, so catching up
            // right after one covers every content it can have.)
            // A WAIT times out (the replica did not acknowledge) within
            // its own budget.
            if !self.waited(m) || s.wait_timeouts_left > 0 {
                out.push(Action::Deliver(i as u8, false));
            }
            if m.to_server() && (self.waited(m) || s.syncs_left > 0) {
                out.push(Action::Deliver(i as u8, true));
            }
            if lose {
                out.push(Action::Lose(i as u8));
            }
        }
        for (c, cl) in s.clients.iter().enumerate() {
            let c8 = c as u8;
            if cl.crashed {
                continue;
            }
            if let Some(until) = cl.paused {
                if until <= now {
                    out.push(Action::Resume(c8));
                }
                continue;
            }
            match &cl.phase {
                Phase::Idle if now <= T0 + self.start_window => out.push(Action::Start(c8)),
                Phase::Sleep { .. } => {
                    if self.give_up && self.mode != Mode::Quorum {
                        out.push(Action::GiveUp(c8));
                    }
                    if cl.mail.permit {
                        out.push(Action::Called(c8));
                    }
                    if cl.mail.released {
                        out.push(Action::Woken(c8));
                    }
                }
                Phase::Hold(h) => {
                    if h.deadline > now && (self.release_anytime || now == h.since || now == h.due)
                    {
                        out.push(Action::Finish(c8));
                    }
                    // The writes that matter: one as the tenure begins, and
                    // one with a stale belief (at or past the deadline: a
                    // process that resumed before its timer fired).
                    if cl.writes < self.writes && (now == h.since || now >= h.deadline) {
                        out.push(Action::Write(c8));
                    }
                }
                _ => {}
            }
            if cl.timer().is_some_and(|t| t <= now) {
                out.push(Action::Timer(c8));
            }
            if fault && !matches!(cl.phase, Phase::Done) {
                if self.faults.crash {
                    out.push(Action::Crash(c8));
                }
                if self.faults.pause > 0 {
                    out.push(Action::Pause(c8));
                }
            }
        }
        for n in 0..self.nodes {
            let n8 = n as u8;
            if fault && self.node_faulty(n) {
                if self.faults.restart_empty {
                    out.push(Action::Restart(n8, RestartKind::Empty));
                }
                if self.faults.restart_older {
                    out.push(Action::Restart(n8, RestartKind::Older));
                }
                if self.faults.failover {
                    out.push(Action::Restart(n8, RestartKind::Failover));
                }
            }
        }
    }

    fn next_state(&self, last: &State, a: Action) -> Option<State> {
        let mut s = last.clone();
        let is_fault = matches!(
            a,
            Action::Lose(_) | Action::Crash(_) | Action::Pause(_) | Action::Restart(..)
        );
        if is_fault {
            s.faults_left -= 1;
            s.calm_since = s.now;
        }
        match a {
            Action::Tick => {
                let next = self.next_instant(&s)?;
                let now = s.now;
                let late = s
                    .net
                    .iter()
                    .filter(|m| m.earliest == now && s.clients[m.client as usize].paused.is_none())
                    .count() as u8;
                s.late_left = s.late_left.saturating_sub(late);
                s.now = next;
            }
            Action::Deliver(i, sync) => {
                let m = s.net.remove(i as usize);
                if self.waited(&m) && !sync {
                    s.wait_timeouts_left -= 1;
                }
                if !s.clients[m.client as usize].crashed || m.to_server() {
                    self.deliver(&mut s, m, sync);
                }
            }
            Action::Lose(i) => {
                s.net.remove(i as usize);
            }
            Action::Start(c) => self.start(&mut s, c as usize),
            Action::Timer(c) => self.timer(&mut s, c as usize),
            Action::Called(c) => {
                let c = c as usize;
                let cl = &mut s.clients[c];
                cl.mail.permit = false;
                // `if let Some(grant) = wake.take_grant()`
                match cl.mail.grant.take() {
                    Some((token, claim)) => self.take_grant(&mut s, c, token, claim),
                    None => match cl.mail.on_deck.take() {
                        Some(at) => {
                            let one = self.clients[c].real(1);
                            if let Phase::Sleep { until } = &mut cl.phase {
                                *until = (*until).min(at + one);
                            }
                        }
                        None => self.attempt(&mut s, c, false),
                    },
                }
            }
            Action::Woken(c) => {
                let c = c as usize;
                s.clients[c].mail.released = false;
                self.attempt(&mut s, c, false);
            }
            Action::Finish(c) => {
                let c = c as usize;
                let Phase::Hold(h) = s.clients[c].phase.clone() else {
                    return None;
                };
                match h.flight {
                    // Stop renewing; wait for the renewal in flight (the
                    // renewal service abandons it at the deadline at the latest).
                    Some(mut f) => {
                        f.until = f.until.min(h.deadline);
                        s.clients[c].phase = Phase::Releasing {
                            landing: Some(f),
                            id: None,
                            pending: [false; 3],
                            timeout: h.deadline,
                        }
                    }
                    None => self.start_release(&mut s, c),
                }
            }
            Action::GiveUp(c) => {
                let c = c as usize;
                // Leaves the queue in the background; gives back a grant
                // that reached it too late.
                self.request(&mut s, c, self.all_nodes(), self.leave_req());
                self.end_tenure(&mut s, c);
            }
            Action::Write(c) => self.write(&mut s, c as usize),
            Action::Crash(c) => {
                let c = c as usize;
                s.clients[c].crashed = true;
                s.clients[c].phase = Phase::Done;
                s.clients[c].mail = Mail::default();
                s.net.retain(|m| m.to_server() || m.client as usize != c);
            }
            Action::Pause(c) => s.clients[c as usize].paused = Some(s.now + self.faults.pause),
            Action::Resume(c) => s.clients[c as usize].paused = None,
            Action::Restart(n, kind) => self.restart(&mut s, n as usize, kind),
        }
        self.canonical_ids(&mut s);
        s.net.sort();
        self.update_ghosts(&mut s);
        Some(s)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        vec![
            Property::always(
                "never more inside their work than allowed",
                |m: &Sys, s: &State| {
                    let cap = match m.mode {
                        Mode::Sem { limit } => limit as usize,
                        _ => 1,
                    };
                    s.clients.iter().filter(|c| c.in_work(s.now)).count() <= cap
                },
            ),
            Property::always(
                "the fenced resource never goes back",
                |_: &Sys, s: &State| !s.fence.violated,
            ),
            Property::always(
                "a free lease with a live waiter is taken",
                |m: &Sys, s: &State| {
                    s.stuck_since
                        .is_none_or(|t| s.now - t.max(s.calm_since) <= m.liveness_bound)
                },
            ),
            Property::sometimes("two tenures", |_: &Sys, s: &State| s.tenures >= 2),
        ]
    }

    fn within_boundary(&self, s: &State) -> bool {
        s.now <= T0 + self.horizon
    }
}

// ---------------------------------------------------------------------------
// Readable traces.
// ---------------------------------------------------------------------------

/// A time relative to T0.
fn t(ms: Ms) -> String {
    if ms >= T0 {
        format!("+{}", ms - T0)
    } else {
        format!("-{}", T0 - ms)
    }
}

/// Tokens are microseconds of Redis's clock; shown relative to T0.
fn tok(x: u64) -> String {
    let t0 = T0 * 1000;
    if x >= t0 {
        format!("T+{}", x - t0)
    } else {
        x.to_string()
    }
}

impl Sys {
    /// One line per party: what each believes.
    pub fn beliefs(&self, s: &State) -> String {
        let mut out = String::new();
        for (n, sv) in s.servers.iter().enumerate() {
            let st = &sv.store;
            let r = &st.names[0].rec;
            let holder = match r.holder {
                Some(Who::Id(h)) if r.exp.unwrap_or(0) > s.now => h.short(),
                Some(Who::Id(h)) => format!("({} expired)", h.short()),
                _ => "-".into(),
            };
            let _ = write!(
                out,
                "      redis{n} (run r{}{}): holder {holder}",
                sv.run.0,
                if sv.promoted { ", promoted" } else { "" }
            );
            if let Some(e) = r.exp {
                let _ = write!(out, " until {}", t(e));
            }
            if let Some(x) = r.token {
                let _ = write!(out, " token {}", tok(x));
            }
            if let Some(x) = r.run {
                let _ = write!(out, " granted by r{}", x.0);
            }
            let q = &st.names[0].queue;
            if !q.is_empty() {
                let ids: Vec<String> = q.iter().map(|(h, _)| h.short()).collect();
                let _ = write!(out, " queue [{}]", ids.join(" "));
            }
            let slots = &st.names[0].slots;
            if !slots.is_empty() {
                let ids: Vec<String> = slots
                    .iter()
                    .map(|(h, e)| format!("{} until {}", h.short(), t(*e)))
                    .collect();
                let _ = write!(out, " slots [{}]", ids.join(", "));
            }
            if let Some(m) = st.marker {
                let _ = write!(
                    out,
                    " marker (r{} base {} longest {})",
                    m.run.0,
                    t(m.base),
                    m.max
                );
            }
            out.push('\n');
        }
        for (c, cl) in s.clients.iter().enumerate() {
            let who = cl.hid(c).short();
            let state = match &cl.phase {
                Phase::Idle => "idle".into(),
                Phase::Done => if cl.crashed { "crashed" } else { "done" }.into(),
                Phase::Attempt { sent, fast, .. } => format!(
                    "{}attempt sent {}",
                    if *fast { "fast-path " } else { "" },
                    t(*sent)
                ),
                Phase::Confirm { token, .. } => format!("confirming token {}", tok(*token)),
                Phase::Undo { outcome, .. } => format!("giving back, then {outcome:?}"),
                Phase::Sleep { until } => format!("waiting until {}", t(*until)),
                Phase::Backoff { until } => format!("backing off until {}", t(*until)),
                Phase::Claim { sent, token, .. } => format!(
                    "claiming grant token {}, renewal sent {}",
                    tok(*token),
                    t(*sent)
                ),
                Phase::Hold(h) => format!(
                    "HOLDS token {} until {} (renew at {}{}){}",
                    tok(h.token),
                    t(h.deadline),
                    t(h.due),
                    h.flight
                        .as_ref()
                        .map(|f| format!(", renewal sent {} in flight", t(f.sent)))
                        .unwrap_or_default(),
                    if cl.in_work(s.now) { " IN WORK" } else { "" }
                ),
                Phase::Stopping { until } => format!(
                    "lost (refused), stopping until {}{}",
                    t(*until),
                    if cl.in_work(s.now) { " IN WORK" } else { "" }
                ),
                Phase::Releasing { .. } => "releasing".into(),
            };
            let mut extra = String::new();
            if let Some((lq, tk)) = cl.last_held
                && cl.mail.open
            {
                let _ = write!(
                    extra,
                    "; last attempt that saw a holder sent {} (its token {})",
                    t(lq),
                    tok(tk)
                );
            }
            if let Some((tk, claim)) = cl.mail.grant {
                let _ = write!(extra, "; mailbox: grant token {} claim {claim}", tok(tk));
            }
            if cl.mail.permit || cl.mail.released {
                extra.push_str(" (woken)");
            }
            if let Some(p) = cl.paused {
                let _ = write!(extra, " PAUSED until {}", t(p));
            }
            let _ = writeln!(out, "      c{c} {who}: {state}{extra}");
        }
        if s.fence.accepted > 0 {
            let _ = writeln!(out, "      resource: highest token {}", tok(s.fence.max));
        }
        out
    }

    /// What action `a` in state `s` does, in words.
    pub fn describe(&self, s: &State, a: Action) -> String {
        let c = |c: u8| format!("c{c} {}", s.clients[c as usize].hid(c as usize).short());
        match a {
            Action::Tick => "time passes".into(),
            Action::Deliver(i, sync) => {
                let m = &s.net[i as usize];
                let w = match (self.waited(m), sync) {
                    (true, false) => " (its WAIT times out)",
                    (false, true) => ", then a snapshot is taken / the replica catches up",
                    _ => "",
                };
                let late = if m.earliest < s.now { " (late)" } else { "" };
                match &m.body {
                    Body::Req(h, r) => {
                        format!("redis{} runs {r:?} for {}{w}{late}", m.node, h.short())
                    }
                    Body::Rep(r) => {
                        format!("{} gets redis{}'s reply {r:?}{late}", c(m.client), m.node)
                    }
                    Body::Pub(e) => format!("{} receives '{}'{late}", c(m.client), e.short()),
                    Body::Reconnected => format!(
                        "{} reconnects to redis{}: renews everything, wakes its waiters",
                        c(m.client),
                        m.node
                    ),
                }
            }
            Action::Lose(i) => {
                let m = &s.net[i as usize];
                format!(
                    "FAULT: message lost: {:?} (c{} / redis{})",
                    m.body, m.client, m.node
                )
            }
            Action::Start(x) => format!("{} starts acquiring", c(x)),
            Action::Timer(x) => format!("{}: timer fires", c(x)),
            Action::Called(x) => format!("{}: woken through its mailbox", c(x)),
            Action::Woken(x) => format!("{}: woken by a release", c(x)),
            Action::Finish(x) => format!("{} finishes its work and releases", c(x)),
            Action::GiveUp(x) => format!("{} stops waiting (leaves the queue)", c(x)),
            Action::Write(x) => format!("{} writes to the fenced resource", c(x)),
            Action::Crash(x) => format!("FAULT: {} crashes", c(x)),
            Action::Pause(x) => format!("FAULT: {} pauses", c(x)),
            Action::Resume(x) => format!("{} resumes", c(x)),
            Action::Restart(n, k) => format!("FAULT: redis{n} restarts ({k:?})"),
        }
    }

    /// A path as text: for each step the time and the event, then each
    /// party's belief when it changed.
    pub fn trace(&self, path: &[(State, Option<Action>)]) -> String {
        let mut out = String::new();
        let mut shown = String::new();
        for (i, (s, a)) in path.iter().enumerate() {
            let Some(a) = a else { break };
            let next = &path[i + 1].0;
            if *a != Action::Tick {
                let _ = writeln!(out, "t={:<7} {}", t(s.now), self.describe(s, *a));
            }
            let b = self.beliefs(next);
            if b != shown {
                if *a == Action::Tick {
                    let _ = writeln!(out, "t={:<7} (time passes)", t(next.now));
                }
                out.push_str(&b);
                shown = b;
            }
        }
        out
    }
}
