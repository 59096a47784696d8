//! One shared pub/sub connection per [`crate::Client`], for every lease it waits on.
//!
//! Why one connection: a subscription per lock exhausts connections and memory
//! under many waiting leases (redisson#3577). Channels are reference-counted:
//! the first waiter on a name subscribes (and waits for Redis to confirm, so no
//! release published after that can be missed), the last one to leave
//! unsubscribes.
//!
//! Why a wake-up per waiter: a release hands the lease to the waiter first in
//! line (the head of the lease's queue in Redis) and names it; only that
//! waiter, in whichever process it lives, is woken — with the grant in hand,
//! so it starts without a round trip of its own. The waiter after it is told
//! when that grant lapses unless claimed, and nobody else hears of it. A
//! release naming nobody wakes one local waiter.
//!
//! Failure semantics:
//! - while the connection is down, subscriptions report `confirmed() == false`
//!   and waiters fall back to bounded sleeps;
//! - after a reconnect every channel is subscribed again and every waiter is
//!   woken once, since events may have been missed in between;
//! - nothing waits on this connection unboundedly: a subscription request is
//!   answered within [`REQUEST_TIMEOUT`] (also while reconnecting), SUBSCRIBE
//!   and UNSUBSCRIBE replies are awaited at most that long, and a PING every
//!   [`KEEPALIVE`] finds a connection that stalled without closing (a
//!   partition), which is then replaced.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::sync::{Notify, broadcast, mpsc, oneshot};

/// What happened to a lease, as published by the scripts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// Acquired, with this token.
    Acquired(u64),
    /// Released (the token released); the waiter first in line, if any,
    /// should come for it.
    Released(u64, Option<String>),
    /// Released and handed to `head` with `token`, to be claimed within
    /// `claim`; `next` is the waiter after it.
    Granted {
        /// The token of the grant.
        token: u64,
        /// The waiter it is handed to.
        head: String,
        /// How long it lasts unless claimed.
        claim: Duration,
        /// The waiter after `head`, told when the grant lapses.
        next: Option<String>,
    },
    /// The holder with this token changed its value.
    Proclaimed(u64),
    /// The token cache stored a fresh value.
    Stored,
    /// The token cache's fetch failed, with this message.
    Failed(String),
    /// The subscription connection was re-established: events may have been missed.
    Reconnected,
}

impl Event {
    fn parse(payload: &str) -> Option<Event> {
        let mut parts = payload.splitn(3, ' ');
        let kind = parts.next()?;
        let token = parts.next()?.parse().ok()?;
        match kind {
            "acquired" => Some(Event::Acquired(token)),
            "released" => Some(Event::Released(
                token,
                parts.next().filter(|h| !h.is_empty()).map(str::to_string),
            )),
            "proclaimed" => Some(Event::Proclaimed(token)),
            "granted" => {
                let mut rest = parts.next()?.split(' ');
                let head = rest.next()?.to_string();
                let claim = Duration::from_millis(rest.next()?.parse().ok()?);
                let next = rest.next().filter(|n| !n.is_empty()).map(str::to_string);
                Some(Event::Granted {
                    token,
                    head,
                    claim,
                    next,
                })
            }
            "stored" => Some(Event::Stored),
            "failed" => Some(Event::Failed(parts.next().unwrap_or("").to_string())),
            _ => None,
        }
    }
}

pub(crate) struct Channel {
    name: String,
    /// Wakes one local waiter when a release names nobody.
    released: Notify,
    events: broadcast::Sender<Event>,
}

/// Local waiters by id, woken when a message names them — on the lease's
/// channel or on this client's inbox.
type Mailboxes = HashMap<String, Arc<Mailbox>>;

