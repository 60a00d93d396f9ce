//! End-to-end tests on real verbs (Soft-RoCE). They need an RDMA device, so they are ignored
//! in a plain `cargo test`; `cargo xtask test` runs them inside `cargo xtask vm` with
//! `--ignored` (the VM has rxe0 on 10.0.2.15). On a machine with its own RDMA device, set
//! `RPCRDMA_TEST_ADDR` to that device's IPv4 address and run them with `--ignored`.
//!
//! Each test starts `rpcrdma-serve` on its own port, drives it with `rpcrdma-load`, stops it
//! with SIGINT (or `--exit-after`), and checks both programs' reports. The server's report is
//! read back into the types it was written from ([`ServeReport`], [`Progress`]), so a renamed
//! counter breaks this file's build. Every wait is bounded:
//! a server that does not start, or does not stop, fails the test instead of hanging it.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rpcrdma_hosted::report::{parse_all, parse_last, Progress, ServeReport, PROGRESS, STATS};

/// The address of the RDMA device to test on: `RPCRDMA_TEST_ADDR`, or the VM's rxe0 address.
fn addr() -> String {
    std::env::var("RPCRDMA_TEST_ADDR").unwrap_or_else(|_| "10.0.2.15".into())
}

struct Serve {
    child: Child,
    lines: mpsc::Receiver<String>,
}

/// Event loops for every server these tests start: `RPCRDMA_TEST_THREADS` (`cargo xtask test`
/// runs the suite with 2, then the loop-specific tests again with 1), unless a test says.
fn threads() -> Option<String> {
    std::env::var("RPCRDMA_TEST_THREADS").ok()
}

fn serve(port: u16, extra: &[&str]) -> Serve {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rpcrdma-serve"));
    cmd.args(["--addr", &addr(), "--port", &port.to_string()]);
    if let Some(t) = threads().filter(|_| !extra.contains(&"--threads")) {
        cmd.args(["--threads", &t]);
    }
    let mut child = cmd
        .args(extra)
        .env("RPCRDMA_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start rpcrdma-serve");
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in stdout.lines().map_while(|l| l.ok()) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    match lines.recv_timeout(Duration::from_secs(20)) {
        Ok(line) if line.contains("ready") => Serve { child, lines },
        other => {
            let _ = child.kill();
            panic!("rpcrdma-serve did not start within 20 s: {other:?}");
        }
    }
}

impl Serve {
    /// SIGINT, wait, and parse the exit report.
    // kill(2) through FFI: the standard library only sends SIGKILL.
    #[allow(unsafe_code)]
    fn stop(self) -> (ServeReport, Vec<String>) {
        // SAFETY: signalling our own child.
        unsafe { libc_kill(self.child.id() as i32, 2) };
        self.finish()
    }

    /// Waits (at most 120 s) for the server to exit; parses its exit report.
    fn finish(mut self) -> (ServeReport, Vec<String>) {
        let deadline = Instant::now() + Duration::from_secs(120);
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("rpcrdma-serve did not exit within 120 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut lines = Vec::new();
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            lines.push(line.trim().to_string());
        }
        assert!(
            status.success(),
            "rpcrdma-serve failed: {status}; {lines:?}"
        );
        let report = parse_last(&lines.join("\n"), "rpcrdma-serve", STATS)
            .unwrap_or_else(|e| panic!("{e}; {lines:?}"));
        (report, lines)
    }
}

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

fn kv(line: &str) -> HashMap<String, u64> {
    line.split_whitespace()
        .filter_map(|f| f.split_once('='))
        .filter_map(|(k, v)| v.parse().ok().map(|v| (k.to_string(), v)))
        .collect()
}

/// RSS of each progress line (`--report-every`), in KiB.
fn rss_kib(lines: &[String]) -> Vec<u64> {
    parse_all::<Progress>(&lines.join("\n"), "rpcrdma-serve", PROGRESS)
        .map(|p| p.unwrap_or_else(|e| panic!("{e}")).rss_kib)
        .collect()
}

fn load(port: u16, args: &[&str]) -> (bool, HashMap<String, u64>, String) {
    // rpcrdma-load bounds its own waits (--timeout, default 30 s per stall).
    let out = Command::new(env!("CARGO_BIN_EXE_rpcrdma-load"))
        .args(["--addr", &addr(), "--port", &port.to_string()])
        .args(args)
        .output()
        .expect("run rpcrdma-load");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let line = text
        .lines()
        .find(|l| l.starts_with("rpcrdma-load: calls="))
        .unwrap_or("");
    (out.status.success(), kv(line), text)
}

