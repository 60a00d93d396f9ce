//! One event loop per core (`--threads N`).
//!
//! Each loop is a whole [`Server`]: its own completion queues and completion channel, its own
//! shared receive queue (with `srq`), its own pools and registered memory, its own app, its own
//! rdma_cm event channel. Nothing on the hot path is shared between loops — no lock, no atomic
//! per message. The first loop also owns the listener: on a connection request it checks the
//! allow-list, picks the loop with the fewest connections and, if that is another loop,
//! moves the new rdma_cm id onto that loop's event channel (`rdma_migrate_id`, so the
//! connection's later events arrive there) and hands it over through a channel the other loop
//! reads when idle or every 256 turns. The connection then lives on that loop until it closes;
//! connections never move between loops. Counters are kept per loop and summed when read
//! ([`LoopRun::report`]); at shutdown every loop drains its own connections and reports what
//! it still held.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;

use rpcrdma_core::wire::PrivateData;

use super::{App, Report, Server, ServerConfig, ServerStats};
use crate::cm::{CmId, EventChannel};
use crate::error::{Error, Result};

/// A connection request handed from the listening loop to another.
pub(super) struct Handed {
    pub(super) id: CmId,
    pub(super) private: Option<PrivateData>,
    pub(super) initiator_depth: u8,
}

/// What the loops share: each one's event channel and inbox, and how many connections each
/// holds (touched on connect and close only).
pub(super) struct LoopTable {
    pub(super) channels: Vec<Arc<EventChannel>>,
    senders: Vec<Sender<Handed>>,
    loads: Vec<AtomicUsize>,
}

impl LoopTable {
    /// The loop with the fewest connections (the lowest index among equals).
    pub(super) fn least_loaded(&self) -> usize {
        let mut best = 0;
        for (i, l) in self.loads.iter().enumerate() {
            if l.load(Ordering::Relaxed) < self.loads[best].load(Ordering::Relaxed) {
                best = i;
            }
        }
        best
    }

    /// A connection is now loop `i`'s (accepted there, or on its way).
    pub(super) fn assign(&self, i: usize) {
        if let Some(l) = self.loads.get(i) {
            l.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A connection of loop `i` is gone (closed, or its accept failed).
    pub(super) fn release(&self, i: usize) {
        if let Some(l) = self.loads.get(i) {
            let _ = l.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| v.checked_sub(1));
        }
    }

    /// Hands `req` to loop `to`: its id moves to that loop's event channel first. If it cannot,
    /// the connection request is rejected (the client hears at once instead of timing out).
    pub(super) fn hand(&self, to: usize, req: Handed) -> Result<()> {
        let (Some(ch), Some(tx)) = (self.channels.get(to), self.senders.get(to)) else {
            req.id.reject();
            return Err(Error::Protocol(format!("no event loop {to}")));
        };
        if let Err(e) = req.id.migrate(ch) {
            req.id.reject();
            return Err(e);
        }
        tx.send(req).map_err(|back| {
            back.0.id.reject();
            Error::Protocol(format!("event loop {to} has stopped"))
        })
    }
}

/// A loop's place among the others.
pub(super) struct LoopLink {
    pub(super) index: usize,
    pub(super) table: Arc<LoopTable>,
    pub(super) inbox: Receiver<Handed>,
}

/// What [`run_loops`] returns: each loop's outcome and report.
pub struct LoopRun {
    /// Per loop, in loop order: how its run ended and its exit report.
    pub loops: Vec<(Result<()>, Report)>,
}

impl LoopRun {
    /// The exit report of the whole server: the loops' counters summed, the apps' counters
    /// merged ([`merge_app_reports`]), one [`rpcrdma_report::LoopSummary`] per loop.
    pub fn report(&self) -> Report {
        let mut server = ServerStats::default();
        let mut memory = rpcrdma_report::Memory::default();
        let mut app = serde_json::Value::Null;
        let mut loops = Vec::new();
        for (_, r) in &self.loops {
            server.accumulate(&r.server);
            memory.rss_kib = memory.rss_kib.max(r.memory.rss_kib);
            memory.per_connection = r.memory.per_connection;
            memory.shared += r.memory.shared;
            merge_app_reports(&mut app, &r.app);
            loops.push(rpcrdma_report::LoopSummary {
                accepted: r.server.accepted,
                closed: r.server.closed,
                calls: r.server.responder.calls,
                leaked: r.server.leaked,
            });
        }
        Report {
            server,
            memory,
            app,
            loops,
        }
    }