impl Channel {
    /// Delivers what an event means to the local waiters it names.
    fn deliver(&self, event: &Event, waiters: &Mailboxes) {
        match event {
            Event::Released(_, Some(head)) => {
                if let Some(w) = waiters.get(head) {
                    w.notify.notify_one();
                }
            }
            Event::Released(_, None) => self.released.notify_one(),
            Event::Granted {
                token,
                head,
                claim,
                next,
            } => {
                if let Some(w) = waiters.get(head) {
                    *lock_any(&w.grant) = Some(Grant {
                        token: *token,
                        claim: *claim,
                    });
                    w.notify.notify_one();
                }
                if let Some(w) = next.as_ref().and_then(|n| waiters.get(n)) {
                    *lock_any(&w.on_deck) = Some(std::time::Instant::now() + *claim);
                    w.notify.notify_one();
                }
            }
            _ => {}
        }
    }
}

/// A lease handed to a waiter on release.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Grant {
    pub token: u64,
    /// How long the grant lasts unless claimed, from the release.
    pub claim: Duration,
}

/// What one waiter is told.
#[derive(Default)]
struct Mailbox {
    notify: Notify,
    /// A grant for this waiter, not yet taken.
    grant: Mutex<Option<Grant>>,
    /// This waiter is next after a grant that lapses at this instant unless
    /// claimed: come then.
    on_deck: Mutex<Option<std::time::Instant>>,
}

fn lock_any<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Default)]
struct Registry {
    channels: HashMap<String, (Arc<Channel>, usize)>,
    /// Every local waiter, by id.
    waiters: Mailboxes,
    /// Channels Redis has confirmed on the current connection.
    confirmed: std::collections::HashSet<String>,
    /// Channels nobody waits on, since when: one linger task each (not one
    /// per waiter that came and went) unsubscribes them once idle for
    /// `LINGER`.
    idle: HashMap<String, (Instant, u64)>,
    /// Linger tasks started so far (each marks `idle` with its number).
    linger_tasks: u64,
    /// Channels Redis refused (an ACL without them) when re-subscribing after
    /// a reconnect, with its message: reported to their waiters, not waited on.
    refused: HashMap<String, String>,
}

/// Where the subscription connection goes; asked again on every reconnect.
#[derive(Clone)]
pub(crate) enum Source {
    /// Any of these servers (tried in turn); on Cluster, PUBLISH reaches all nodes.
    Clients(Vec<redis::Client>),
    /// The current master of a Sentinel group.
    Sentinel(std::sync::Arc<tokio::sync::Mutex<redis::sentinel::SentinelClient>>),
}

/// How long a subscription request, or Redis's reply to SUBSCRIBE, UNSUBSCRIBE
/// or PING, may take before the connection counts as down.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(1);
/// How often an idle subscription connection is checked with a PING.
const KEEPALIVE: Duration = Duration::from_secs(2);
/// The longest pause between reconnect attempts: after a restart, holders
/// renew (and so announce their TTLs to the new server) within about this.
const RECONNECT_MAX: Duration = Duration::from_secs(1);
/// How long a (re)connect may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

impl Source {
    async fn connect(&self, attempt: usize) -> redis::RedisResult<redis::aio::PubSub> {
        match self {
            Source::Clients(cs) => {
                let c = cs
                    .get(attempt % cs.len().max(1))
                    .ok_or_else(|| std::io::Error::other("no server to subscribe on"))?;
                c.get_async_pubsub().await
            }
            Source::Sentinel(sc) => {
                let client = sc.lock().await.async_get_client().await?;
                client.get_async_pubsub().await
            }
        }
    }
}

/// How a subscription request went.
enum Ack {
    Confirmed,
    /// No connection right now: waiters fall back to timers.
    Down,
    /// Redis answered with an error (e.g. NOPERM): retrying will not help.
    Refused(String),
}

enum Cmd {
    Subscribe(String, oneshot::Sender<Ack>),
    Unsubscribe(String),
}

/// The shared subscriber. Dropping the last handle stops its task.
#[derive(Clone)]
pub struct Notifier {
    registry: Arc<Mutex<Registry>>,
    cmds: mpsc::UnboundedSender<Cmd>,
    /// Counts reconnects after the first connection: the server may have
    /// restarted, and holders should say so to it at once.
    reconnects: tokio::sync::watch::Receiver<u64>,
}

