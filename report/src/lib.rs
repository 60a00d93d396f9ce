//! # rpcrdma-report
//!
//! What the hosted programs report, defined once as typed structs and written and read with
//! serde. `rpcrdma-serve` and `rpcrdma-gateway` print one line of JSON when they exit:
//!
//! ```text
//! rpcrdma-serve: stats {"server":{"accepted":1,…,"pool":{…},"responder":{…}},"memory":{…},…}
//! ```
//!
//! that is, `PROGRAM: TAG JSON` ([`format_line`]), with the tag [`STATS`] and a [`Report`] as
//! the JSON; `rpcrdma-serve --report-every N` also prints [`Progress`] lines tagged
//! [`PROGRESS`]. The tests (`hosted/tests/verbs_e2e.rs`) and the xtask (`cargo xtask demo`,
//! `interop`, `bench vm`) read those lines back with [`parse_last`] / [`parse_all`] into the
//! same types, so a counter that is renamed or removed breaks their build, not a run inside the
//! VM.
//!
//! The counters inside come from the core ([`Counters`], [`ResponderCounters`], with its
//! `serde` feature) and the services ([`ServiceStats`]); the server's own ([`ServerStats`]) and
//! the gateway's ([`GatewayStats`]) are defined here. This crate has no verbs code, so the
//! xtask can depend on it and still build on a machine whose verbs headers `cargo xtask setup`
//! has not installed yet.

use std::fmt;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

pub use rpcrdma_core::pool::Counters;
pub use rpcrdma_core::responder::ResponderCounters;
pub use rpcrdma_services::ServiceStats;

/// The tag of the exit report line: `PROGRAM: stats {…}`.
pub const STATS: &str = "stats";
/// The tag of `rpcrdma-serve`'s periodic line (`--report-every`): `PROGRAM: progress {…}`.
pub const PROGRESS: &str = "progress";

/// What the server did, for its exit report and the tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerStats {
    /// Connections accepted.
    pub accepted: u64,
    /// Connections torn down.
    pub closed: u64,
    /// Connection requests rejected.
    pub rejected: u64,
    /// Connections that failed without a CM event (flush or error completion) and were
    /// disconnected by the server.
    pub failed_connections: u64,
    /// Connections disconnected because nothing arrived on them for the idle timeout.
    #[serde(default)]
    pub idle_disconnects: u64,
    /// Completions for no known connection.
    pub stray_completions: u64,
    /// Descriptors, calls or pages still held after teardown (must be 0).
    pub leaked: u64,
    /// Receive-pool counters (all connections and the shared pool).
    pub pool: Counters,
    /// Responder counters (all connections).
    pub responder: ResponderCounters,
}

impl ServerStats {
    /// Adds `other` into `self` (summing event loops).
    pub fn accumulate(&mut self, other: &ServerStats) {
        let o = other;
        self.accepted += o.accepted;
        self.closed += o.closed;
        self.rejected += o.rejected;
        self.failed_connections += o.failed_connections;
        self.idle_disconnects += o.idle_disconnects;
        self.stray_completions += o.stray_completions;
        self.leaked += o.leaked;
        self.pool.accumulate(&o.pool);
        self.responder.accumulate(&o.responder);
    }
}

/// One event loop's share of a server's work (`--threads`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoopSummary {
    /// Connections the loop accepted.
    pub accepted: u64,
    /// Connections it tore down.
    pub closed: u64,
    /// Calls it answered.
    pub calls: u64,
    /// What it still held after its teardown (must be 0).
    pub leaked: u64,
}

/// Memory figures of a server.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Memory {
    /// Resident set size of the process when the report was made, in KiB.
    pub rss_kib: u64,
    /// Bytes of registered memory per connection: its Receive buffers (none with an SRQ) and
    /// its send slots.
    pub per_connection: u64,
    /// Bytes of registered memory shared by all connections: Read sinks, payload pages, and
    /// the SRQ's Receive buffers.
    pub shared: u64,
}

/// The exit report of a server running an app whose own counters are `A`.
///
/// The server writes `A = serde_json::Value` (whatever the app's report hook returned); a
/// reader that knows the app names its type: [`ServeReport`], [`GatewayReport`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report<A = serde_json::Value> {
    /// The server's, the receive pools' and the responders' counters.
    pub server: ServerStats,
    /// Registered memory and RSS.
    pub memory: Memory,
    /// The app's own counters.
    pub app: A,
    /// Per event loop (`--threads`; one entry per loop, in loop order): the server's figures
    /// above are their sums.
    #[serde(default)]
    pub loops: Vec<LoopSummary>,
}

