//! `cargo xtask wire`: the hosted programs across a wire between two kernels, with node B an
//! aarch64 machine (a DPU's Arm cores) — one pair boot (`vm --nodes 2`):
//!
//! 1. **aarch64 server, x86_64 client.** Node B runs the aarch64 `rpcrdma-serve`; node A's
//!    `rpcrdma-load` sends inline, Read-chunk, position-zero (RDMA_NOMSG), write-chunk and
//!    reply-chunk calls, every reply verified, then malformed headers. The server's report must
//!    show 0 leaked.
//! 2. **The DPU picture.** Node A is both the remote NFS client and the DPU's host: its nfsd
//!    serves a tmpfs over TCP. Node B (the DPU) runs the aarch64 `rpcrdma-gateway`, which
//!    terminates NFS/RDMA from the wire and forwards to node A's nfsd over TCP across the same
//!    wire. Node A's kernel client mounts through node B with no `vers=` (NFSv4.2) and runs the
//!    interop workload (files written and read back by SHA-256, a directory listed, rename,
//!    symlink, remove) and a delegation recall over the backchannel. nfsd runs on node A
//!    because the host's x86_64 NFS programs (`rpc.nfsd`, `rpc.mountd`, `exportfs`) run there
//!    as they are; on a real DPU nfsd runs on the host too, which is the point of the gateway.
//! 3. **The link fails.** `ip link set eth0 down` on node A for 5 s in the middle of a write
//!    to the hard mount, then up: the write must finish with the right checksum, and any
//!    connection the client gave up must be reaped by the gateway (closed, nothing held):
//!    the write was in flight, so a connection that died has a Read or Send of the gateway's
//!    run out of retries, and is torn down then. Often the RC retransmissions outlast 5 s and
//!    the connection survives. (The gateway's idle timeout, for a dead connection with nothing
//!    in flight, keeps its default of 360 s here: it must stay well above the client's RPC
//!    timeout, 60 s for NFS over RDMA, or a client that reconnected and waits out that
//!    timeout before resending is disconnected again and again — measured with 15 s.)
//! 4. **The server node reboots.** In the middle of another write node B powers off at once
//!    (`sysrq o`: no FIN, no DREQ, as a crash); the pair boots it again, its gateway comes
//!    back, the client reconnects and the write finishes with the right checksum.
//!
//! Node B listens for commands from node A on TCP port 7999 over the wire (busybox `nc`); the
//! reports of its programs go to its output, which this task reads. Needs `cargo xtask setup
//! --aarch64` (arm64 libraries) and `cargo xtask cross --hosted` (run here first).

use std::ffi::OsString;
use std::time::Duration;

use rpcrdma_report::{parse_last, GatewayReport, ServeReport, STATS};

use crate::interop::{nfs_server_prelude_for, WORKLOAD_FNS};
use crate::rdma::{bin, build_release};
use crate::util::{self, Context, Result};
use crate::vm::pair::{self, PairOptions, PairRun};
use crate::vm::Arch;

/// The control port node B listens on.
const CTL_PORT: u16 = 7999;

/// Where the hosted binaries for `arch` are (built by `build_release` / `cross --hosted`).
pub fn bin_for(arch: Arch, name: &str) -> String {
    match arch {
        Arch::X86_64 => bin(name),
        Arch::Aarch64 => util::root()
            .join("target/aarch64-hosted")
            .join(crate::cross::hosted::TRIPLE)
            .join("release")
            .join(name)
            .display()
            .to_string(),
    }
}

/// Builds what each node runs: the host's release binaries for node A, the aarch64 ones for
/// node B.
pub fn build(arch_b: Arch) -> Result<()> {
    build_release()?;
    if arch_b == Arch::Aarch64 {
        crate::cross::hosted::cross_hosted(&[])?;
    }
    Ok(())
}