impl Notifier {
    pub(crate) fn start(client: Source) -> Notifier {
        let registry = Arc::new(Mutex::new(Registry::default()));
        let (cmds, rx) = mpsc::unbounded_channel();
        let (tx, reconnects) = tokio::sync::watch::channel(0);
        tokio::spawn(run(client, rx, registry.clone(), tx));
        Notifier {
            registry,
            cmds,
            reconnects,
        }
    }

    /// Registers the wake-up of waiter `id`: woken when a message on any of
    /// this notifier's channels names it.
    pub(crate) fn wake(&self, id: &str) -> Wake {
        let mailbox = Arc::new(Mailbox::default());
        self.lock().waiters.insert(id.to_string(), mailbox.clone());
        Wake {
            notifier: self.clone(),
            id: id.to_string(),
            mailbox,
        }
    }

    /// True when channel `name` is subscribed and Redis confirmed it on the
    /// current connection: joining it costs no round trip.
    pub(crate) fn is_confirmed(&self, name: &str) -> bool {
        let reg = self.lock();
        reg.channels.contains_key(name) && reg.confirmed.contains(name)
    }

    /// Changes each time the subscription connection was re-established.
    pub(crate) fn reconnects(&self) -> tokio::sync::watch::Receiver<u64> {
        self.reconnects.clone()
    }

    fn lock(&self) -> MutexGuard<'_, Registry> {
        lock(&self.registry)
    }

    /// Joins channel `name`; resolves once Redis confirmed the subscription, or
    /// as soon as it is known that it could not (then `confirmed()` is false).
    ///
    /// # Errors
    /// [`crate::Error::Refused`] when Redis refuses SUBSCRIBE (ACL).
    pub(crate) async fn subscribe(&self, name: &str) -> crate::Result<Subscription> {
        let channel = {
            let mut reg = self.lock();
            let entry = reg.channels.entry(name.to_string()).or_insert_with(|| {
                let (events, _) = broadcast::channel(64);
                (
                    Arc::new(Channel {
                        name: name.to_string(),
                        released: Notify::new(),
                        events,
                    }),
                    0,
                )
            });
            entry.1 += 1;
            entry.0.clone()
        };
        let sub = Subscription {
            channel,
            notifier: self.clone(),
        };
        if let Ack::Refused(message) = sub.request().await {
            return Err(crate::Error::Refused {
                op: "SUBSCRIBE",
                message,
            });
        }
        Ok(sub)
    }
}

/// A reference to one subscribed channel; unsubscribes when the last one drops.
pub(crate) struct Subscription {
    channel: Arc<Channel>,
    notifier: Notifier,
}

impl Subscription {
    pub(crate) fn confirmed(&self) -> bool {
        self.notifier.lock().confirmed.contains(&self.channel.name)
    }

    /// Subscribes again if the connection was lost; cheap when already
    /// confirmed. False while the connection is down.
    ///
    /// # Errors
    /// [`crate::Error::Refused`] when Redis refuses the channel (ACL).
    pub(crate) async fn ensure_confirmed(&self) -> crate::Result<bool> {
        match self.request().await {
            Ack::Confirmed => Ok(true),
            Ack::Down => Ok(false),
            Ack::Refused(message) => Err(crate::Error::Refused {
                op: "SUBSCRIBE",
                message,
            }),
        }
    }

    async fn request(&self) -> Ack {
        if self.confirmed() {
            return Ack::Confirmed;
        }
        if let Some(message) = self.notifier.lock().refused.get(&self.channel.name) {
            return Ack::Refused(message.clone());
        }
        let (tx, rx) = oneshot::channel();
        if self
            .notifier
            .cmds
            .send(Cmd::Subscribe(self.channel.name.clone(), tx))
            .is_err()
        {
            return Ack::Down;
        }
        // Bounded, whatever the connection does: the waiter then falls back
        // to its timers rather than stalling.
        match tokio::time::timeout(REQUEST_TIMEOUT, rx).await {
            Ok(Ok(ack)) => ack,
            _ => Ack::Down,
        }
    }

