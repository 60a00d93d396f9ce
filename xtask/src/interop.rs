//! `cargo xtask interop`: the Linux kernel's NFS/RDMA client on this project's transport.
//!
//! One VM boot: the kernel's nfsd serves a tmpfs over TCP only (no `insecure` in the export: the
//! gateway runs as root and connects from a reserved port, as the kernel client does);
//! `rpcrdma-gateway` listens on rdma 20049 in front of it; the kernel's client mounts through
//! the gateway
//! (`mount -t nfs -o vers=3,proto=rdma,port=20049,mountproto=tcp,nolock`). The workload checks
//! every step: files of 0 B, 1 KiB, 100 KiB, 4 MiB and 64 MiB written with `dd` (WRITE data
//! through Read chunks), caches dropped, read back and compared by SHA-256 (READ data through
//! write chunks); a directory of 2,000 entries listed with `ls -l` (READDIRPLUS through reply
//! chunks); rename, symlink + readlink, remove; then **nfsd restarts in the middle of a
//! 256 MiB write** (`rpc.nfsd 0`, 3 s, `rpc.nfsd 8`): `dd … conv=fsync` must exit 0, the file
//! must read back with the same SHA-256 and the client's RDMA connection must stay up (the
//! gateway reconnects to nfsd from the same port and resends what was waiting); `sync`;
//! unmount. Then the gateway's counters: no decode error, no leak, no failed work request, no
//! call failed, calls resent after the reconnect. Then a slow backend (3 ms each way on
//! loopback, netem) under a 512 MiB write: the gateway's RSS is sampled while it streams and
//! what it holds for nfsd must stay within its cap plus one grant. Last, a second gateway whose
//! `--allow` list
//! leaves the client out: the mount fails and the gateway logs the refusal.
//!
//! The kernel modules come from the VM's own kernel package (`modprobe -d`), the NFS programs
//! (`rpc.nfsd`, `rpc.mountd`, `exportfs`, `rpcbind`, `mount.nfs`) from the host's packages
//! through the VM's view of the host file system (`cargo xtask setup` installs them).

use std::collections::HashMap;
use std::time::Duration;

use rpcrdma_report::{parse_last, GatewayReport, STATS};

use crate::rdma::{bin, build_release, run_script};
use crate::util::Result;
use crate::vm;

/// Shell that loads the NFS modules and starts the kernel's nfsd (TCP only) on a tmpfs export.
pub fn nfs_server_prelude() -> Result<String> {
    let image = vm::prepare_image()?;
    let kroot = vm::vm_dir().join("kernel");
    Ok(format!(
        r#"set -u
KROOT={kroot}; KVER={kver}
for m in nfsd nfs nfsv3 rpcrdma; do
  modprobe -d "$KROOT" -S "$KVER" "$m" || {{ echo "INTEROP-FAIL: modprobe $m"; exit 1; }}
done
mount -t nfsd nfsd /proc/fs/nfsd
mkdir -p /export /mnt/nfs /run/rpcbind /var/lib/nfs/rpc_pipefs
mount -t tmpfs -o size=1g tmpfs /export
rpcbind -w
echo "/export *(rw,no_root_squash,no_subtree_check,fsid=0)" > /etc/exports
exportfs -ra
rpc.mountd --port 20048
rpc.nfsd -N 4 8
grep -q '^tcp 2049' /proc/fs/nfsd/portlist || {{ echo "INTEROP-FAIL: nfsd is not listening on tcp 2049"; exit 1; }}
"#,
        kroot = kroot.display(),
        kver = image.kver,
    ))
}