/// Node B's script: a control loop that starts and stops its programs when node A says so.
/// Runs under busybox sh on aarch64 (bash on x86_64); `ctl.sh` handles one command per
/// connection and answers `ok …` or `err …`.
pub fn node_b_script(arch_b: Arch) -> String {
    let (serve, gateway) = (
        bin_for(arch_b, "rpcrdma-serve"),
        bin_for(arch_b, "rpcrdma-gateway"),
    );
    format!(
        r#"echo "node b: boot $XTASK_BOOT, $(uname -m), $XTASK_NODE_ADDR"
cat > /tmp/ctl.sh <<'EOF'
# one command from node A: stdin/stdout are the connection, stderr is node B's output
read -r cmd arg
ready() {{ # ready FILE: until the program says it listens (10 s)
  i=0; while [ $i -lt 100 ]; do grep -q ready "$1" 2>/dev/null && return 0; sleep 0.1; i=$((i+1)); done; return 1
}}
stop() {{ # stop NAME: SIGINT, then until its report is out (60 s)
  kill -INT "$(cat /tmp/$1.pid)" 2>/dev/null
  i=0; while [ $i -lt 600 ]; do grep -q ': stats ' /tmp/$1.out 2>/dev/null && break; sleep 0.1; i=$((i+1)); done
  echo "node b: $1 stopped" >&2
  cat /tmp/$1.out >&2
  grep -E 'WARN|ERROR' /tmp/$1.err | head -20 >&2
  grep -q ': stats ' /tmp/$1.out
}}
case "$cmd" in
  serve)
    RPCRDMA_LOG=info {serve} --addr $XTASK_NODE_ADDR --credits 64 < /dev/null > /tmp/serve.out 2> /tmp/serve.err &
    echo $! > /tmp/serve.pid
    ready /tmp/serve.out && echo "ok serve" || {{ echo "err serve: $(tail -3 /tmp/serve.err)"; }} ;;
  gateway)
    RPCRDMA_LOG=info {gateway} --device rxe0 --backend $XTASK_PEER_ADDR:2049 --allow $XTASK_PEER_ADDR/32 --event < /dev/null > /tmp/gateway.out 2> /tmp/gateway.err &
    echo $! > /tmp/gateway.pid
    ready /tmp/gateway.out && echo "ok gateway" || {{ echo "err gateway: $(tail -3 /tmp/gateway.err)"; }} ;;
  stop)
    stop "$arg" && echo "ok stop $arg" || echo "err stop $arg: no report" ;;
  log)
    echo "node b: the log of $arg" >&2; cat /tmp/$arg.err >&2
    echo "node b: the kernel's last lines" >&2; dmesg | tail -20 >&2; echo "ok log" ;;
  conns)
    echo "ok accepted=$(grep -c 'accepted qp' /tmp/$arg.err) closed=$(grep -c 'closed qp' /tmp/$arg.err)" ;;
  perf-server)
    $arg < /dev/null > /tmp/perf.out 2>&1 &
    echo $! > /tmp/perf.pid; sleep 1; echo "ok perf-server" ;;
  perf-client)
    i=0; while [ $i -lt 10 ]; do $arg $XTASK_PEER_ADDR < /dev/null > /tmp/perf.out 2>&1 && break; sleep 0.5; i=$((i+1)); done
    echo "ok $(grep -E '^ *[0-9]+ +[0-9]+ ' /tmp/perf.out | tail -1 | tr -s ' ')" ;;
  perf-wait)
    i=0; while [ $i -lt 600 ] && kill -0 "$(cat /tmp/perf.pid)" 2>/dev/null; do sleep 0.1; i=$((i+1)); done
    echo "ok $(grep -E '^ *[0-9]+ +[0-9]+ ' /tmp/perf.out | tail -1 | tr -s ' ')" ;;
  crash)
    echo "node b: powering off at once (boot $XTASK_BOOT)" >&2
    (sleep 0.5; echo o > /proc/sysrq-trigger) < /dev/null > /dev/null 2>&1 &
    echo "ok crash" ;;
  done)
    : > /tmp/done; echo "ok done" ;;
  *) echo "err unknown command $cmd" ;;
