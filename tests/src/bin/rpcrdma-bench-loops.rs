//! Scaling of the whole responder cycle over event loops: one loop per thread, each with its own
//! software NIC (its own "device", queue pair and memory), its own endpoint and its own service —
//! nothing shared, no lock — as `rpcrdma-serve --threads N` runs one loop per core.
//!
//! Each loop plays its requester too: it keeps as many calls in flight as the grant allows,
//! the NIC delivers them into posted Receives, the endpoint polls, serves and replies, and the
//! requester takes the replies. A call is either an NFS NULL (`--msg null`) or a CHECKSUM of
//! 64 KiB whose data the responder pulls with an RDMA Read (`--msg read64k`; the NIC copies it
//! from the requester's registered memory, as Soft-RoCE would).
//!
//! ```text
//! rpcrdma-bench-loops --threads N [--msg null|read64k] [--secs S] [--reps R] [--no-pin]
//! rpcrdma-bench-loops --threads N --msg M --calls K          # fixed work, for callgrind
//! ```
//! Prints one line per repetition, `loops=N msg=M calls=… secs=… calls_per_sec=…`, then
//! `median loops=N msg=M calls_per_sec=…` (the median over repetitions of the aggregate rate).
//! Threads are pinned to CPUs 0..N unless `--no-pin`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use rpcrdma_core::wire::{Proc, ReadSegment};
use rpcrdma_services::{ExampleService, NFS_PROG, PROC_CHECKSUM, TEST_PROG, TEST_VERS};
use rpcrdma_tests::fixtures::bytes;
use rpcrdma_tests::rig::{call_message, rpc_call, Rig, RigConfig};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Msg {
    Null,
    Read64k,
}

struct Args {
    threads: usize,
    msg: Msg,
    secs: f64,
    reps: usize,
    calls: Option<u64>,
    pin: bool,
}

fn usage() -> ! {
    eprintln!(
        "usage: rpcrdma-bench-loops --threads N [--msg null|read64k] [--secs S] [--reps R] \
         [--calls K] [--no-pin]"
    );
    std::process::exit(2)
}

fn parse() -> Args {
    let mut a = Args {
        threads: 1,
        msg: Msg::Null,
        secs: 2.0,
        reps: 5,
        calls: None,
        pin: true,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| usage());
        match flag.as_str() {
            "--threads" => a.threads = value().parse().unwrap_or_else(|_| usage()),
            "--msg" => {
                a.msg = match value().as_str() {
                    "null" => Msg::Null,
                    "read64k" => Msg::Read64k,
                    _ => usage(),
                }
            }
            "--secs" => a.secs = value().parse().unwrap_or_else(|_| usage()),
            "--reps" => a.reps = value().parse().unwrap_or_else(|_| usage()),
            "--calls" => a.calls = Some(value().parse().unwrap_or_else(|_| usage())),
            "--no-pin" => a.pin = false,
            _ => usage(),
        }
    }
    if a.threads == 0 || a.reps == 0 {
        usage()
    }
    a
}

/// Pins the calling thread to `cpu` (Linux); says so once if it cannot.
fn pin(cpu: usize) {
    #[cfg(target_os = "linux")]
    {
        let mask = 1u64 << (cpu % 64);
        // The affinity of the calling thread: `/proc/thread-self` names it without libc.
        let ok = std::process::Command::new("taskset")
            .args([
                "-p",
                &format!("{mask:x}"),
                &std::fs::read_link("/proc/thread-self")
                    .ok()
                    .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                    .unwrap_or_default(),
            ])
            .output()
            .is_ok_and(|o| o.status.success());
        if !ok && cpu == 0 {
            eprintln!("rpcrdma-bench-loops: could not pin threads (taskset); running unpinned");
        }
    }
}

/// One loop: its own NIC, endpoint and service. Runs until `stop` (or `calls` calls);
/// returns the calls answered.
fn run_loop(msg: Msg, stop: &AtomicBool, start: &Barrier, calls: Option<u64>) -> u64 {
    let cfg = RigConfig {
        credits: 32,
        batch: 8,
        ..RigConfig::default()
    };
    let mut rig = Rig::new(cfg, ExampleService::default());
    let call = match msg {
        Msg::Null => call_message(
            1,
            Proc::Msg,
            &[],
            None,
            None,
            &rpc_call(1, NFS_PROG, 3, 0, &[]),
        ),
        Msg::Read64k => {
            let data = vec![0x5a_u8; 65536];
            let seg = rig.source_segment(0, &data);
            let inline = rpc_call(
                1,
                TEST_PROG,
                TEST_VERS,
                PROC_CHECKSUM,
                &bytes(&[data.len() as u32]),
            );
            let reads = [ReadSegment {
                position: inline.len() as u32,
                segment: seg,
            }];
            call_message(1, Proc::Msg, &reads, None, None, &inline)
        }
    };
    start.wait();
    let mut done = 0u64;
    let mut outstanding = 0u32;
    let mut granted = 1u32;
    loop {
        if calls.is_some_and(|c| done >= c) || (calls.is_none() && stop.load(Ordering::Relaxed)) {
            break;
        }
        while outstanding < granted {
            rig.nic.deliver(&call).expect("a Receive is posted");
            outstanding += 1;
        }
        let _ = rig.endpoint.poll(&mut *rig.nic, &mut rig.service);
        while let Some(sent) = rig.nic.take_sent() {
            // The grant is the reply header's fourth word (RFC 8166 §4.2).
            if let Some(g) = sent.bytes.get(8..12) {
                granted = u32::from_be_bytes([g[0], g[1], g[2], g[3]]).max(1);
            }
            outstanding -= 1;
            done += 1;
        }
    }
    // Let what is in flight finish, so the loop ends quiet.
    rig.pump();
    assert_eq!(rig.endpoint.connection().calls_in_progress(), 0);
    done
}

fn main() {
    let a = parse();
    let mut rates = Vec::new();
    for rep in 0..a.reps {
        let stop = Arc::new(AtomicBool::new(false));
        let start = Arc::new(Barrier::new(a.threads + 1));
        let handles: Vec<_> = (0..a.threads)
            .map(|cpu| {
                let (stop, start) = (stop.clone(), start.clone());
                let (msg, calls, pin_it) = (a.msg, a.calls, a.pin);
                std::thread::spawn(move || {
                    if pin_it {
                        pin(cpu);
                    }
                    run_loop(msg, &stop, &start, calls)
                })
            })
            .collect();
        start.wait();
        let t0 = Instant::now();
        if a.calls.is_none() {
            std::thread::sleep(Duration::from_secs_f64(a.secs));
            stop.store(true, Ordering::Relaxed);
        }
        let total: u64 = handles
            .into_iter()
            .map(|h| h.join().expect("loop thread"))
            .sum();
        let secs = t0.elapsed().as_secs_f64();
        let rate = total as f64 / secs;
        println!(
            "rep={rep} loops={} msg={:?} calls={total} secs={secs:.3} calls_per_sec={rate:.0}",
            a.threads, a.msg
        );
        rates.push(rate);
    }
    rates.sort_by(|x, y| x.total_cmp(y));
    println!(
        "median loops={} msg={:?} calls_per_sec={:.0}",
        a.threads,
        a.msg,
        rates[rates.len() / 2]
    );
}