    /// Resolves when a release naming no waiter was published (one local
    /// waiter per such release).
    pub(crate) async fn released(&self) {
        self.channel.released.notified().await
    }

    /// The wake-up of waiter `id` (see [`Notifier::wake`]).
    pub(crate) fn wake(&self, id: &str) -> Wake {
        self.notifier.wake(id)
    }

    /// True when both come through the same connection (one wake-up serves both).
    pub(crate) fn shares_notifier(&self, other: &Subscription) -> bool {
        Arc::ptr_eq(&self.notifier.registry, &other.notifier.registry)
    }

    /// Every event on this channel, for observers.
    pub(crate) fn events(&self) -> broadcast::Receiver<Event> {
        self.channel.events.subscribe()
    }
}

/// One waiter's wake-up; deregisters on drop.
pub(crate) struct Wake {
    notifier: Notifier,
    id: String,
    mailbox: Arc<Mailbox>,
}

impl Wake {
    /// Resolves when a release named or granted this waiter, or it is next
    /// after a grant (or events may have been missed).
    pub(crate) async fn called(&self) {
        self.mailbox.notify.notified().await
    }

    /// The grant a release handed to this waiter, if one came.
    pub(crate) fn take_grant(&self) -> Option<Grant> {
        lock_any(&self.mailbox.grant).take()
    }

    /// When the grant before ours lapses unless claimed, if we are next.
    pub(crate) fn take_on_deck(&self) -> Option<std::time::Instant> {
        lock_any(&self.mailbox.on_deck).take()
    }
}

impl Drop for Wake {
    fn drop(&mut self) {
        self.notifier.lock().waiters.remove(&self.id);
    }
}

/// How long a channel nobody waits on stays subscribed: a process that takes
/// the same lease again and again (a loop, a busy job) then pays no
/// SUBSCRIBE/UNSUBSCRIBE round trips.
const LINGER: Duration = Duration::from_secs(2);

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut reg = self.notifier.lock();
        let last = match reg.channels.get_mut(&self.channel.name) {
            Some(entry) => {
                entry.1 -= 1;
                entry.1 == 0
            }
            None => false,
        };
        if !last {
            return;
        }
        let name = self.channel.name.clone();
        // A linger task for this channel is pending already: it sees the
        // new idle instant and waits on from there.
        if let Some(idle) = reg.idle.get_mut(&name) {
            idle.0 = Instant::now();
            return;
        }
        reg.linger_tasks += 1;
        let task = reg.linger_tasks;
        reg.idle.insert(name.clone(), (Instant::now(), task));
        drop(reg);
        let pending = Pending {
            notifier: self.notifier.clone(),
            name,
            task,
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(async move {
                    let mut left = LINGER;
                    loop {
                        tokio::time::sleep(left).await;
                        match pending.check() {
                            Some(more) => left = more,
                            None => break,
                        }
                    }
                });
            }
            Err(_) => {
                let _ = pending.check();
            }
        }
    }
}

/// A channel's linger task: its mark in `Registry::idle` goes with it, however
/// it ends (a task dropped with its runtime must not leave the channel marked
/// as lingering: the next waiter to go would start no task of its own).
struct Pending {
    notifier: Notifier,
    name: String,
    task: u64,
}