esac
EOF
echo "node b: listening for commands on {port}"
while [ ! -e /tmp/done ]; do busybox nc -l -p {port} -e sh /tmp/ctl.sh; done
echo "node b: done"
"#,
        port = CTL_PORT
    )
}

/// Shell functions (bash) for node A: `ctl COMMAND [ARG]` sends a command to node B and prints
/// its answer (waits for node B to come up, up to 5 min), failing unless it begins with `ok`.
const CTL_FNS: &str = r#"ctl() {
  local r i
  for i in $(seq 600); do
    r=$(echo "$*" | busybox nc -w 5 $XTASK_PEER_ADDR 7999 2>/dev/null) && [ -n "$r" ] && break
    sleep 0.5
  done
  echo "node a: ctl $*: ${r:-no answer}"
  case "$r" in ok*) return 0;; *) return 1;; esac
}
"#;

/// Node A's script: the four tests of the module's text, in order.
fn node_a_script() -> Result<String> {
    let load = bin("rpcrdma-load");
    let prelude = nfs_server_prelude_for(true)?;
    Ok(format!(
        r#"{prelude}
FAILED=0
fail() {{ echo "WIRE-FAIL: $*"; FAILED=1; }}
step() {{ echo "wire: $*"; }}
{CTL_FNS}
{WORKLOAD_FNS}
B=$XTASK_PEER_ADDR
T0=$(date +%s%N)
ms() {{ echo $(( ($(date +%s%N) - T0) / 1000000 )); }}
# 1. the aarch64 server, every call kind from this x86_64 client
ctl serve || fail "node b: rpcrdma-serve did not start"
load() {{ # load LABEL ARGS...
  local l=$1; shift
  if {load} --addr $B "$@" > /tmp/load.out 2>&1; then step "load $l: $(grep '^rpcrdma-load: calls=' /tmp/load.out)"; else fail "load $l: $(tail -3 /tmp/load.out)"; fi
}}
load inline -n 2000 -d 16 -s 64
load read-chunk -n 200 -d 8 -s 65536 --call-chunk read
load nomsg -n 100 -d 8 -s 65536 --call-chunk nomsg
load write-chunk -n 20 -d 4 --proc generate --reply-size 1048576 --reply-chunk write
load reply-chunk -n 100 -d 8 --proc bulk --reply-size 65536 --reply-chunk reply
load malformed -n 50 -d 4 --malformed
ctl stop serve || fail "node b: rpcrdma-serve gave no report"
echo "wire-time phase=serve ms=$(ms)"
# 2. the DPU picture: nfsd here, the gateway on node B, this kernel's client through it
ctl gateway || fail "node b: rpcrdma-gateway did not start"
wait_grace || fail "nfsd's grace period did not end"
mkdir -p /mnt/dpu
if mount -t nfs -o proto=rdma,port=20049 $B:/ /mnt/dpu; then
  VER=$(grep ' /mnt/dpu ' /proc/mounts | grep -o 'vers=[0-9.]*')
  step "mounted $B:/ through the gateway on node B: $VER"
  SIZES="0:0 1k:1024 100k:102400 4m:4194304 16m:16777216" ENTRIES=300 workload /mnt/dpu "dpu ($VER)"
  delegation_recall /mnt/dpu "dpu ($VER)"
else
  fail "mount through the gateway on node B"
fi
echo "wire-time phase=dpu ms=$(ms)"
# 3. the link goes down for 5 s in the middle of a write
finish_dd() {{ # finish_dd PID LABEL ERRFILE: waits up to 180 s, else says what the client sees
  local i
  for i in $(seq 180); do kill -0 $1 2>/dev/null || break; sleep 1; done
  if kill -0 $1 2>/dev/null; then
    fail "$2: the write did not finish in 180 s; rxe0 port $(cat /sys/class/infiniband/rxe0/ports/1/state); kernel: $(dmesg | tail -12 | tr '\n' '|')"
    ctl conns gateway
    ctl log gateway
    kill $1
  fi
  wait $1 && step "$2: write finished after $i s: $(tail -1 $3)" || fail "$2: dd exited $?: $(tail -2 $3)"
}}
check_write() {{ # check_write LABEL FILE SRC
  sync; echo 3 > /proc/sys/vm/drop_caches
  local a=$(sha256sum < $3) b=$(sha256sum < $2)
  [ "$a" = "$b" ] && step "$1: read back: sha256 matches" || fail "$1: the file differs"
}}
head -c 33554432 /dev/urandom > /tmp/src-link
dd if=/tmp/src-link of=/mnt/dpu/link bs=1M conv=fsync 2>/tmp/dd-link.err & D=$!
sleep 1
ip link set eth0 down && step "link down"
sleep 5
ip link set eth0 up && step "link up"
finish_dd $D "link down" /tmp/dd-link.err
check_write "link down" /mnt/dpu/link /tmp/src-link
rm -f /mnt/dpu/link
# every connection the client gave up is reaped on node B: accepted = closed + the live one
for i in $(seq 60); do
  C=$(ctl conns gateway); acc=$(echo "$C" | grep -o 'accepted=[0-9]*' | cut -d= -f2); cl=$(echo "$C" | grep -o 'closed=[0-9]*' | cut -d= -f2)
  [ -n "$acc" ] && [ "$acc" = $((cl + 1)) ] && break; sleep 1
done
[ -n "$acc" ] && [ "$acc" = $((cl + 1)) ] && step "link down: node b accepted $acc connections and closed $cl (the live one left)" || fail "link down: node b accepted ${{acc:-?}} connections, closed ${{cl:-?}}"
echo "wire-link accepted=$acc closed=$cl"
umount /mnt/dpu && step "unmount" || fail "unmount"
ctl stop gateway || fail "node b: rpcrdma-gateway gave no report"
echo "wire-time phase=link ms=$(ms)"
# 4. node B powers off in the middle of a write and boots again
ctl gateway || fail "node b: rpcrdma-gateway did not start"
mount -t nfs -o proto=rdma,port=20049 $B:/ /mnt/dpu || fail "mount before the reboot"
head -c 33554432 /dev/urandom > /tmp/src-reboot
dd if=/tmp/src-reboot of=/mnt/dpu/reboot bs=1M conv=fsync 2>/tmp/dd-reboot.err & D=$!
sleep 1
ctl crash
sleep 2
ctl gateway && step "node b is back: its gateway listens again" || fail "node b did not come back"
finish_dd $D "reboot" /tmp/dd-reboot.err
check_write "reboot" /mnt/dpu/reboot /tmp/src-reboot
rm -f /mnt/dpu/reboot
umount /mnt/dpu && step "unmount after the reboot" || fail "unmount after the reboot"
ctl stop gateway || fail "node b: rpcrdma-gateway gave no report after the reboot"
echo "wire-time phase=reboot ms=$(ms)"
ctl done
if dmesg | grep -iE 'I/O error|error -5' > /tmp/ioerr; then fail "the kernel logged I/O errors: $(head -3 /tmp/ioerr)"; fi
[ $FAILED = 0 ]
"#
    ))
}

