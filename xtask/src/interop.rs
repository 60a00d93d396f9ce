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
//! must read back with the same SHA-256, the kernel must log no I/O error and the client's RDMA
//! connection must stay up (the
//! gateway reconnects to nfsd from the same port and resends what was waiting); `sync`;
//! unmount. Then the gateway's counters: no decode error, no leak, no failed work request, no
//! call failed, calls resent after the reconnect. Then a slow backend (3 ms each way on
//! loopback, netem) under a 512 MiB write: the gateway's RSS is sampled while it streams and
//! what it holds for nfsd must stay within its cap plus one grant. Then nfsd serves NFSv4 too
//! (lease and grace time 10 s) and the same workload runs three more times, through the mounts
//! users type: the default (no `vers=`: NFSv4.2), `vers=4.1` and `vers=4.0`. Last, a second
//! gateway whose `--allow` list leaves the client out: the mount fails and the gateway logs the
//! refusal.
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

/// Shell that loads the NFS modules and starts the kernel's nfsd (TCP only, NFSv3 only) on a
/// tmpfs export.
pub fn nfs_server_prelude() -> Result<String> {
    nfs_server_prelude_for(false)
}

/// [`nfs_server_prelude`]; with `v4`, nfsd serves NFSv4 only (no NFSv3, so no lockd, whose
/// own grace period of 50 s would hold back delegations), its lease and grace times shortened
/// to 10 s; `wait_grace` (a shell function it defines) waits for that grace period to end.
pub fn nfs_server_prelude_for(v4: bool) -> Result<String> {
    let image = vm::prepare_image()?;
    let kroot = vm::kernel_root(vm::Arch::X86_64);
    let start = if v4 {
        "modprobe -d \"$KROOT\" -S \"$KVER\" nfsv4 || { echo \"INTEROP-FAIL: modprobe nfsv4\"; exit 1; }
mkdir -p /var/lib/nfs/v4recovery
rpc.nfsd 0
echo 10 > /proc/fs/nfsd/nfsv4leasetime; echo 10 > /proc/fs/nfsd/nfsv4gracetime
rpc.nfsd -N 3 8
wait_grace() { local i; for i in $(seq 30); do [ \"$(cat /proc/fs/nfsd/v4_end_grace)\" = Y ] && return 0; sleep 1; done; return 1; }"
    } else {
        "rpc.nfsd -N 4 8"
    };
    Ok(format!(
        r#"set -u
KROOT={kroot}; KVER={kver}
for m in nfsd nfs nfsv3 rpcrdma; do
  modprobe -d "$KROOT" -S "$KVER" "$m" || {{ echo "INTEROP-FAIL: modprobe $m"; exit 1; }}
done
# lockd (nfsd starts it for NFSv3) holds a grace period of its own, 50 s by default, during
# which nfsd grants no delegation: 10 s, as nfsd's own below
echo 10 > /proc/sys/fs/nfs/nlm_grace_period || echo "interop: note: cannot shorten lockd's grace period"
mount -t nfsd nfsd /proc/fs/nfsd
mkdir -p /export /mnt/nfs /run/rpcbind /var/lib/nfs/rpc_pipefs
mount -t tmpfs -o size=1g tmpfs /export
rpcbind -w
echo "/export *(rw,no_root_squash,no_subtree_check,fsid=0)" > /etc/exports
exportfs -ra
rpc.mountd --port 20048
{start}
grep -q '^tcp 2049' /proc/fs/nfsd/portlist || {{ echo "INTEROP-FAIL: nfsd is not listening on tcp 2049"; exit 1; }}
"#,
        kroot = kroot.display(),
        kver = image.kver,
    ))
}

/// Shell functions (bash) the interop run and the wire tests share: `workload DIR LABEL` and
/// `delegation_recall DIR LABEL`. They call `fail MESSAGE` and `step MESSAGE`, which the script
/// defines, and read the server's side of the files under `/export`.
pub const WORKLOAD_FNS: &str = r#"# The workload every mount runs: files 0 B - 64 MiB written and read back (sha256), a
# 2,000-entry directory listed with ls -l, rename, symlink / readlink, remove. SIZES (NAME:BYTES
# words, one of them 4m) and ENTRIES change what it writes and lists.
SIZES=${SIZES:-"0:0 1k:1024 100k:102400 4m:4194304 64m:67108864"}
ENTRIES=${ENTRIES:-2000}
workload() { # workload DIR LABEL
  local d=$1 l=$2 spec name size a b n rm
  for spec in $SIZES; do
    name=${spec%%:*}; size=${spec##*:}
    head -c "$size" /dev/urandom > /tmp/src-$name
    dd if=/tmp/src-$name of=$d/$name bs=1M conv=fsync 2>/tmp/dd.err || fail "$l: write $name"
    step "$l: wrote $name: $(tail -1 /tmp/dd.err)"
  done
  sync; echo 3 > /proc/sys/vm/drop_caches
  for spec in $SIZES; do
    name=${spec%%:*}
    a=$(sha256sum < /tmp/src-$name); b=$(sha256sum < $d/$name) || fail "$l: read $name"
    [ "$a" = "$b" ] && step "$l: read back $name: sha256 matches" || fail "$l: read back $name: sha256 differs"
  done
  mkdir $d/dir || fail "$l: mkdir"
  for i in $(seq $ENTRIES); do : > $d/dir/entry-with-a-longer-name-$i || { fail "$l: create $i"; break; }; done
  sync; echo 3 > /proc/sys/vm/drop_caches
  n=$(ls -l $d/dir | grep -c entry-with)
  [ "$n" = $ENTRIES ] && step "$l: ls -l: $ENTRIES entries" || fail "$l: ls -l listed $n entries, not $ENTRIES"
  mv $d/4m $d/4m-renamed && [ -e $d/4m-renamed ] && [ ! -e $d/4m ] &&
    step "$l: rename" || fail "$l: rename"
  ln -s /a/target/path/that/is/long/enough $d/link && step "$l: symlink" || fail "$l: symlink"
  sync; echo 3 > /proc/sys/vm/drop_caches
  [ "$(readlink $d/link)" = /a/target/path/that/is/long/enough ] && step "$l: readlink" || fail "$l: readlink"
  rm=""; for spec in $SIZES; do rm="$rm $d/${spec%%:*}"; done
  rm -rf $d/dir $d/link $d/4m-renamed $rm && [ ! -e $d/0 ] && step "$l: remove" || fail "$l: remove"
}
# NFSv4.1+ delegation recall through the gateway: the client opens a file for reading and
# keeps it open (nfsd grants a read delegation once its callback probe got through the
# gateway), then the file is written on the server side: nfsd sends CB_RECALL over the
# backchannel, through the gateway, the client returns the delegation and the local write goes
# on. Without a working backchannel the write waits for the lease (10 s here).
delegation_recall() { # delegation_recall DIR LABEL
  local d=$1 l=$2 t0 t1 ms
  head -c 1048576 /dev/urandom > /export/deleg
  sleep 1
  # nfsd grants none while any grace period runs (its own, or lockd's when it serves v3):
  # open the file again until a delegation comes, for up to 30 s. A line of the client's
  # state that is a delegation says so (not the file's name).
  local try
  for try in $(seq 10); do
    exec 3< $d/deleg
    cat <&3 > /dev/null
    sleep 1
    grep -qs 'type: deleg' /proc/fs/nfsd/clients/*/states && break
    exec 3<&-
    sleep 2
  done
  if grep -qs 'type: deleg' /proc/fs/nfsd/clients/*/states; then
    step "$l: the client holds a delegation (open $try)"
  else
    fail "$l: nfsd granted no delegation (is the callback path through the gateway down?): $(cat /proc/fs/nfsd/clients/*/states /proc/fs/nfsd/clients/*/info 2>/dev/null | tr '\n' ' ')"
  fi
  t0=$(date +%s%N)
  echo more >> /export/deleg
  t1=$(date +%s%N)
  exec 3<&-
  ms=$(( (t1 - t0) / 1000000 ))
  if [ $ms -lt 5000 ]; then
    step "$l: the server-side write waited $ms ms for the recall"
  else
    fail "$l: the server-side write waited $ms ms (lease 10 s): the recall did not get through"
  fi
  echo "interop-recall label=$l ms=$ms"
  rm -f /export/deleg
}
"#;

/// `cargo xtask interop`.
pub fn interop() -> Result<()> {
    crate::setup::packages()?;
    build_release()?;
    vm::ensure_ready()?;
    let prelude = nfs_server_prelude()?;
    let gateway = bin("rpcrdma-gateway");
    let workload_fns = WORKLOAD_FNS;
    let script = format!(
        r#"{prelude}
FAILED=0
fail() {{ echo "INTEROP-FAIL: $*"; FAILED=1; }}
step() {{ echo "interop: $*"; }}
{workload_fns}
RPCRDMA_LOG=info {gateway} --addr 10.0.2.15 --allow 10.0.2.0/24 > /tmp/gw.out 2> /tmp/gw.err &
G=$!
for i in $(seq 50); do grep -q ready /tmp/gw.out 2>/dev/null && break; sleep 0.1; done
step mount
mount -t nfs -o vers=3,proto=rdma,port=20049,mountproto=tcp,nolock 10.0.2.15:/export /mnt/nfs ||
  {{ fail mount; cat /tmp/gw.err; exit 1; }}
grep ' /mnt/nfs ' /proc/mounts
START=$(date +%s%N)
workload /mnt/nfs v3
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
if dmesg | grep -iE 'I/O error|error -5' > /tmp/ioerr; then fail "the kernel logged I/O errors: $(head -3 /tmp/ioerr)"; else step "the kernel logged no I/O error"; fi
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
# What users type: the default mount (no vers=, NFSv4.2), and 4.1 and 4.0, through the gateway,
# with nfsd serving v4 too (lease and grace shortened to 10 s before it starts).
modprobe -d "$KROOT" -S "$KVER" nfsv4 || fail "modprobe nfsv4"
mkdir -p /var/lib/nfs/v4recovery /mnt/nfs4
rpc.nfsd 0
echo 10 > /proc/fs/nfsd/nfsv4leasetime; echo 10 > /proc/fs/nfsd/nfsv4gracetime
rpc.nfsd 8 && step "nfsd serves NFSv4 too; waiting out its 10 s grace period"
sleep 11
for v in default 4.1 4.0; do
  opt=proto=rdma,port=20049; [ $v = default ] || opt=$opt,vers=$v
  if mount -t nfs -o $opt 10.0.2.15:/ /mnt/nfs4; then
    ver=$(grep ' /mnt/nfs4 ' /proc/mounts | grep -o 'vers=[0-9.]*')
    workload /mnt/nfs4 "mount $v ($ver)"
    [ $v = 4.0 ] || delegation_recall /mnt/nfs4 "mount $v ($ver)"
    umount /mnt/nfs4 && step "mount $v: unmount" || fail "mount $v: unmount"
  else
    fail "mount $v (proto=rdma) through the gateway"
  fi
done
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
        (g.callbacks_failed, "callbacks the client never answered"),
        (
            c.backchannel_unmatched,
            "backward replies that matched no callback",
        ),
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
        (
            g.callbacks,
            "no callback passed to the client (NFSv4.1 backchannel)",
        ),
        (g.callback_replies, "no callback reply passed back to nfsd"),
        (c.read_bytes, "no data through Read chunks"),
        (c.write_chunk_bytes, "no data through write chunks"),
        (
            g.direct_bytes,
            "no READ data read from nfsd's socket straight into payload pages",
        ),
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
    println!(
        "  callbacks to the client {} (replies back to nfsd {}, failed {}, dropped {})",
        g.callbacks, g.callback_replies, g.callbacks_failed, g.callbacks_dropped,
    );
    println!(
        "  DDP payloads {} B, {} B of them read from nfsd's socket straight into payload pages (not copied by the gateway); {} B of other bulk replies",
        g.ddp_bytes, g.direct_bytes, g.bulk_bytes,
    );
}

/// `cargo xtask bench vm --rival kernel`: in one VM boot, the kernel's own NFS/RDMA server
/// (nfsd's RDMA listener) against `rpcrdma-serve` (busy-poll and `--event`) on the same NFS NULL
/// load at depth 1, 16 and 64, interleaved, only the server under test running; then the same
/// file workload (64 MiB and 256 MiB written and read sequentially, three interleaved
/// repetitions) through the kernel's RDMA listener and through `rpcrdma-gateway` (busy-poll and
/// `--event`), with the CPU time each side used. Writes both tables to BENCHMARKS.md.
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
# CPU used, in clock ticks (USER_HZ): `ticks PID...` sums utime + stime of the given
# processes; `busy` is the whole VM's non-idle time (client, rxe, nfsd, gateway).
ticks() {{ local t=0 p f; for p in "$@"; do f=($(sed 's/^.*) //' /proc/$p/stat 2>/dev/null)) || continue; t=$((t + ${{f[11]:-0}} + ${{f[12]:-0}})); done; echo $t; }}
nfsd_pids() {{ local d; for d in /proc/[0-9]*; do [ "$(cat $d/comm 2>/dev/null)" = nfsd ] && echo ${{d#/proc/}}; done; }}
busy() {{ awk '/^cpu / {{print $2 + $3 + $4 + $7 + $8}}' /proc/stat; }}
files() {{ # files NAME PORT REP GATEWAY-PID
  mount -t nfs -o vers=3,proto=rdma,port=$2,mountproto=tcp,nolock $IP:/export /mnt/nfs || {{ echo "RIVAL-FAIL mount $1"; return; }}
  local mb
  for mb in 64 256; do
    local n0=$(ticks $(nfsd_pids)) g0=$(ticks ${{4:-}}) b0=$(busy) t0=$(date +%s%N)
    dd if=/dev/zero of=/mnt/nfs/f$mb bs=1M count=$mb conv=fsync 2>/dev/null || echo "RIVAL-FAIL write $1 $mb"
    local t1=$(date +%s%N) n1=$(ticks $(nfsd_pids)) g1=$(ticks ${{4:-}}) b1=$(busy)
    sync; echo 3 > /proc/sys/vm/drop_caches
    local n2=$(ticks $(nfsd_pids)) g2=$(ticks ${{4:-}}) b2=$(busy) t2=$(date +%s%N)
    dd if=/mnt/nfs/f$mb of=/dev/null bs=1M 2>/dev/null || echo "RIVAL-FAIL read $1 $mb"
    local t3=$(date +%s%N) n3=$(ticks $(nfsd_pids)) g3=$(ticks ${{4:-}}) b3=$(busy)
    echo "files $1 rep=$3 mib=$mb write_ms=$(( (t1 - t0) / 1000000 )) read_ms=$(( (t3 - t2) / 1000000 )) write_nfsd_ticks=$((n1 - n0)) write_gateway_ticks=$((g1 - g0)) write_busy_ticks=$((b1 - b0)) read_nfsd_ticks=$((n3 - n2)) read_gateway_ticks=$((g3 - g2)) read_busy_ticks=$((b3 - b2))"
    rm -f /mnt/nfs/f$mb
  done
  umount /mnt/nfs
}}
gateway() {{ # gateway NAME REP GATEWAY-ARGS...
  local name=$1 rep=$2; shift 2
  {gateway} --addr $IP --port 20049 "$@" > /tmp/g.out 2>/tmp/g.err & local g=$!
  for i in $(seq 50); do grep -q ready /tmp/g.out 2>/dev/null && break; sleep 0.1; done
  files $name 20049 $rep $g
  kill -INT $g; wait $g || echo "RIVAL-FAIL gateway $name exited $?"
}}
for rep in 1 2 3; do
  files kernel 20050 $rep
  gateway gateway-busy $rep
  gateway gateway-event $rep --event
done
# Per NFS version: nfsd serves v4 too (lease and grace 10 s), the kernel's RDMA listener and
# the gateway (--event) side by side; 64 MiB written and read, and `ls -l` of a 2,000-entry
# directory made on the server side, caches dropped before each.
modprobe -d "$KROOT" -S "$KVER" nfsv4 || echo "RIVAL-FAIL modprobe nfsv4"
mkdir -p /var/lib/nfs/v4recovery /export/lsdir
for i in $(seq 2000); do : > /export/lsdir/entry-with-a-longer-name-$i; done
rpc.nfsd 0
echo 10 > /proc/fs/nfsd/nfsv4leasetime; echo 10 > /proc/fs/nfsd/nfsv4gracetime
rpc.nfsd 8
echo 'rdma 20050' > /proc/fs/nfsd/portlist
sleep 11
version() {{ # version NAME PORT VERS REP
  local opts=vers=$3,proto=rdma,port=$2 src=$IP:/
  [ $3 = 3 ] && {{ opts=$opts,mountproto=tcp,nolock; src=$IP:/export; }}
  mount -t nfs -o $opts $src /mnt/nfs || {{ echo "RIVAL-FAIL mount $1 v$3"; return; }}
  local t0=$(date +%s%N)
  dd if=/dev/zero of=/mnt/nfs/f64 bs=1M count=64 conv=fsync 2>/dev/null || echo "RIVAL-FAIL write $1 v$3"
  local t1=$(date +%s%N)
  sync; echo 3 > /proc/sys/vm/drop_caches
  local t2=$(date +%s%N)
  dd if=/mnt/nfs/f64 of=/dev/null bs=1M 2>/dev/null || echo "RIVAL-FAIL read $1 v$3"
  local t3=$(date +%s%N)
  sync; echo 3 > /proc/sys/vm/drop_caches
  local t4=$(date +%s%N) n
  n=$(ls -l /mnt/nfs/lsdir | grep -c entry-with)
  local t5=$(date +%s%N)
  [ "$n" = 2000 ] || echo "RIVAL-FAIL ls $1 v$3: $n entries"
  echo "versions $1 vers=$3 rep=$4 write_ms=$(( (t1 - t0) / 1000000 )) read_ms=$(( (t3 - t2) / 1000000 )) ls_ms=$(( (t5 - t4) / 1000000 ))"
  rm -f /mnt/nfs/f64
  umount /mnt/nfs
}}
{gateway} --addr $IP --port 20049 --event > /tmp/g.out 2>/tmp/g.err & G=$!
for i in $(seq 50); do grep -q ready /tmp/g.out 2>/dev/null && break; sleep 0.1; done
for rep in 1 2 3; do
  for v in 4.2 4.1 3; do
    version kernel 20050 $v $rep
    version gateway 20049 $v $rep
  done
done
kill -INT $G; wait $G || echo "RIVAL-FAIL gateway (versions) exited $?"
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
    md.push_str(&files_table(&out));
    md.push_str(&versions_table(&out));
    md.push_str("\nRaw lines from the run:\n\n```\n");
    for l in out.lines().filter(|l| {
        l.starts_with("rival ") || l.starts_with("files ") || l.starts_with("versions ")
    }) {
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

/// The per-version table: 64 MiB write and read (MB/s) and a 2,000-entry `ls -l` (ms),
/// medians of the repetitions, the kernel's listener against the gateway (`--event`).
fn versions_table(out: &str) -> String {
    let mut runs: HashMap<(String, String, &'static str), Vec<f64>> = HashMap::new();
    for l in out.lines().filter_map(|l| l.strip_prefix("versions ")) {
        let who = l.split_whitespace().next().unwrap_or("").to_string();
        let m = crate::rdma::kv(l);
        let vers = m.get("vers").cloned().unwrap_or_default();
        for key in ["write_ms", "read_ms", "ls_ms"] {
            if let Some(v) = m.get(key).and_then(|v| v.parse::<f64>().ok()) {
                runs.entry((who.clone(), vers.clone(), key))
                    .or_default()
                    .push(v);
            }
        }
    }
    let med = |who: &str, vers: &str, key: &'static str| {
        median(
            runs.get(&(who.to_string(), vers.to_string(), key))
                .cloned()
                .unwrap_or_default(),
        )
    };
    let mut md = String::from(
        "\nPer NFS version (nfsd serving v3 and v4 over TCP; mounts `vers=4.2`, `4.1`, `3`): 64 MiB written (`conv=fsync`) and read after dropping caches, MB/s; `ls -l` of a 2,000-entry directory after dropping caches, ms. Medians of 3 interleaved repetitions; the gateway with `--event`; ratio = gateway / kernel (for `ls -l`, kernel ms / gateway ms, so above 1 is faster too).\n\n| version | what | kernel | gateway | ratio | goal |\n|---|---|---|---|---|---|\n",
    );
    for vers in ["4.2", "4.1", "3"] {
        for (key, what) in [
            ("write_ms", "64 MiB write, MB/s"),
            ("read_ms", "64 MiB read, MB/s"),
        ] {
            let rate = |who: &str| 67.108864 / (med(who, vers, key).max(1.0) / 1000.0);
            let (k, g) = (rate("kernel"), rate("gateway"));
            md.push_str(&format!(
                "| {vers} | {what} | {k:.1} | {g:.1} | {:.2} | ≥ 1.0 |\n",
                g / k
            ));
        }
        let (k, g) = (med("kernel", vers, "ls_ms"), med("gateway", vers, "ls_ms"));
        md.push_str(&format!(
            "| {vers} | `ls -l` 2,000 entries, ms | {k:.0} | {g:.0} | {:.2} | ≥ 1.0 |\n",
            k / g
        ));
    }
    md
}

/// One direction of one file run: (milliseconds, nfsd ticks, gateway ticks, whole-VM busy
/// ticks).
type Dir = (f64, f64, f64, f64);

/// One `files …` line of the rival run.
struct FileRun {
    who: String,
    mib: u64,
    /// Write, then read.
    dirs: [Dir; 2],
}

fn file_runs(out: &str) -> Vec<FileRun> {
    out.lines()
        .filter_map(|l| l.strip_prefix("files "))
        .filter_map(|l| {
            let who = l.split_whitespace().next()?.to_string();
            let m = crate::rdma::kv(l);
            let f = |k: &str| m.get(k).and_then(|v| v.parse::<f64>().ok());
            let dir = |d: &str| -> Option<Dir> {
                Some((
                    f(&format!("{d}_ms"))?,
                    f(&format!("{d}_nfsd_ticks"))?,
                    f(&format!("{d}_gateway_ticks"))?,
                    f(&format!("{d}_busy_ticks"))?,
                ))
            };
            Some(FileRun {
                who,
                mib: m.get("mib")?.parse().ok()?,
                dirs: [dir("write")?, dir("read")?],
            })
        })
        .collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// The file tables: MB/s (median of the repetitions) and ratios to the kernel; CPU seconds per
/// GiB moved (medians), for the serving side and for the whole VM.
fn files_table(out: &str) -> String {
    const HZ: f64 = 100.0; // USER_HZ on Linux
    let runs = file_runs(out);
    let who = ["kernel", "gateway-busy", "gateway-event"];
    let sel = |w: &str, mib: u64, d: usize| -> Vec<Dir> {
        runs.iter()
            .filter(|r| r.who == w && r.mib == mib)
            .map(|r| r.dirs[d])
            .collect()
    };
    let reps = runs.iter().filter(|r| r.who == "kernel").count() / 2;
    let mut md = format!(
        "\nFiles through the kernel NFS/RDMA client (NFSv3, `dd bs=1M`, writes from `/dev/zero` with `conv=fsync`, reads to `/dev/null` after dropping caches): the kernel's nfsd RDMA listener vs `rpcrdma-gateway` in front of the same nfsd over TCP, busy-polling (the default) and with `--event`. MB/s, the median of {reps} interleaved repetitions; ratio = gateway / kernel.\n\n"
    );
    md.push_str("| file | direction | kernel MB/s | gateway busy-poll MB/s | ratio | gateway `--event` MB/s | ratio | goal |\n|---|---|---|---|---|---|---|---|\n");
    for mib in [64u64, 256] {
        for (d, name) in [(0, "write"), (1, "read")] {
            let rate = |w: &str| {
                median(
                    sel(w, mib, d)
                        .iter()
                        .map(|x| (mib << 20) as f64 / 1e6 / (x.0.max(1.0) / 1000.0))
                        .collect(),
                )
            };
            let (k, b, e) = (rate(who[0]), rate(who[1]), rate(who[2]));
            md.push_str(&format!(
                "| {mib} MiB | {name} | {k:.1} | {b:.1} | {:.2} | {e:.1} | {:.2} | ≥ 1.0 |\n",
                b / k,
                e / k
            ));
        }
    }
    md.push_str("\nCPU seconds per GiB moved (medians over both file sizes and all repetitions): *serving side* is the kernel's nfsd threads for the kernel, and the gateway process plus the nfsd threads behind it for the gateway; *whole VM* is every non-idle tick of the boot's two vCPUs (client, Soft-RoCE, nfsd, gateway), which is what a run costs in all. Soft-RoCE's own work runs in softirq context and is only in the whole-VM figure.\n\n");
    md.push_str("| direction | kernel nfsd | gateway busy-poll: gateway + nfsd | gateway `--event`: gateway + nfsd | kernel whole VM | gateway busy-poll whole VM | gateway `--event` whole VM |\n|---|---|---|---|---|---|---|\n");
    for (d, name) in [(0, "write"), (1, "read")] {
        let per_gib = |w: &str, f: &dyn Fn(&Dir, f64) -> f64| {
            median(
                [64u64, 256]
                    .iter()
                    .flat_map(|&mib| {
                        sel(w, mib, d)
                            .into_iter()
                            .map(move |x| (x, mib as f64 / 1024.0))
                    })
                    .map(|(x, gib)| f(&x, gib))
                    .collect(),
            )
        };
        let serving = |x: &Dir, gib: f64| (x.1 + x.2) / HZ / gib;
        let vm = |x: &Dir, gib: f64| x.3 / HZ / gib;
        md.push_str(&format!(
            "| {name} | {:.2} | {:.2} + {:.2} | {:.2} + {:.2} | {:.2} | {:.2} | {:.2} |\n",
            per_gib(who[0], &serving),
            per_gib(who[1], &|x, g| x.2 / HZ / g),
            per_gib(who[1], &|x, g| x.1 / HZ / g),
            per_gib(who[2], &|x, g| x.2 / HZ / g),
            per_gib(who[2], &|x, g| x.1 / HZ / g),
            per_gib(who[0], &vm),
            per_gib(who[1], &vm),
            per_gib(who[2], &vm),
        ));
    }
    md
}