impl Pending {
    /// How much longer to wait before unsubscribing; `None` when done:
    /// unsubscribed, or the channel is in use again (its mark is removed
    /// with the lock held, so the next waiter to go starts a task of its own).
    fn check(&self) -> Option<Duration> {
        let mut reg = self.notifier.lock();
        let since = match reg.idle.get(&self.name) {
            Some((since, task)) if *task == self.task => *since,
            _ => return None,
        };
        if reg.channels.get(&self.name).is_some_and(|e| e.1 > 0) {
            reg.idle.remove(&self.name);
            return None;
        }
        let left = LINGER.saturating_sub(since.elapsed());
        if !left.is_zero() && tokio::runtime::Handle::try_current().is_ok() {
            return Some(left);
        }
        reg.idle.remove(&self.name);
        if reg.channels.remove(&self.name).is_some() {
            drop(reg);
            let _ = self.notifier.cmds.send(Cmd::Unsubscribe(self.name.clone()));
        }
        None
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        let mut reg = self.notifier.lock();
        if reg
            .idle
            .get(&self.name)
            .is_some_and(|(_, t)| *t == self.task)
        {
            // Ended early (its runtime shut down, or a panic): nobody else
            // would give the channel up.
            reg.idle.remove(&self.name);
            if reg.channels.get(&self.name).is_some_and(|e| e.1 == 0) {
                reg.channels.remove(&self.name);
                drop(reg);
                let _ = self.notifier.cmds.send(Cmd::Unsubscribe(self.name.clone()));
            }
        }
    }
}

fn lock(m: &Mutex<Registry>) -> MutexGuard<'_, Registry> {
    // A panic while holding this lock leaves plain data behind; keep going.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn wake_all(registry: &Mutex<Registry>) {
    let reg = lock(registry);
    for (ch, _) in reg.channels.values() {
        ch.released.notify_waiters();
        let _ = ch.events.send(Event::Reconnected);
    }
    for w in reg.waiters.values() {
        w.notify.notify_one();
    }
}

/// A server error (the connection is fine) rather than a broken connection.
fn refused(e: &redis::RedisError) -> Option<String> {
    let unreachable = crate::error::fault(e) == crate::error::Fault::Unreachable;
    (!unreachable).then(|| e.to_string())
}

/// Waits `d` while answering subscription requests with `Down`. False when
/// every handle is gone.
async fn pause(d: Duration, cmds: &mut mpsc::UnboundedReceiver<Cmd>) -> bool {
    let until = tokio::time::sleep(d);
    tokio::pin!(until);
    loop {
        tokio::select! {
            _ = &mut until => return true,
            cmd = cmds.recv() => match cmd {
                None => return false,
                Some(Cmd::Subscribe(_, ack)) => { let _ = ack.send(Ack::Down); }
                Some(Cmd::Unsubscribe(_)) => {}
            }
        }
    }
}

/// Connects, answering subscription requests with `Down` meanwhile, so that
/// a slow or partitioned server never holds up a waiter. `None` when every
/// handle is gone.
async fn connect(
    client: &Source,
    attempt: usize,
    cmds: &mut mpsc::UnboundedReceiver<Cmd>,
) -> Option<redis::RedisResult<redis::aio::PubSub>> {
    let connecting = tokio::time::timeout(CONNECT_TIMEOUT, client.connect(attempt));
    tokio::pin!(connecting);
    loop {
        tokio::select! {
            r = &mut connecting => {
                return Some(r.unwrap_or_else(|_| {
                    Err(std::io::Error::from(std::io::ErrorKind::TimedOut).into())
                }));
            }
            cmd = cmds.recv() => match cmd {
                None => return None,
                Some(Cmd::Subscribe(_, ack)) => { let _ = ack.send(Ack::Down); }
                Some(Cmd::Unsubscribe(_)) => {}
            }
        }
    }
}