/// Node A's benchmark script: `rounds` interleaved rounds of perftest and rpcrdma pairs
/// across the wire, node B serving (or initiating the RDMA Reads and Writes, as the server
/// does).
fn bench_a_script(rounds: u32) -> String {
    let load = bin("rpcrdma-load");
    format!(
        r#"set -u
{CTL_FNS}
B=$XTASK_PEER_ADDR
pt_send() {{ # node B receives, this node sends
  ctl "perf-server ib_send_bw -d rxe0 -x 1 -s 64 -n 20000" > /dev/null
  local line=$(ib_send_bw -d rxe0 -x 1 -s 64 -n 20000 $B 2>&1 | grep -E '^ *[0-9]+ +[0-9]+ ' | tail -1 | tr -s ' ')
  ctl perf-wait > /dev/null
  echo "perftest send_64 $line"
}}
pt_b() {{ # pt_b NAME CMD...: node B initiates (reads or writes this node's memory)
  local name=$1; shift
  "$@" > /tmp/pt.out 2>&1 & local s=$!
  sleep 1
  local r=$(ctl "perf-client $*")
  wait $s
  echo "perftest $name ${{r##*: ok }}"
}}
rl() {{ # rl NAME LOAD-ARGS...
  local name=$1; shift
  echo "rpcrdma $name $({load} --addr $B "$@" | grep '^rpcrdma-load:')"
}}
for round in $(seq {rounds}); do
  pt_send
  pt_b read_64k ib_read_bw -d rxe0 -x 1 -s 65536 -n 1000
  pt_b write_1m ib_write_bw -d rxe0 -x 1 -s 1048576 -n 100
  ctl serve > /dev/null
  rl null -n 20000 -d 16 -s 0
  rl read_64k -n 1000 -d 16 -s 65536 --proc sink --call-chunk read --verify len
  rl write_1m -n 100 -d 8 --proc source --reply-size 1048576 --reply-chunk write --verify len
  ctl stop serve > /dev/null
done
ctl done
"#
    )
}

fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// `cargo xtask bench wire`: perftest against rpcrdma-serve ← rpcrdma-load across the wire,
/// x86_64 ↔ x86_64 and aarch64 server ← x86_64 client, one pair boot each; medians of 3
/// interleaved rounds, ratios to perftest in the same boot. Writes BENCHMARKS.md.
pub fn bench() -> Result<()> {
    crate::setup::packages()?;
    let rounds = 3;
    let mut rows = Vec::new();
    let mut raw = String::new();
    for arch_b in [Arch::X86_64, Arch::Aarch64] {
        build(arch_b)?;
        let dir = util::root().join("target/rxe-vm-scripts");
        std::fs::create_dir_all(&dir).context(format_args!("create {}", dir.display()))?;
        let (a, b) = (
            dir.join("bench-wire-a.sh"),
            dir.join(format!("bench-wire-b-{}.sh", arch_b.name())),
        );
        std::fs::write(&a, bench_a_script(rounds))?;
        std::fs::write(&b, node_b_script(arch_b))?;
        let opts = PairOptions {
            arch_b,
            ..PairOptions::default()
        };
        eprintln!(
            "bench wire: node A x86_64 (clients) and node B {} (servers)",
            arch_b.name()
        );
        let run = pair::run_pair(
            &["bash".into(), OsString::from(&a)],
            &["sh".into(), OsString::from(&b)],
            &opts,
        )?;
        if run.a.code != 0 {
            eprintln!("{}\n{}", run.a.output, run.b_output());
            return Err(format!("bench wire ({}) failed", arch_b.name()).into());
        }
        let out = &run.a.output;
        // perftest result line: bytes iterations peak avg msgrate
        let perftest = |name: &str, col: usize| -> f64 {
            median(
                out.lines()
                    .filter_map(|l| l.strip_prefix(&format!("perftest {name} ")))
                    .filter_map(|r| r.split_whitespace().nth(col)?.parse().ok())
                    .collect(),
            )
        };
        let ours = |name: &str, key: &str| -> f64 {
            median(
                out.lines()
                    .filter_map(|l| l.strip_prefix(&format!("rpcrdma {name} ")))
                    .filter_map(|r| crate::rdma::kv(r).get(key)?.parse().ok())
                    .collect(),
            )
        };
        let pair_name = match arch_b {
            Arch::X86_64 => "x86_64 server ← x86_64 client",
            Arch::Aarch64 => "aarch64 server ← x86_64 client",
        };
        let send = perftest("send_64", 4) * 1e6;
        let null = ours("null", "calls_per_sec");
        rows.push(format!(
            "| {pair_name} | NULL calls/s vs `ib_send_bw -s 64` msg/s, depth 16 | {null:.0} | {send:.0} | {:.2} | ≥ 0.45 |",
            null / send
        ));
        for (name, what, goal) in [
            (
                "read_64k",
                "64 KiB Read chunks (SINK) vs `ib_read_bw -s 65536`, MiB/s, depth 16",
                "≥ 0.8",
            ),
            (
                "write_1m",
                "1 MiB write chunks (SOURCE) vs `ib_write_bw -s 1048576`, MiB/s, depth 8",
                "≥ 0.8",
            ),
        ] {
            let (o, t) = (ours(name, "mib_per_sec"), perftest(name, 3));
            rows.push(format!(
                "| {pair_name} | {what} | {o:.1} | {t:.1} | {:.2} | {goal} |",
                o / t
            ));
        }
        raw.push_str(&format!("# {pair_name}\n"));
        for l in out
            .lines()
            .filter(|l| l.starts_with("perftest ") || l.starts_with("rpcrdma "))
        {
            raw.push_str(l);
            raw.push('\n');
        }
    }
    let mut md = String::new();
    md.push_str("Command: `cargo xtask bench wire` (two QEMU TCG VMs, one vCPU each, joined by a virtio-net wire carried over the host's loopback; Soft-RoCE on each eth0; node B serves, node A runs the clients; one pair boot per row group, 3 interleaved rounds, medians). TCG makes the absolute rates meaningless — an emulated aarch64 core is several times slower than an emulated x86_64 one, and Soft-RoCE runs in the emulated kernels — so only the ratio to perftest in the same boot means anything. perftest `BW average` is MiB/s; rpcrdma-load's MiB/s is argument or result data over its calls phase (SINK / SOURCE do not touch the data).\n\n");
    md.push_str(
        "| pair | measure | rpcrdma | perftest | ratio | goal |\n|---|---|---|---|---|---|\n",
    );
    for r in &rows {
        md.push_str(r);
        md.push('\n');
    }
    md.push_str("\nRaw lines (node A's view; for reads and writes perftest's initiator is node B, as rpcrdma-serve is):\n\n```\n");
    md.push_str(&raw);
    md.push_str("```\n");
    println!("{md}");
    util::write_section(&util::root().join("BENCHMARKS.md"), "bench-wire", &md)
}