/// `cargo xtask interop`.
pub fn interop() -> Result<()> {
    crate::setup::packages()?;
    build_release()?;
    vm::ensure_ready()?;
    let prelude = nfs_server_prelude()?;
    let gateway = bin("rpcrdma-gateway");
    let script = format!(
        r#"{prelude}
FAILED=0
fail() {{ echo "INTEROP-FAIL: $*"; FAILED=1; }}
step() {{ echo "interop: $*"; }}
RPCRDMA_LOG=info {gateway} --addr 10.0.2.15 --allow 10.0.2.0/24 > /tmp/gw.out 2> /tmp/gw.err &
G=$!
for i in $(seq 50); do grep -q ready /tmp/gw.out 2>/dev/null && break; sleep 0.1; done
step mount
mount -t nfs -o vers=3,proto=rdma,port=20049,mountproto=tcp,nolock 10.0.2.15:/export /mnt/nfs ||
  {{ fail mount; cat /tmp/gw.err; exit 1; }}
grep ' /mnt/nfs ' /proc/mounts
START=$(date +%s%N)
for spec in 0:0 1k:1024 100k:102400 4m:4194304 64m:67108864; do
  name=${{spec%%:*}}; size=${{spec##*:}}
  head -c "$size" /dev/urandom > /tmp/src-$name
  dd if=/tmp/src-$name of=/mnt/nfs/$name bs=1M conv=fsync 2>/tmp/dd.err || fail "write $name"
  step "wrote $name: $(tail -1 /tmp/dd.err)"
done
sync; echo 3 > /proc/sys/vm/drop_caches
for spec in 0:0 1k:1024 100k:102400 4m:4194304 64m:67108864; do
  name=${{spec%%:*}}
  a=$(sha256sum < /tmp/src-$name); b=$(sha256sum < /mnt/nfs/$name) || fail "read $name"
  [ "$a" = "$b" ] && step "read back $name: sha256 matches" || fail "read back $name: sha256 differs"
done
mkdir /mnt/nfs/dir || fail mkdir
for i in $(seq 2000); do : > /mnt/nfs/dir/entry-with-a-longer-name-$i || {{ fail "create $i"; break; }}; done
sync; echo 3 > /proc/sys/vm/drop_caches
n=$(ls -l /mnt/nfs/dir | grep -c entry-with)
[ "$n" = 2000 ] && step "ls -l: 2000 entries" || fail "ls -l listed $n entries, not 2000"
mv /mnt/nfs/4m /mnt/nfs/4m-renamed && [ -e /mnt/nfs/4m-renamed ] && [ ! -e /mnt/nfs/4m ] &&
  step rename || fail rename
ln -s /a/target/path/that/is/long/enough /mnt/nfs/link && step symlink || fail symlink
sync; echo 3 > /proc/sys/vm/drop_caches
[ "$(readlink /mnt/nfs/link)" = /a/target/path/that/is/long/enough ] && step readlink || fail readlink
rm -rf /mnt/nfs/dir /mnt/nfs/link /mnt/nfs/64m && [ ! -e /mnt/nfs/64m ] && step remove || fail remove
sync
# nfsd restarts while a 256 MiB write is in flight: a hard mount's promise is that this is a
# delay, not an error.
head -c 268435456 /dev/urandom > /tmp/src-big
A0=$(grep -c 'accepted qp' /tmp/gw.err)
dd if=/tmp/src-big of=/mnt/nfs/big bs=1M conv=fsync 2>/tmp/dd-big.err & D=$!
sleep 2
rpc.nfsd 0 && step "nfsd stopped mid-write"
sleep 3
rpc.nfsd -N 4 8 && step "nfsd started again"
wait $D && step "write during the restart: $(tail -1 /tmp/dd-big.err)" || fail "dd exited $? across the nfsd restart: $(tail -2 /tmp/dd-big.err)"
A1=$(grep -c 'accepted qp' /tmp/gw.err)
[ "$A0" = "$A1" ] && step "the client's RDMA connection stayed up" || fail "the client reconnected ($A0 -> $A1 connections)"
sync; echo 3 > /proc/sys/vm/drop_caches
a=$(sha256sum < /tmp/src-big); b=$(sha256sum < /mnt/nfs/big) || fail "read big"
[ "$a" = "$b" ] && step "read back the 256 MiB file written across the restart: sha256 matches" || fail "the file written across the restart differs"
rm -f /mnt/nfs/big /tmp/src-big
grep -E 'reconnected|connection lost' /tmp/gw.err | head -5
sync
# A slow backend: 3 ms each way on loopback (netem) while 512 MiB stream through the gateway.
# What it holds for nfsd is bounded by its cap and the credit grant; its RSS is sampled.
if modprobe -d "$KROOT" -S "$KVER" sch_netem && tc qdisc add dev lo root netem delay 3ms; then
  R0=$(awk '/VmRSS/ {{print $2}}' /proc/$G/status)
  dd if=/dev/zero of=/mnt/nfs/slow bs=1M count=512 conv=fsync 2>/tmp/dd-slow.err & D=$!
  RMAX=$R0
  while kill -0 $D 2>/dev/null; do
    r=$(awk '/VmRSS/ {{print $2}}' /proc/$G/status); [ "$r" -gt "$RMAX" ] && RMAX=$r; sleep 0.5
  done
  wait $D && step "512 MiB through a slow backend: $(tail -1 /tmp/dd-slow.err)" || fail "dd through the slow backend exited $?"
  tc qdisc del dev lo root
  HWM=$(awk '/VmHWM/ {{print $2}}' /proc/$G/status)
  step "slow backend: gateway RSS $R0 KiB before, at most $RMAX KiB while streaming (VmHWM $HWM KiB)"
  echo "interop-rss before_kib=$R0 max_kib=$RMAX hwm_kib=$HWM"
  rm -f /mnt/nfs/slow
else
  fail "netem is not available: the slow-backend run cannot be made"
fi
sync
END=$(date +%s%N)
umount /mnt/nfs && step unmount || fail unmount
# A client outside the allow-list is refused and mounts nothing.
{gateway} --addr 10.0.2.15 --port 20050 --allow 192.0.2.0/24 > /tmp/gw2.out 2> /tmp/gw2.err & G2=$!
for i in $(seq 50); do grep -q ready /tmp/gw2.out 2>/dev/null && break; sleep 0.1; done
if timeout 60 mount -t nfs -o vers=3,proto=rdma,port=20050,mountproto=tcp,nolock,retry=0 10.0.2.15:/export /mnt/nfs 2>/tmp/mount2.err; then
  fail "a client outside --allow mounted"; umount /mnt/nfs
else
  grep -q 'not in the allow-list' /tmp/gw2.err && step "a client outside --allow is refused: $(grep -o 'peer .* rejected' /tmp/gw2.err | head -1)" || fail "refusal not logged: $(tail -3 /tmp/gw2.err)"
fi
kill -INT $G2; wait $G2
kill -INT $G; wait $G || fail "gateway exit status $?"
cat /tmp/gw.out
grep -E 'accepted qp|WARN|ERROR' /tmp/gw.err | head -20
echo "interop-time ms=$(( (END - START) / 1000000 ))"
[ $FAILED = 0 ]
"#
    );
    eprintln!(
        "interop: booting the VM (the kernel's nfsd and NFS client, rpcrdma-gateway between)"
    );
    let (status, out) = run_script("interop.sh", &script, Duration::from_secs(1200))?;
    for line in out.lines().filter(|l| {
        l.starts_with("interop: ") || l.starts_with("interop-rss ") || l.contains("INTEROP-FAIL")
    }) {
        println!("{line}");
    }
    let mut problems = Vec::new();
    if status != 0 {
        problems.push(format!("the workload failed (status {status})"));
    }
    match parse_last::<GatewayReport>(&out, "rpcrdma-gateway", STATS) {
        Ok(r) => {
            report(&r);
            problems.extend(counter_problems(&r));
        }
        Err(e) => problems.push(format!("the gateway's report: {e}")),
    }
    if problems.is_empty() {
        println!("\ninterop: PASS — the Linux NFS/RDMA client mounted, wrote, listed, read back and unmounted through rpcrdma-gateway");
        Ok(())
    } else {
        eprintln!("{out}");
        Err(format!("interop failed: {}", problems.join("; ")).into())
    }
}

/// What the gateway's counters must show after the workload.
fn counter_problems(r: &GatewayReport) -> Vec<String> {
    let (s, c, g) = (&r.server, &r.server.responder, &r.app.stats);
    let mut problems = Vec::new();
    for (n, what) in [
        (c.err_vers, "ERR_VERS replies (decode errors)"),
        (c.err_chunk, "ERR_CHUNK replies (decode errors)"),
        (c.reply_too_large, "replies that fit nowhere"),
        (s.leaked, "leaked descriptors, calls or pages"),
        (
            c.failed_completions,
            "failed work requests (flushed ones are not counted here)",
        ),
        (s.failed_connections, "connections that failed"),
        (g.backend_errors, "calls answered SYSTEM_ERR"),
        (s.pool.rejected(), "refused completions"),
        (
            c.grant_overruns,
            "calls beyond the client's credit grant (the ledger's bound is wrong, or the client)",
        ),
    ] {
        if n != 0 {
            problems.push(format!("{n} {what}"));
        }
    }
    for (n, what) in [
        (g.reconnects, "no reconnect to nfsd after its restart"),
        (
            g.peak_held,
            "nothing held for the backend (the slow-backend run did not run)",
        ),
        (g.resent, "no call resent after the reconnect"),
        (c.read_bytes, "no data through Read chunks"),
        (c.write_chunk_bytes, "no data through write chunks"),
        (c.reply_chunk_replies, "no reply through a reply chunk"),
    ] {
        if n == 0 {
            problems.push(what.to_string());
        }
    }
    // What the gateway holds for nfsd is bounded by its cap (32 MiB per connection by default)
    // plus one grant's worth of calls already sent (64 calls of at most 1 MiB and headers).
    let bound = (32u64 << 20) + 64 * ((1 << 20) + 4096);
    if g.peak_held_per_connection > bound {
        problems.push(format!(
            "the gateway held {} bytes for one connection, above its bound of {bound}",
            g.peak_held_per_connection
        ));
    }
    problems
}

fn report(r: &GatewayReport) {
    let (s, c, g) = (&r.server, &r.server.responder, &r.app.stats);
    println!("\nrpcrdma-gateway counters:");
    println!(
        "  calls {} (forwarded {}, replies {}); RDMA Read {} B in {} calls ({} in call chunks); write chunks {} B in {} replies; reply chunks {} B in {} replies",
        c.calls,
        g.forwarded,
        g.replies,
        c.read_bytes,
        c.calls_with_read_chunks,
        c.calls_in_call_chunk,
        c.write_chunk_bytes,
        c.write_chunk_replies,
        c.reply_chunk_bytes,
        c.reply_chunk_replies,
    );
    println!(
        "  the client asked for {} credits (granted {}); offered write chunks in {} calls, reply chunks in {}",
        c.requested_credits, c.last_grant, c.calls_with_write_chunk, c.calls_with_reply_chunk,
    );
    println!(
        "  decode errors {} + {}; leaked {}; failed work requests {} (flushed {}); refused completions {}; backend errors {}",
        c.err_vers,
        c.err_chunk,
        s.leaked,
        c.failed_completions,
        c.flushed_completions,
        s.pool.rejected(),
        g.backend_errors,
    );
    println!(
        "  backend: {} connections made, {} lost, {} reconnects, {} calls resent (same xids), {} calls past their deadline; held for nfsd at most {} KiB ({} KiB one connection)",
        g.backend_connects, g.backend_failures, g.reconnects, g.resent, g.expired,
        g.peak_held / 1024, g.peak_held_per_connection / 1024,
    );
}

/// `cargo xtask bench vm --rival kernel`: in one VM boot, the kernel's own NFS/RDMA server
/// (nfsd's RDMA listener) against `rpcrdma-serve` (busy-poll and `--event`) on the same NFS NULL
/// load at depth 1, 16 and 64, interleaved, only the server under test running; then the same
/// file workload (4 MiB and 64 MiB written and read sequentially) through the kernel's RDMA
/// listener and through `rpcrdma-gateway`. Writes both tables to BENCHMARKS.md.
pub fn bench_rival() -> Result<()> {
    crate::setup::packages()?;
    build_release()?;
    vm::ensure_ready()?;
    let prelude = nfs_server_prelude()?;
    let (serve, load, gateway) = (
        bin("rpcrdma-serve"),
        bin("rpcrdma-load"),
        bin("rpcrdma-gateway"),
    );
    let script = format!(
        r#"{prelude}
IP=10.0.2.15
echo 'rdma 20050' > /proc/fs/nfsd/portlist
null() {{ # null NAME PORT DEPTH
  local line=$({load} --addr $IP --port $2 -n $4 -d $3 --proc null | grep '^rpcrdma-load:')
  echo "rival $1 depth=$3 $line"
}}
ours() {{ # ours NAME DEPTH N SERVE-ARGS...
  local name=$1 depth=$2 n=$3; shift 3
  {serve} --addr $IP --port 20049 "$@" > /tmp/s.out 2>/tmp/s.err & local s=$!
  for i in $(seq 50); do grep -q ready /tmp/s.out 2>/dev/null && break; sleep 0.1; done
  null $name 20049 $depth $n
  kill -INT $s; wait $s
}}
for round in 1 2; do
  for d in 1 16 64; do
    n=$((d == 1 ? 3000 : 20000))
    null kernel 20050 $d $n
    ours busy $d $n
    ours event $d $n --event
  done
done
files() {{ # files NAME PORT
  mount -t nfs -o vers=3,proto=rdma,port=$2,mountproto=tcp,nolock $IP:/export /mnt/nfs || {{ echo "RIVAL-FAIL mount $1"; return; }}
  for mb in 4 64; do
    head -c $((mb << 20)) /dev/zero > /tmp/src
    local t0=$(date +%s%N)
    dd if=/tmp/src of=/mnt/nfs/f$mb bs=1M conv=fsync 2>/dev/null
    local t1=$(date +%s%N)
    sync; echo 3 > /proc/sys/vm/drop_caches
    local t2=$(date +%s%N)
    dd if=/mnt/nfs/f$mb of=/dev/null bs=1M 2>/dev/null
    local t3=$(date +%s%N)
    echo "files $1 mib=$mb write_ms=$(( (t1 - t0) / 1000000 )) read_ms=$(( (t3 - t2) / 1000000 ))"
    rm -f /mnt/nfs/f$mb
  done
  umount /mnt/nfs
}}
files kernel 20050
{gateway} --addr $IP --port 20049 > /tmp/g.out 2>/tmp/g.err & G=$!
for i in $(seq 50); do grep -q ready /tmp/g.out 2>/dev/null && break; sleep 0.1; done
files gateway 20049
kill -INT $G; wait $G
files kernel 20050
"#
    );
    eprintln!("bench vm --rival kernel: booting the VM");
    let (status, out) = run_script("rival.sh", &script, Duration::from_secs(1500))?;
    if status != 0 || out.contains("RIVAL-FAIL") {
        eprintln!("{out}");
        return Err(format!("bench vm --rival kernel failed (status {status})").into());
    }
    // NULL calls/s: the median of the two interleaved rounds per (server, depth).
    let mut rates: HashMap<(String, u32), Vec<f64>> = HashMap::new();
    for line in out.lines().filter_map(|l| l.strip_prefix("rival ")) {
        let name = line.split_whitespace().next().unwrap_or("").to_string();
        let kvs = crate::rdma::kv(line);
        let depth = kvs.get("depth").and_then(|v| v.parse().ok()).unwrap_or(0);
        if let Some(r) = kvs.get("calls_per_sec").and_then(|v| v.parse::<f64>().ok()) {
            rates.entry((name, depth)).or_default().push(r);
        }
    }
    let med = |name: &str, d: u32| -> f64 {
        let mut v = rates
            .get(&(name.to_string(), d))
            .cloned()
            .unwrap_or_default();
        v.sort_by(|a, b| a.total_cmp(b));
        match v.len() {
            0 => f64::NAN,
            n if n % 2 == 1 => v[n / 2],
            n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
        }
    };
    let mut md = String::new();
    md.push_str("Command: `cargo xtask bench vm --rival kernel` (one VM boot: QEMU TCG, 2 vCPUs, Soft-RoCE; the kernel's nfsd RDMA listener on port 20050 and `rpcrdma-serve` on 20049, one at a time; `rpcrdma-load --proc null` = NFS v3 NULL; two interleaved rounds, medians).\n\n");
    md.push_str("| depth | kernel nfsd (RDMA) calls/s | rpcrdma-serve busy-poll | ratio | rpcrdma-serve `--event` | ratio | goal |\n|---|---|---|---|---|---|---|\n");
    for d in [1, 16, 64] {
        let (k, b, e) = (med("kernel", d), med("busy", d), med("event", d));
        md.push_str(&format!(
            "| {d} | {k:.0} | {b:.0} | {:.2} | {e:.0} | {:.2} | ≥ 2 |\n",
            b / k,
            e / k
        ));
    }
    md.push_str("\nFiles through the kernel NFS/RDMA client (`dd bs=1M`, write with `conv=fsync`, read after dropping caches; MiB/s): the kernel's nfsd RDMA listener vs `rpcrdma-gateway` in front of the same nfsd over TCP (the gateway adds a TCP hop and a copy each way, through loopback in the same two vCPUs).\n\n");
    md.push_str("| file | kernel RDMA write | gateway write | ratio | kernel RDMA read | gateway read | ratio |\n|---|---|---|---|---|---|---|\n");
    let file_rate = |who: &str, mib: &str, key: &str| -> f64 {
        let v: Vec<f64> = out
            .lines()
            .filter(|l| l.starts_with(&format!("files {who} ")))
            .map(crate::rdma::kv)
            .filter(|m| m.get("mib").map(String::as_str) == Some(mib))
            .filter_map(|m| m.get(key).and_then(|v| v.parse::<f64>().ok()))
            .map(|ms| mib.parse::<f64>().unwrap_or(0.0) / (ms.max(1.0) / 1000.0))
            .collect();
        v.iter().sum::<f64>() / v.len().max(1) as f64
    };
    for mib in ["4", "64"] {
        let (kw, gw) = (
            file_rate("kernel", mib, "write_ms"),
            file_rate("gateway", mib, "write_ms"),
        );
        let (kr, gr) = (
            file_rate("kernel", mib, "read_ms"),
            file_rate("gateway", mib, "read_ms"),
        );
        md.push_str(&format!(
            "| {mib} MiB | {kw:.1} | {gw:.1} | {:.2} | {kr:.1} | {gr:.1} | {:.2} |\n",
            gw / kw,
            gr / kr
        ));
    }
    md.push_str("\nRaw lines from the run:\n\n```\n");
    for l in out
        .lines()
        .filter(|l| l.starts_with("rival ") || l.starts_with("files "))
    {
        md.push_str(l);
        md.push('\n');
    }
    md.push_str("```\n");
    println!("{md}");
    crate::util::write_section(
        &crate::util::root().join("BENCHMARKS.md"),
        "bench-rival",
        &md,
    )
}