/// A reply from Redis on the subscription connection, bounded in time. An
/// error that is not Redis refusing (I/O, timeout) means the connection is down.
async fn bounded<T>(
    f: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> redis::RedisResult<T> {
    tokio::time::timeout(REQUEST_TIMEOUT, f)
        .await
        .unwrap_or_else(|_| Err(std::io::Error::from(std::io::ErrorKind::TimedOut).into()))
}

async fn run(
    client: Source,
    mut cmds: mpsc::UnboundedReceiver<Cmd>,
    registry: Arc<Mutex<Registry>>,
    reconnects: tokio::sync::watch::Sender<u64>,
) {
    let mut backoff = Duration::from_millis(50);
    let mut attempt = 0usize;
    let mut connected_before = false;
    loop {
        let Some(pubsub) = connect(&client, attempt, &mut cmds).await else {
            return;
        };
        attempt += 1;
        let Ok(pubsub) = pubsub else {
            // Down: refuse subscriptions until we are back, so waiters use timers.
            if !pause(backoff, &mut cmds).await {
                return;
            }
            backoff = (backoff * 2).min(RECONNECT_MAX);
            continue;
        };
        let (mut sink, mut stream) = pubsub.split();
        let connected_at = std::time::Instant::now();
        if connected_before {
            reconnects.send_modify(|n| *n += 1);
        }
        connected_before = true;
        let names: Vec<String> = lock(&registry).channels.keys().cloned().collect();
        let mut ok = true;
        for name in &names {
            match bounded(sink.subscribe(name)).await {
                Ok(()) => {
                    let mut reg = lock(&registry);
                    reg.refused.remove(name);
                    reg.confirmed.insert(name.clone());
                }
                // Refused for this channel (ACL): its waiters are told.
                Err(e) if refused(&e).is_some() => {
                    lock(&registry).refused.insert(name.clone(), e.to_string());
                }
                Err(_) => {
                    ok = false;
                    break;
                }
            }
        }
        if ok {
            wake_all(&registry);
            let mut keepalive = tokio::time::interval(KEEPALIVE);
            keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            keepalive.reset();
            loop {
                tokio::select! {
                    msg = stream.next() => {
                        let Some(msg) = msg else { break };
                        keepalive.reset();
                        let name = msg.get_channel_name().to_string();
                        let Ok(payload) = msg.get_payload::<String>() else { continue };
                        let Some(event) = Event::parse(&payload) else { continue };
                        let reg = lock(&registry);
                        if let Some((ch, _)) = reg.channels.get(&name) {
                            ch.deliver(&event, &reg.waiters);
                            let _ = ch.events.send(event);
                        }
                    }
                    _ = keepalive.tick() => {
                        // A partition does not close the connection: ask.
                        if bounded(sink.ping::<redis::Value>()).await.is_err() {
                            break;
                        }
                    }
                    cmd = cmds.recv() => match cmd {
                        None => return,
                        Some(Cmd::Subscribe(name, ack)) => {
                            match bounded(sink.subscribe(&name)).await {
                                Ok(()) => {
                                    let mut reg = lock(&registry);
                                    reg.refused.remove(&name);
                                    reg.confirmed.insert(name);
                                    let _ = ack.send(Ack::Confirmed);
                                }
                                Err(e) => match refused(&e) {
                                    Some(msg) => { let _ = ack.send(Ack::Refused(msg)); }
                                    None => {
                                        let _ = ack.send(Ack::Down);
                                        break;
                                    }
                                },
                            }
                        }
                        Some(Cmd::Unsubscribe(name)) => {
                            // One lock: a waiter joining in between must not
                            // find the channel still confirmed (and send no
                            // SUBSCRIBE) just before it is unsubscribed.
                            let unwanted = {
                                let mut reg = lock(&registry);
                                let unwanted = !reg.channels.contains_key(&name);
                                if unwanted {
                                    reg.confirmed.remove(&name);
                                }
                                unwanted
                            };
                            if unwanted && bounded(sink.unsubscribe(&name)).await.is_err() { break; }
                        }
                    }
                }
            }
        }
        lock(&registry).confirmed.clear();
        wake_all(&registry);
        // A connection that failed at once is not retried in a tight loop.
        if connected_at.elapsed() < Duration::from_secs(1) {
            if !pause(backoff, &mut cmds).await {
                return;
            }
            backoff = (backoff * 2).min(RECONNECT_MAX);
        } else {
            backoff = Duration::from_millis(50);
        }
    }
}