/// `cargo xtask wire [--arch-b ARCH]`.
pub fn wire(arch_b: Arch) -> Result<()> {
    crate::setup::packages()?;
    build(arch_b)?;
    pair::prepare(arch_b)?;
    let dir = util::root().join("target/rxe-vm-scripts");
    std::fs::create_dir_all(&dir).context(format_args!("create {}", dir.display()))?;
    let (a, b) = (dir.join("wire-a.sh"), dir.join("wire-b.sh"));
    std::fs::write(&a, node_a_script()?)?;
    std::fs::write(&b, node_b_script(arch_b))?;
    let opts = PairOptions {
        arch_b,
        ..PairOptions::default()
    };
    let opts = PairOptions {
        a: crate::vm::VmOptions {
            timeout: Duration::from_secs(900),
            ..opts.a.clone()
        },
        b: crate::vm::VmOptions {
            timeout: Duration::from_secs(900),
            ..opts.b.clone()
        },
        ..opts
    };
    eprintln!(
        "wire: booting node A (x86_64: NFS client, nfsd, rpcrdma-load) and node B ({}: \
         rpcrdma-serve, rpcrdma-gateway) joined by a wire",
        arch_b.name()
    );
    let t = std::time::Instant::now();
    let run = pair::run_pair(
        &["bash".into(), OsString::from(&a)],
        &["sh".into(), OsString::from(&b)],
        &opts,
    )?;
    let took = t.elapsed();
    check(&run, took, arch_b)
}