/// `rpcrdma-serve`'s report: the example service's counters as the app's.
pub type ServeReport = Report<ServiceStats>;
/// `rpcrdma-gateway`'s report.
pub type GatewayReport = Report<GatewayApp>;

/// The gateway's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayStats {
    /// Calls forwarded to the backend.
    pub forwarded: u64,
    /// Replies from the backend handed back.
    pub replies: u64,
    /// Calls answered with SYSTEM_ERR (their deadline passed without a reply).
    pub backend_errors: u64,
    /// Calls whose deadline passed (answered SYSTEM_ERR).
    #[serde(default)]
    pub expired: u64,
    /// Backend connections lost (reset, closed, a failed read or write).
    #[serde(default)]
    pub backend_failures: u64,
    /// Backend connections made again after a loss (from the same local port).
    #[serde(default)]
    pub reconnects: u64,
    /// Calls sent again, byte for byte with the client's xid, after a reconnect.
    #[serde(default)]
    pub resent: u64,
    /// Most bytes of calls held for the backend at once, all connections.
    #[serde(default)]
    pub peak_held: u64,
    /// Most bytes of calls held for the backend at once by one connection.
    #[serde(default)]
    pub peak_held_per_connection: u64,
    /// Backend connections made.
    pub backend_connects: u64,
    /// Bytes of calls sent to the backend (record marks included).
    pub bytes_out: u64,
    /// Bytes of replies from the backend.
    pub bytes_in: u64,
    /// Bytes sent as DDP-eligible payloads (READ data, READLINK paths).
    pub ddp_bytes: u64,
    /// Of `ddp_bytes`, those read from the backend's socket straight into payload pages (not
    /// copied by the gateway).
    #[serde(default)]
    pub direct_bytes: u64,
    /// Bytes sent as non-DDP bulk (the part of a large reply beyond a send slot).
    pub bulk_bytes: u64,
    /// Replies from the backend that matched no waiting call.
    pub unmatched: u64,
    /// Callbacks (the backend's RPC calls to the client, NFSv4.1's backchannel) sent to the
    /// client as backward calls (RFC 8167).
    #[serde(default)]
    pub callbacks: u64,
    /// The client's replies to them written to the backend.
    #[serde(default)]
    pub callback_replies: u64,
    /// Callbacks that got no reply (refused, past their deadline).
    #[serde(default)]
    pub callbacks_failed: u64,
    /// Callbacks dropped because too many waited for the client's backward credits.
    #[serde(default)]
    pub callbacks_dropped: u64,
}

/// The gateway's part of its report: its counters and what it still waited for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayApp {
    /// Counters.
    pub stats: GatewayStats,
    /// Calls still waiting for the backend when the report was made.
    pub waiting: u64,
}

/// `rpcrdma-serve --report-every N`: a line every N closed connections (leak tests).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// Connections torn down so far.
    pub closed: u64,
    /// Resident set size of the process, in KiB.
    pub rss_kib: u64,
    /// Descriptors, calls or pages still held after the teardowns so far.
    pub leaked: u64,
}

/// `PROGRAM: TAG JSON`, one line (no newline).
///
/// # Panics
/// Never for the types of this crate (their JSON cannot fail); a `Serialize` impl of the
/// caller's that returns an error panics.
pub fn format_line<T: Serialize + ?Sized>(program: &str, tag: &str, value: &T) -> String {
    let json = serde_json::to_string(value).expect("a report serialises");
    format!("{program}: {tag} {json}")
}

/// Why a report line could not be read.
#[derive(Debug)]
pub enum ParseError {
    /// No line starts with `PROGRAM: TAG `.
    Missing {
        /// `PROGRAM: TAG`.
        prefix: String,
    },
    /// The line is there, but its JSON is not the type asked for.
    Json {
        /// The line.
        line: String,
        /// What serde said.
        error: serde_json::Error,
    },
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::Missing { prefix } => write!(f, "no `{prefix} {{…}}` line in the output"),
            ParseError::Json { line, error } => write!(f, "{error} in the report line `{line}`"),
        }
    }
}

impl std::error::Error for ParseError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ParseError::Missing { .. } => None,
            ParseError::Json { error, .. } => Some(error),
        }
    }
}

/// Every `PROGRAM: TAG JSON` line of `output` (surrounding white space ignored), parsed, in
/// order; other lines are skipped.
pub fn parse_all<'a, T: DeserializeOwned>(
    output: &'a str,
    program: &'a str,
    tag: &'a str,
) -> impl Iterator<Item = Result<T, ParseError>> + 'a {
    output.lines().filter_map(move |l| {
        let l = l.trim();
        let json = l
            .strip_prefix(program)?
            .strip_prefix(": ")?
            .strip_prefix(tag)?
            .strip_prefix(' ')?;
        Some(
            serde_json::from_str(json).map_err(|error| ParseError::Json {
                line: l.to_string(),
                error,
            }),
        )
    })
}

