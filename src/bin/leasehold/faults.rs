//! Fault-injection tools, used by `leasehold chaos` and by the test suite:
//! a TCP [`Proxy`] that can partition one client from Redis, a [`FencedResource`]
//! that keeps the highest fencing token it has seen and rejects writes with a
//! lower one, and the analysis of what the resource saw ([`analyse`]).
//!
//! Timestamps are `CLOCK_MONOTONIC` nanoseconds ([`mono_ns`]), comparable
//! across processes on one machine.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write as _};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// `CLOCK_MONOTONIC` in nanoseconds: one clock for every process on the host.
pub fn mono_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
        .unwrap_or(0)
}

pub use leasehold::supervisor::pid_alive;

/// A TCP proxy on loopback that can stop forwarding without closing
/// connections (a partition of one host) and resume (heal).
pub struct Proxy {
    pub port: u16,
    blocked: Arc<AtomicBool>,
    /// Only the server → client direction is held back (the tests use it to
    /// lose replies of requests Redis executed).
    pub(crate) replies_blocked: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards to `127.0.0.1:target_port`.
    pub fn start(target_port: u16) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        listener.set_nonblocking(true)?;
        let blocked = Arc::new(AtomicBool::new(false));
        let replies_blocked = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let (b, rb, s) = (blocked.clone(), replies_blocked.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((down, _)) => {
                        let Ok(up) = TcpStream::connect(("127.0.0.1", target_port)) else {
                            continue;
                        };
                        let directions = [
                            (down.try_clone(), up.try_clone(), b.clone()),
                            (Ok(up), Ok(down), rb.clone()),
                        ];
                        for (from, to, extra) in directions {
                            let (Ok(from), Ok(to)) = (from, to) else {
                                continue;
                            };
                            let (b, s) = (b.clone(), s.clone());
                            std::thread::spawn(move || pump(from, to, &[&b, &extra], &s));
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Ok(Proxy {
            port,
            blocked,
            replies_blocked,
            stop,
        })
    }

    /// Stops forwarding in both directions; connections stay open.
    pub fn blackhole(&self) {
        self.blocked.store(true, Ordering::SeqCst);
    }

    /// Forwards again (what was sent meanwhile is delivered late, as TCP would).
    pub fn heal(&self) {
        self.blocked.store(false, Ordering::SeqCst);
        self.replies_blocked.store(false, Ordering::SeqCst);
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream, blocked: &[&AtomicBool], stop: &AtomicBool) {
    let _ = from.set_nonblocking(false);
    let _ = from.set_read_timeout(Some(Duration::from_millis(20)));
    let mut buf = [0u8; 16384];
    while !stop.load(Ordering::SeqCst) {
        if blocked.iter().any(|b| b.load(Ordering::SeqCst)) {
            std::thread::sleep(Duration::from_millis(5));
            continue;
        }
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                // Blocked while this read was waiting: hold the data back too.
                while blocked.iter().any(|b| b.load(Ordering::SeqCst)) {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Both);
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// One write the fenced resource received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received {
    pub at_ns: u64,
    pub token: u64,
    /// The writer's supervisor (parent) and own pid.
    pub supervisor: u32,
    pub worker: u32,
    pub accepted: bool,
}

/// A resource that accepts a write only if its fencing token is at least the
/// highest it has seen. Protocol: one line `W <token> <supervisor pid> <pid>`,
/// answered `OK` or `NO`.
pub struct FencedResource {
    pub port: u16,
    writes: Arc<Mutex<Vec<Received>>>,
    stop: Arc<AtomicBool>,
}

impl FencedResource {
    pub fn start() -> std::io::Result<FencedResource> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        listener.set_nonblocking(true)?;
        let writes: Arc<Mutex<Vec<Received>>> = Default::default();
        let highest = Arc::new(Mutex::new(0u64));
        let stop = Arc::new(AtomicBool::new(false));
        let (w, s) = (writes.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let (w, h, s) = (w.clone(), highest.clone(), s.clone());
                        std::thread::spawn(move || serve(conn, &w, &h, &s));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        Ok(FencedResource { port, writes, stop })
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Everything received so far, in arrival order.
    pub fn writes(&self) -> Vec<Received> {
        self.writes.lock().map(|w| w.clone()).unwrap_or_default()
    }
}

impl Drop for FencedResource {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn serve(conn: TcpStream, writes: &Mutex<Vec<Received>>, highest: &Mutex<u64>, stop: &AtomicBool) {
    let _ = conn.set_nonblocking(false);
    let _ = conn.set_read_timeout(Some(Duration::from_millis(200)));
    let Ok(mut out) = conn.try_clone() else {
        return;
    };
    let mut lines = BufReader::new(conn);
    let mut line = String::new();
    while !stop.load(Ordering::SeqCst) {
        line.clear();
        match lines.read_line(&mut line) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue;
            }
            Err(_) => return,
        }
        let f: Vec<&str> = line.split_whitespace().collect();
        let (Some(&"W"), Some(token), Some(sup), Some(pid)) = (
            f.first(),
            f.get(1).and_then(|t| t.parse::<u64>().ok()),
            f.get(2).and_then(|t| t.parse::<u32>().ok()),
            f.get(3).and_then(|t| t.parse::<u32>().ok()),
        ) else {
            let _ = out.write_all(b"ERR\n");
            continue;
        };
        let accepted = {
            let mut h = highest.lock().unwrap_or_else(|e| e.into_inner());
            if token >= *h {
                *h = token;
                true
            } else {
                false
            }
        };
        if let Ok(mut w) = writes.lock() {
            w.push(Received {
                at_ns: mono_ns(),
                token,
                supervisor: sup,
                worker: pid,
                accepted,
            });
        }
        let _ = out.write_all(if accepted { b"OK\n" } else { b"NO\n" });
    }
}

/// One holder as the resource saw it: its first and last write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tenure {
    pub token: u64,
    pub supervisor: u32,
    pub worker: u32,
    pub first_ns: u64,
    pub last_ns: u64,
    pub writes: u64,
    pub rejected: u64,
}

/// What a run showed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Analysis {
    pub tenures: Vec<Tenure>,
    /// Total time two holders with different tokens were both writing, in ms.
    pub overlap_ms: f64,
    /// The same, minus the parts inside the given excused windows (pauses).
    pub overlap_outside_excused_ms: f64,
    /// Writes rejected for a stale token.
    pub rejected: u64,
    /// Writes accepted although a higher token had been accepted before.
    pub stale_accepted: u64,
    /// Tokens ordered by first write strictly increase.
    pub tokens_increase: bool,
}

/// Analyses the writes; `excused` are (start, end) windows where overlap is
/// expected (a frozen supervisor cannot stop its child: fencing guards).
pub fn analyse(writes: &[Received], excused: &[(u64, u64)]) -> Analysis {
    let mut by_token: BTreeMap<u64, Tenure> = BTreeMap::new();
    let mut highest = 0;
    let mut stale_accepted = 0;
    let mut rejected = 0;
    for w in writes {
        if w.accepted && w.token < highest {
            stale_accepted += 1;
        }
        if w.accepted {
            highest = highest.max(w.token);
        } else {
            rejected += 1;
        }
        let t = by_token.entry(w.token).or_insert(Tenure {
            token: w.token,
            supervisor: w.supervisor,
            worker: w.worker,
            first_ns: w.at_ns,
            last_ns: w.at_ns,
            writes: 0,
            rejected: 0,
        });
        t.first_ns = t.first_ns.min(w.at_ns);
        t.last_ns = t.last_ns.max(w.at_ns);
        t.writes += 1;
        if !w.accepted {
            t.rejected += 1;
        }
    }
    let mut tenures: Vec<Tenure> = by_token.into_values().collect();
    tenures.sort_by_key(|t| t.first_ns);
    let tokens_increase = tenures.windows(2).all(|p| p[1].token > p[0].token);
    let mut overlap = 0u64;
    let mut outside = 0u64;
    for (i, a) in tenures.iter().enumerate() {
        for b in &tenures[i + 1..] {
            let (s, e) = (a.first_ns.max(b.first_ns), a.last_ns.min(b.last_ns));
            if e <= s {
                continue;
            }
            overlap += e - s;
            let excused_part: u64 = excused
                .iter()
                .map(|(xs, xe)| {
                    let (s2, e2) = (s.max(*xs), e.min(*xe));
                    e2.saturating_sub(s2)
                })
                .sum();
            outside += (e - s).saturating_sub(excused_part);
        }
    }
    Analysis {
        tenures,
        overlap_ms: overlap as f64 / 1e6,
        overlap_outside_excused_ms: outside as f64 / 1e6,
        rejected,
        stale_accepted,
        tokens_increase,
    }
}

/// A fault injected at a moment, for the timeline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fault {
    pub at_ns: u64,
    pub kind: String,
    pub supervisor: u32,
}

/// An SVG timeline: one row per supervisor, a green bar per tenure, red where
/// two tenures overlapped, shaded where a supervisor was frozen (`excused`),
/// a dashed line per fault.
pub fn svg(
    a: &Analysis,
    faults: &[Fault],
    excused: &[(u64, u64)],
    start_ns: u64,
    end_ns: u64,
) -> String {
    let mut rows: Vec<u32> = a.tenures.iter().map(|t| t.supervisor).collect();
    rows.extend(faults.iter().map(|f| f.supervisor));
    rows.sort_unstable();
    rows.dedup();
    let width = 1000.0;
    let left = 120.0;
    let row_h = 22.0;
    let top = 30.0;
    let bottom = top + row_h * rows.len() as f64;
    let height = bottom + 40.0;
    let span = (end_ns.saturating_sub(start_ns)).max(1) as f64;
    let x = |ns: u64| left + (ns.saturating_sub(start_ns)) as f64 / span * (width - left - 10.0);
    let y = |sup: u32| top + row_h * rows.iter().position(|r| *r == sup).unwrap_or(0) as f64;
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" font-family=\"monospace\" font-size=\"11\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"5\" y=\"15\">leasehold chaos: who held the lease when ({:.1} s). green: holding; red: two holders at once; yellow: a supervisor frozen (fencing rejects its child)</text>\n",
        span / 1e9
    );
    for (s0, e0) in excused {
        out.push_str(&format!(
            "<rect x=\"{:.1}\" y=\"{top}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"#fff3b0\"/>\n",
            x(*s0),
            (x(*e0) - x(*s0)).max(1.0),
            bottom - top
        ));
    }
    for r in &rows {
        out.push_str(&format!(
            "<text x=\"5\" y=\"{:.1}\">supervisor {r}</text>\n",
            y(*r) + 14.0
        ));
    }
    for t in &a.tenures {
        out.push_str(&format!(
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"16\" fill=\"#3a7\"><title>token {} ({} writes, {} rejected)</title></rect>\n",
            x(t.first_ns),
            y(t.supervisor) + 2.0,
            (x(t.last_ns) - x(t.first_ns)).max(2.0),
            t.token,
            t.writes,
            t.rejected
        ));
    }
    for (i, t) in a.tenures.iter().enumerate() {
        for o in &a.tenures[i + 1..] {
            let (s0, e0) = (t.first_ns.max(o.first_ns), t.last_ns.min(o.last_ns));
            if e0 <= s0 {
                continue;
            }
            for sup in [t.supervisor, o.supervisor] {
                out.push_str(&format!(
                    "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"16\" fill=\"#d33\"/>\n",
                    x(s0),
                    y(sup) + 2.0,
                    (x(e0) - x(s0)).max(1.0)
                ));
            }
        }
    }
    for f in faults {
        let fx = x(f.at_ns);
        out.push_str(&format!(
            "<line x1=\"{fx:.1}\" y1=\"{top}\" x2=\"{fx:.1}\" y2=\"{bottom:.1}\" stroke=\"#555\" stroke-dasharray=\"3,2\"/>\n<text x=\"{:.1}\" y=\"{:.1}\" fill=\"#333\">{}</text>\n",
            fx + 2.0,
            y(f.supervisor) - 1.0,
            f.kind
        ));
    }
    out.push_str(&format!(
        "<text x=\"{left}\" y=\"{:.1}\" fill=\"#555\">0 s</text><text x=\"{:.1}\" y=\"{:.1}\" fill=\"#555\">{:.1} s</text>\n</svg>\n",
        bottom + 15.0,
        width - 60.0,
        bottom + 15.0,
        span / 1e9
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(at: u64, token: u64, sup: u32, accepted: bool) -> Received {
        Received {
            at_ns: at,
            token,
            supervisor: sup,
            worker: sup + 1000,
            accepted,
        }
    }

    #[test]
    fn overlap_and_fencing() {
        let writes = vec![
            w(0, 5, 1, true),
            w(10, 5, 1, true),
            w(20, 7, 2, true),
            w(25, 5, 1, false),
            w(30, 7, 2, true),
        ];
        let a = analyse(&writes, &[]);
        assert_eq!(a.overlap_ms, 5.0 / 1e6);
        assert_eq!(a.rejected, 1);
        assert_eq!(a.stale_accepted, 0);
        assert!(a.tokens_increase);
        let excused = analyse(&writes, &[(0, 100)]);
        assert_eq!(excused.overlap_outside_excused_ms, 0.0);
        let clean = analyse(&[w(0, 1, 1, true), w(5, 1, 1, true), w(6, 2, 2, true)], &[]);
        assert_eq!(clean.overlap_ms, 0.0);
        assert!(svg(&clean, &[], &[], 0, 10).contains("<rect"));
    }
}