fn check(run: &PairRun, took: Duration, arch_b: Arch) -> Result<()> {
    let arch = arch_b.name();
    for line in run.a.output.lines().filter(|l| {
        l.starts_with("wire: ")
            || l.starts_with("wire-")
            || l.contains("WIRE-FAIL")
            || l.starts_with("node a: ctl")
    }) {
        println!("{line}");
    }
    let b_out = run.b_output();
    let mut problems = Vec::new();
    if run.a.code != 0 {
        problems.push(format!("node A's script failed (status {})", run.a.code));
    }
    if run.b.len() != 2 {
        problems.push(format!(
            "node B booted {} times, not 2 (once more after its power-off)",
            run.b.len()
        ));
    }
    if run.b.last().is_none_or(|r| r.code != 0) {
        problems.push("node B's last boot did not end its control loop".into());
    }
    match parse_last::<ServeReport>(&b_out, "rpcrdma-serve", STATS) {
        Ok(r) => {
            let (s, c) = (&r.server, &r.server.responder);
            println!(
                "rpcrdma-serve ({arch}): {} connections, {} calls ({} inline, {} write chunks, {} reply chunks, {} KiB by RDMA Read), {} ERR_VERS + {} ERR_CHUNK, leaked {}",
                s.accepted, c.calls, c.inline_replies, c.write_chunk_replies, c.reply_chunk_replies,
                c.read_bytes / 1024, c.err_vers, c.err_chunk, s.leaked
            );
            if s.leaked != 0 {
                problems.push(format!("rpcrdma-serve leaked {}", s.leaked));
            }
        }
        Err(e) => problems.push(format!("rpcrdma-serve's report: {e}")),
    }
    // The gateway ran three times: the DPU workload + link down, then across the reboot (its
    // first run there died with node B, so two reports).
    let gateway_reports: Vec<GatewayReport> = b_out
        .lines()
        .filter(|l| l.starts_with("rpcrdma-gateway: stats "))
        .filter_map(|l| parse_last::<GatewayReport>(l, "rpcrdma-gateway", STATS).ok())
        .collect();
    if gateway_reports.len() != 2 {
        problems.push(format!(
            "{} gateway reports on node B, not 2",
            gateway_reports.len()
        ));
    }
    for (i, r) in gateway_reports.iter().enumerate() {
        let (s, c, g) = (&r.server, &r.server.responder, &r.app.stats);
        println!(
            "rpcrdma-gateway ({arch}) run {}: {} connections ({} closed), {} calls forwarded, {} KiB by RDMA Read, {} KiB into write chunks, callbacks {} (replies {}), leaked {}, backend errors {}",
            i + 1, s.accepted, s.closed, g.forwarded, c.read_bytes / 1024, c.write_chunk_bytes / 1024,
            g.callbacks, g.callback_replies, s.leaked, g.backend_errors
        );
        if s.leaked != 0 {
            problems.push(format!("gateway run {}: leaked {}", i + 1, s.leaked));
        }
        if g.backend_errors != 0 {
            problems.push(format!(
                "gateway run {}: {} calls answered SYSTEM_ERR",
                i + 1,
                g.backend_errors
            ));
        }
        if c.err_vers + c.err_chunk != 0 {
            problems.push(format!("gateway run {}: decode errors", i + 1));
        }
    }
    if let Some(r) = gateway_reports.first() {
        if r.app.stats.callbacks == 0 {
            problems.push("no callback reached the client through node B (delegation)".into());
        }
    }
    println!("wire: the pair ran {:.0} s", took.as_secs_f64());
    if problems.is_empty() {
        println!(
            "wire: PASS — {arch} server and gateway across a wire, link down and reboot survived"
        );
        Ok(())
    } else {
        eprintln!("--- node A\n{}", run.a.output);
        eprintln!("--- node B\n{b_out}");
        Err(format!("wire failed: {}", problems.join("; ")).into())
    }
}