    /// The first loop's error, if any loop failed.
    ///
    /// # Errors
    /// That error, naming its loop.
    pub fn result(&self) -> Result<()> {
        for (i, (r, _)) in self.loops.iter().enumerate() {
            if let Err(e) = r {
                return Err(Error::Protocol(format!("event loop {i}: {e}")));
            }
        }
        Ok(())
    }
}

/// Merges one loop's app report into `into`: numbers are summed, except fields named
/// `peak…` or `last…` (the largest wins); objects merge field by field.
pub fn merge_app_reports(into: &mut serde_json::Value, from: &serde_json::Value) {
    use serde_json::Value;
    match (into, from) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                match a.get_mut(k) {
                    Some(slot @ Value::Number(_))
                        if k.starts_with("peak") || k.starts_with("last") =>
                    {
                        if let (Some(x), Some(y)) = (slot.as_u64(), v.as_u64()) {
                            *slot = Value::from(x.max(y));
                        }
                    }
                    Some(slot) => merge_app_reports(slot, v),
                    None => {
                        a.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (slot @ Value::Number(_), Value::Number(y)) => {
            if let (Some(x), Some(y)) = (slot.as_u64(), y.as_u64()) {
                *slot = Value::from(x + y);
            }
        }
        (slot @ Value::Null, v) => *slot = v.clone(),
        _ => {}
    }
}

/// Runs `threads` event loops serving `cfg` (one [`Server`] each, made and run on its own
/// thread with the app `make_app(loop)` returns), until `stop(loop, counters)` is true for
/// every loop; `ready` is called once the listener is bound. With `threads == 1` this is one
/// [`Server`] on its own thread.
///
/// # Errors
/// Binding or listening failed (no loop ran). A loop's own failure is in its entry of
/// [`LoopRun::loops`].
pub fn run_loops<A, M, S>(
    cfg: ServerConfig,
    threads: usize,
    make_app: M,
    ready: impl FnOnce(),
    stop: S,
) -> Result<LoopRun>
where
    A: App,
    M: Fn(usize) -> A + Sync,
    S: Fn(usize, &ServerStats) -> bool + Sync,
{
    let threads = threads.max(1);
    crate::verbs::require_device(cfg.device.as_deref())?;
    let mut channels = Vec::new();
    let mut senders = Vec::new();
    let mut inboxes = Vec::new();
    for _ in 0..threads {
        let ch = EventChannel::new()?;
        ch.set_nonblocking()?;
        channels.push(Arc::new(ch));
        let (tx, rx) = channel();
        senders.push(tx);
        inboxes.push(rx);
    }
    let table = Arc::new(LoopTable {
        channels,
        senders,
        loads: (0..threads).map(|_| AtomicUsize::new(0)).collect(),
    });
    let listen = CmId::new(&table.channels[0])?;
    listen.listen(cfg.addr, cfg.port, 128)?;
    Server::<A>::log_listening(&cfg, threads);
    ready();
    let mut listen = Some(listen);
    let results = std::thread::scope(|scope| {
        let handles: Vec<_> = inboxes
            .into_iter()
            .enumerate()
            .map(|(i, inbox)| {
                let link = LoopLink {
                    index: i,
                    table: Arc::clone(&table),
                    inbox,
                };
                let (cfg, listen, make_app, stop) = (cfg.clone(), listen.take(), &make_app, &stop);
                std::thread::Builder::new()
                    .name(format!("rpcrdma-loop-{i}"))
                    .spawn_scoped(scope, move || {
                        let mut server = Server::member(cfg, make_app(i), link, listen);
                        let result = server.run_until(|s| stop(i, s));
                        let report = server.report();
                        if report.server.leaked != 0 {
                            log::warn!(
                                "event loop {i}: {} descriptors, calls or pages still held after teardown",
                                report.server.leaked
                            );
                        } else {
                            log::info!(
                                "event loop {i}: {} connections, {} calls, nothing held after teardown",
                                report.server.accepted,
                                report.server.responder.calls
                            );
                        }
                        (result, report)
                    })
            })
            .collect();
        handles
            .into_iter()
            .enumerate()
            .map(|(i, h)| match h {
                Ok(h) => h.join().unwrap_or_else(|_| {
                    (
                        Err(Error::Protocol(format!("event loop {i} panicked"))),
                        empty_report(),
                    )
                }),
                Err(e) => (
                    Err(Error::Protocol(format!("cannot start event loop {i}: {e}"))),
                    empty_report(),
                ),
            })
            .collect()
    });
    Ok(LoopRun { loops: results })
}

/// The report of a loop that never ran (it could not start, or panicked).
fn empty_report() -> Report {
    Report {
        server: ServerStats::default(),
        memory: rpcrdma_report::Memory::default(),
        app: serde_json::Value::Null,
        loops: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_reports_sum_counters_and_keep_the_largest_peak() {
        let mut into = serde_json::Value::Null;
        let a = serde_json::json!({"stats": {"forwarded": 3, "peak_held": 10, "last_grant": 4}, "waiting": 1});
        let b = serde_json::json!({"stats": {"forwarded": 5, "peak_held": 7, "last_grant": 9}, "waiting": 0});
        merge_app_reports(&mut into, &a);
        merge_app_reports(&mut into, &b);
        assert_eq!(
            into,
            serde_json::json!({"stats": {"forwarded": 8, "peak_held": 10, "last_grant": 9}, "waiting": 1})
        );
    }

    #[test]
    fn the_least_loaded_loop_takes_the_next_connection() {
        let (senders, _rx): (Vec<_>, Vec<_>) = (0..3).map(|_| channel::<Handed>()).unzip();
        let t = LoopTable {
            channels: Vec::new(),
            senders,
            loads: (0..3).map(|_| AtomicUsize::new(0)).collect(),
        };
        let mut picks = Vec::new();
        for _ in 0..6 {
            let i = t.least_loaded();
            t.assign(i);
            picks.push(i);
        }
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
        t.release(1);
        t.release(1);
        assert_eq!(t.least_loaded(), 1);
        t.release(1); // never below 0
        assert_eq!(t.loads[1].load(Ordering::Relaxed), 0);
    }
}