#[test]
#[ignore = "needs Soft-RoCE: run by `cargo xtask test` inside `cargo xtask vm`"]
fn serve_load_end_to_end_many_calls_zero_lost() {
    let s = serve(20101, &[]);
    let (ok, l, text) = load(20101, &["-n", "50000", "-d", "32", "-s", "200"]);
    assert!(ok, "{text}");
    assert_eq!(l["calls"], 50_000);
    assert_eq!(l["failures"], 0);
    let (st, _) = s.stop();
    assert_eq!(st.server.responder.calls, 50_000);
    assert_eq!(st.server.leaked, 0);
    assert_eq!(
        st.server.responder.refused_completions + st.server.pool.rejected(),
        0
    );
    assert_eq!(st.server.responder.reduced_grants, 0);
    assert_eq!(st.server.pool.completed, 50_000);
    assert_eq!(st.server.pool.released, 50_000);
}

#[test]
#[ignore = "needs Soft-RoCE: run by `cargo xtask test` inside `cargo xtask vm`"]
fn srq_shared_by_several_connections() {
    let s = serve(20102, &["--srq", "--credits", "64"]);
    let (ok, l, text) = load(20102, &["-n", "5000", "-d", "8", "-c", "4", "-s", "64"]);
    assert!(ok, "{text}");
    assert_eq!(l["calls"], 20_000);
    let (st, lines) = s.stop();
    assert_eq!(st.server.accepted, 4);
    assert_eq!(st.server.responder.calls, 20_000, "{lines:?}");
    assert_eq!(st.server.leaked, 0);
}

#[test]
#[ignore = "needs Soft-RoCE: run by `cargo xtask test` inside `cargo xtask vm`"]
fn idle_connection_is_disconnected_and_reaped_busy_one_is_not() {
    // A client that went quiet (as one whose link died leaves its QP): after the idle timeout
    // the server disconnects it and reaps everything it held.
    let s = serve(20131, &["--idle-timeout", "1"]);
    let (ok, l, text) = load(20131, &["-n", "10", "-d", "2", "--hold", "4"]);
    assert!(ok && l["calls"] == 10, "{text}");
    // One that keeps calling for longer than the timeout (depth 1: several seconds) is left
    // alone.
    let (ok, l, text) = load(20131, &["-n", "30000", "-d", "1", "-s", "64"]);
    assert!(ok && l["calls"] == 30000, "{text}");
    let (st, lines) = s.stop();
    assert_eq!(st.server.idle_disconnects, 1, "{lines:?}");
    assert_eq!(st.server.closed, 2, "{lines:?}");
    assert_eq!(st.server.leaked, 0, "{lines:?}");
}

#[test]
#[ignore = "needs Soft-RoCE: run by `cargo xtask test` inside `cargo xtask vm`"]
fn disconnect_mid_load_flushes_and_returns_every_descriptor() {
    let s = serve(20103, &[]);
    let (ok, _, text) = load(20103, &["-n", "4000", "-d", "32", "--disconnect-mid"]);
    assert!(ok, "{text}");
    // The server keeps serving new connections afterwards.
    let (ok, l, text) = load(20103, &["-n", "100", "-d", "4"]);
    assert!(ok && l["calls"] == 100, "{text}");
    let (st, lines) = s.stop();
    assert_eq!(st.server.closed, 2, "{lines:?}");
    assert!(
        st.server.pool.flushed > 0,
        "posted Receives flushed at disconnect"
    );
    assert_eq!(st.server.leaked, 0, "every descriptor back after drain");
    // Flushed descriptors went to the free list, never back to the device: everything
    // posted was completed, flushed or drained.
    assert_eq!(
        st.server.pool.posted,
        st.server.pool.completed + st.server.pool.flushed + st.server.pool.drained
    );
}

#[test]
#[ignore = "needs Soft-RoCE: run by `cargo xtask test` inside `cargo xtask vm`"]
fn thousand_connect_disconnect_cycles_counters_and_rss_flat() {
    let s = serve(20104, &["--report-every", "100", "--exit-after", "1000"]);
    let t = Instant::now();
    let (ok, l, text) = load(20104, &["-n", "4", "-d", "2", "--cycles", "1000"]);
    assert!(ok, "{text}");
    assert_eq!(l["calls"], 4000);
    let (st, lines) = s.finish();
    assert_eq!(st.server.accepted, 1000);
    assert_eq!(st.server.closed, 1000);
    assert_eq!(st.server.leaked, 0);
    let rss = rss_kib(&lines);
    assert!(rss.len() >= 9, "{lines:?}");
    // After warm-up, RSS stays flat: the last report within 1 MiB of the second one.
    let (early, last) = (rss[1], *rss.last().unwrap());
    assert!(
        last <= early + 1024,
        "RSS grew from {early} KiB to {last} KiB over 1000 cycles: {rss:?}"
    );
    eprintln!("1000 cycles in {:?}; RSS {rss:?} KiB", t.elapsed());
}