/// The last `PROGRAM: TAG JSON` line of `output`, parsed.
///
/// # Errors
/// [`ParseError::Missing`] without such a line; [`ParseError::Json`] if its JSON is not a `T`.
pub fn parse_last<T: DeserializeOwned>(
    output: &str,
    program: &str,
    tag: &str,
) -> Result<T, ParseError> {
    parse_all(output, program, tag).last().unwrap_or_else(|| {
        Err(ParseError::Missing {
            prefix: format!("{program}: {tag}"),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ServeReport {
        let mut r = ServeReport {
            server: ServerStats {
                accepted: 3,
                closed: 3,
                leaked: 0,
                ..ServerStats::default()
            },
            memory: Memory {
                rss_kib: 5000,
                per_connection: 589_824,
                shared: 16 << 20,
            },
            app: ServiceStats {
                null: 7,
                errors: 1,
                ..ServiceStats::default()
            },
            loops: vec![LoopSummary {
                accepted: 3,
                closed: 3,
                calls: 42,
                leaked: 0,
            }],
        };
        r.server.pool.posted = u64::MAX; // no precision lost on the way
        r.server.responder.calls = 42;
        r.server.responder.last_grant = 64;
        r
    }

    #[test]
    fn a_report_line_reads_back_as_the_same_value() {
        let r = sample();
        let out = format!(
            "rpcrdma-serve: ready\nsomething else\n{}\r\n",
            format_line("rpcrdma-serve", STATS, &r)
        );
        let back: ServeReport = parse_last(&out, "rpcrdma-serve", STATS).unwrap();
        assert_eq!(back, r);
        // The server writes the app's part as a JSON value; a reader names its type.
        let untyped = Report {
            server: r.server,
            memory: r.memory,
            app: serde_json::to_value(r.app).unwrap(),
            loops: r.loops.clone(),
        };
        let out = format_line("rpcrdma-serve", STATS, &untyped);
        assert_eq!(
            parse_last::<ServeReport>(&out, "rpcrdma-serve", STATS).unwrap(),
            r
        );
    }

    #[test]
    fn the_counters_are_nested_under_their_own_names() {
        let v = serde_json::to_value(sample()).unwrap();
        assert_eq!(v["server"]["responder"]["calls"], 42);
        assert_eq!(v["server"]["pool"]["posted"], u64::MAX);
        assert_eq!(v["memory"]["per_connection"], 589_824);
        assert_eq!(v["app"]["null"], 7);
    }

    #[test]
    fn every_line_in_order_and_only_those_of_the_program_and_tag() {
        let out = [
            format_line(
                "rpcrdma-serve",
                PROGRESS,
                &Progress {
                    closed: 100,
                    rss_kib: 9,
                    leaked: 0,
                },
            ),
            format_line("rpcrdma-gateway", PROGRESS, &Progress::default()),
            "rpcrdma-serve: progressive nonsense".to_string(),
            format_line(
                "rpcrdma-serve",
                PROGRESS,
                &Progress {
                    closed: 200,
                    rss_kib: 10,
                    leaked: 0,
                },
            ),
            format_line("rpcrdma-serve", STATS, &sample()),
        ]
        .join("\n");
        let closed: Vec<u64> = parse_all::<Progress>(&out, "rpcrdma-serve", PROGRESS)
            .map(|p| p.unwrap().closed)
            .collect();
        assert_eq!(closed, [100, 200]);
    }

    #[test]
    fn a_missing_line_and_a_wrong_type_are_errors_that_say_so() {
        let e =
            parse_last::<ServeReport>("rpcrdma-serve: ready", "rpcrdma-serve", STATS).unwrap_err();
        assert!(matches!(e, ParseError::Missing { .. }));
        assert!(e.to_string().contains("rpcrdma-serve: stats"), "{e}");
        // A gateway report read as rpcrdma-serve's: its app part has other fields.
        let gw = GatewayReport {
            server: ServerStats::default(),
            memory: Memory::default(),
            app: GatewayApp::default(),
            loops: Vec::new(),
        };
        let out = format_line("rpcrdma-serve", STATS, &gw);
        let e = parse_last::<ServeReport>(&out, "rpcrdma-serve", STATS).unwrap_err();
        assert!(matches!(e, ParseError::Json { .. }), "{e}");
    }
}