#[test]
#[ignore = "needs Soft-RoCE: run by `cargo xtask test` inside `cargo xtask vm`"]
fn malformed_headers_answered_and_connection_still_serves() {
    let s = serve(20105, &[]);
    let (ok, l, text) = load(20105, &["-n", "100", "-d", "4", "--malformed"]);
    assert!(ok, "{text}");
    assert_eq!(l["malformed_checked"], 8);
    let (st, _) = s.stop();
    assert_eq!(st.server.responder.err_vers, 1);
    assert_eq!(st.server.responder.err_chunk, 5);
    assert_eq!(st.server.responder.dropped, 2);
    assert_eq!(st.server.responder.calls, 101);
}

#[test]
#[ignore = "needs Soft-RoCE: run by `cargo xtask test` inside `cargo xtask vm`"]
fn event_mode_serves() {
    let s = serve(20106, &["--event"]);
    let (ok, l, text) = load(20106, &["-n", "2000", "-d", "8"]);
    assert!(ok && l["calls"] == 2000, "{text}");
    let (st, _) = s.stop();
    assert_eq!(st.server.responder.calls, 2000);
}

#[test]
fn no_device_error_says_what_to_do() {
    // Without any RDMA device the server must say so and how to get one. With a device
    // (the VM, or a host with a real NIC) this case cannot be produced: skip.
    let has_device = std::fs::read_dir("/sys/class/infiniband")
        .map(|mut d| d.next().is_some())
        .unwrap_or(false);
    if has_device {
        eprintln!("skipped: an RDMA device is present");
        return;
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_rpcrdma-serve"))
        .args(["--port", "20199"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("rpcrdma-serve without a device did not exit within 30 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no RDMA device found") && err.contains("cargo xtask vm"),
        "{err}"
    );
    let _ = Duration::ZERO;
}

#[test]
#[ignore = "needs Soft-RoCE: run by `cargo xtask test` inside `cargo xtask vm`"]
fn every_chunk_shape_both_ways_every_byte_verified() {
    let s = serve(20107, &[]);
    let runs: [&[&str]; 8] = [
        &[
            "-n",
            "200",
            "-d",
            "8",
            "-s",
            "65536",
            "--call-chunk",
            "read",
        ],
        &[
            "-n",
            "12",
            "-d",
            "4",
            "-s",
            "1048576",
            "--call-chunk",
            "read",
        ],
        &[
            "-n",
            "200",
            "-d",
            "8",
            "-s",
            "65536",
            "--call-chunk",
            "nomsg",
        ],
        &[
            "-n",
            "12",
            "-d",
            "4",
            "-s",
            "1048000",
            "--call-chunk",
            "nomsg",
        ],
        &[
            "-n",
            "200",
            "-d",
            "8",
            "--proc",
            "generate",
            "--reply-size",
            "65536",
            "--reply-chunk",
            "write",
        ],
        &[
            "-n",
            "12",
            "-d",
            "4",
            "--proc",
            "generate",
            "--reply-size",
            "1048576",
            "--reply-chunk",
            "write",
        ],
        &[
            "-n",
            "200",
            "-d",
            "8",
            "--proc",
            "bulk",
            "--reply-size",
            "65536",
            "--reply-chunk",
            "reply",
        ],
        &[
            "-n",
            "12",
            "-d",
            "4",
            "--proc",
            "bulk",
            "--reply-size",
            "1000000",
            "--reply-chunk",
            "reply",
        ],
    ];
    let mut calls = 0;
    for args in runs {
        let (ok, l, text) = load(20107, args);
        assert!(ok, "{args:?}: {text}");
        assert_eq!(l["failures"], 0, "{text}");
        calls += l["calls"];
    }
    // ECHO: 1 MiB in through a Read chunk, out through the write chunk, with a reply chunk
    // offered too (unused: the rest fits inline).
    let (ok, l, text) = load(
        20107,
        &[
            "-n",
            "8",
            "-d",
            "2",
            "--proc",
            "echo",
            "-s",
            "1048576",
            "--reply-chunk",
            "both",
        ],
    );
    assert!(ok, "{text}");
    calls += l["calls"];
    let (st, lines) = s.stop();
    assert_eq!(st.server.responder.calls, calls, "{lines:?}");
    assert_eq!(st.server.leaked, 0);
    assert_eq!(st.server.responder.reply_too_large, 0);
    assert!(st.server.responder.read_bytes >= 200 * 65536 + 12 * 1048576 + 8 * 1048576);
    assert!(st.server.responder.write_chunk_bytes >= 200 * 65536 + 12 * 1048576 + 8 * 1048576);
    assert_eq!(st.server.responder.reply_chunk_replies, 212, "{lines:?}");
}

#[test]
#[ignore = "needs Soft-RoCE: run by `cargo xtask test` inside `cargo xtask vm`"]
fn srq_one_misbehaving_client_does_not_starve_the_others() {
    let s = serve(20108, &["--srq", "--credits", "64"]);
    let port = 20108;
    let good =
        std::thread::spawn(move || load(port, &["-n", "3000", "-d", "8", "-c", "2", "-s", "64"]));
    // A client sending a message longer than the Receive buffers: its connection fails; the
    // shared receive queue keeps serving the others.
    let (ok, _, text) = load(port, &["--oversized", "--buffer-size", "8192", "-n", "1"]);
    assert!(ok, "{text}");
    let (ok, l, text) = good.join().unwrap();
    assert!(ok, "{text}");
    assert_eq!(l["calls"], 6000);
    let (ok, l, text) = load(port, &["-n", "100", "-d", "4"]);
    assert!(
        ok && l["calls"] == 100,
        "still serving after the failure: {text}"
    );
    let (st, lines) = s.stop();
    // The bad connection's error completion closes it — or, when its CM disconnect was seen
    // first, arrives after the teardown and only returns its descriptor to the shared pool.
    assert!(
        st.server.failed_connections + st.server.stray_completions >= 1,
        "{lines:?}"
    );
    assert_eq!(st.server.accepted, 4);
    assert_eq!(st.server.leaked, 0);
    assert_eq!(st.server.responder.calls, 6100);
}

#[test]
#[ignore = "needs Soft-RoCE: run by `cargo xtask test` inside `cargo xtask vm`"]
fn credits_above_64_are_backed_no_rnr() {
    // The client uses an RNR retry count of 0, like Linux's: one Send that found no Receive
    // would break its connection and fail the run.
    let s = serve(20109, &["--credits", "128", "--batch", "16"]);
    let (ok, l, text) = load(20109, &["-n", "20000", "-d", "128", "-s", "16"]);
    assert!(ok, "{text}");
    assert_eq!(l["credits"], 128);
    let (st, _) = s.stop();
    assert_eq!(st.server.responder.reduced_grants, 0);
    assert_eq!(st.server.leaked, 0);
}

#[test]
#[ignore = "needs Soft-RoCE: run by `cargo xtask test` inside `cargo xtask vm`"]
fn thousand_cycles_with_chunk_traffic_rss_flat() {
    let s = serve(20110, &["--report-every", "100", "--exit-after", "1000"]);
    let (ok, l, text) = load(
        20110,
        &[
            "-n",
            "2",
            "-d",
            "2",
            "-s",
            "65536",
            "--call-chunk",
            "read",
            "--cycles",
            "1000",
        ],
    );
    assert!(ok, "{text}");
    assert_eq!(l["calls"], 2000);
    let (st, lines) = s.finish();
    assert_eq!(st.server.closed, 1000);
    assert_eq!(st.server.leaked, 0);
    let rss = rss_kib(&lines);
    assert!(rss.len() >= 9, "{lines:?}");
    let (early, last) = (rss[1], *rss.last().unwrap());
    assert!(
        last <= early + 1024,
        "RSS grew from {early} KiB to {last} KiB over 1000 cycles: {rss:?}"
    );
}

#[test]
#[ignore = "needs Soft-RoCE: run by `cargo xtask test` inside `cargo xtask vm`"]
fn two_loops_share_eight_connections_and_churn_with_srq() {
    // Two event loops, each with its own SRQ: eight connections under load, and a client that
    // connects and disconnects 40 times meanwhile. Every call verified (the clients use an RNR
    // retry count of 0, so an RNR would fail the run), nothing leaked in either loop.
    let s = serve(20120, &["--threads", "2", "--srq", "--credits", "64"]);
    let port = 20120;
    let busy =
        std::thread::spawn(move || load(port, &["-n", "3000", "-d", "8", "-c", "8", "-s", "512"]));
    let (ok, l, text) = load(port, &["-n", "8", "-d", "4", "--cycles", "40"]);
    assert!(ok, "{text}");
    assert_eq!(l["calls"], 320);
    let (ok, l, text) = busy.join().unwrap();
    assert!(ok, "{text}");
    assert_eq!(l["calls"], 24_000);
    let (st, lines) = s.stop();
    assert_eq!(st.server.accepted, 48, "{lines:?}");
    assert_eq!(st.server.responder.calls, 24_320);
    assert_eq!(st.server.responder.grant_overruns, 0);
    assert_eq!(st.server.leaked, 0);
    assert_eq!(st.loops.len(), 2, "one entry per loop");
    assert!(
        st.loops.iter().all(|l| l.accepted > 0 && l.leaked == 0),
        "both loops served connections and held nothing after teardown: {:?}",
        st.loops
    );
    assert_eq!(st.loops.iter().map(|l| l.calls).sum::<u64>(), 24_320);
}
