//! `cargo xtask interop`: the Linux kernel's NFS/RDMA client on this project's transport.
//!
//! One VM boot: the kernel's nfsd serves a tmpfs over TCP only (export option `insecure`, the
//! gateway's source port is not privileged); `rpcrdma-gateway` listens on rdma 20049 in front of
//! it; the kernel's client mounts through the gateway
//! (`mount -t nfs -o vers=3,proto=rdma,port=20049,mountproto=tcp,nolock`). The workload checks
//! every step: files of 0 B, 1 KiB, 100 KiB, 4 MiB and 64 MiB written with `dd` (WRITE data
//! through Read chunks), caches dropped, read back and compared by SHA-256 (READ data through
//! write chunks); a directory of 2,000 entries listed with `ls -l` (READDIRPLUS through reply
//! chunks); rename, symlink + readlink, remove; `sync`; unmount. Then the gateway's counters:
//! no decode error, no leak, no failed work request.
//!
//! The kernel modules come from the VM's own kernel package (`modprobe -d`), the NFS programs
//! (`rpc.nfsd`, `rpc.mountd`, `exportfs`, `rpcbind`, `mount.nfs`) from the host's packages
//! through the VM's view of the host file system (`cargo xtask setup` installs them).

use std::collections::HashMap;
use std::time::Duration;

use crate::rdma::{bin, build_release, find_kv, run_script};
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
echo "/export *(rw,insecure,no_root_squash,no_subtree_check,fsid=0)" > /etc/exports
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
RPCRDMA_LOG=info {gateway} --addr 10.0.2.15 > /tmp/gw.out 2> /tmp/gw.err &
G=$!
for i in $(seq 50); do grep -q ready /tmp/gw.out 2>/dev/null && break; sleep 0.1; done
step mount
mount -t nfs -o vers=3,proto=rdma,port=20049,mountproto=tcp,nolock 10.0.2.15:/export /mnt/nfs ||
  {{ fail mount; cat /tmp/gw.err; exit 1; }}
grep ' /mnt/nfs ' /proc/mounts
START=$(date +%s.%N)
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
END=$(date +%s.%N)
umount /mnt/nfs && step unmount || fail unmount
kill -INT $G; wait $G || fail "gateway exit status $?"
cat /tmp/gw.out
grep -E 'accepted qp|WARN|ERROR' /tmp/gw.err | head -20
echo "interop-time seconds=$(echo "$END - $START" | bc 2>/dev/null || echo '?')"
[ $FAILED = 0 ]
"#
    );
    eprintln!(
        "interop: booting the VM (the kernel's nfsd and NFS client, rpcrdma-gateway between)"
    );
    let (status, out) = run_script("interop.sh", &script, Duration::from_secs(1200))?;
    for line in out
        .lines()
        .filter(|l| l.starts_with("interop: ") || l.contains("INTEROP-FAIL"))
    {
        println!("{line}");
    }
    let st = find_kv(&out, "rpcrdma-gateway: stats");
    let n = |k: &str| {
        st.get(k)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(u64::MAX)
    };
    report(&st);
    let mut problems = Vec::new();
    if status != 0 {
        problems.push(format!("the workload failed (status {status})"));
    }
    for (key, what) in [
        ("err_vers", "ERR_VERS replies (decode errors)"),
        ("err_chunk", "ERR_CHUNK replies (decode errors)"),
        ("reply_too_large", "replies that fit nowhere"),
        ("leaked", "leaked descriptors, calls or pages"),
        ("failed_completions", "failed work requests"),
        ("failed_connections", "connections that failed"),
        ("backend_errors", "calls the backend failed"),
        ("pool_rejected", "refused completions"),
    ] {
        if n(key) != 0 {
            problems.push(format!("{} {what}", n(key)));
        }
    }
    for (key, what) in [
        ("read_bytes", "no data through Read chunks"),
        ("write_chunk_bytes", "no data through write chunks"),
        ("reply_chunk_replies", "no reply through a reply chunk"),
    ] {
        if n(key) == 0 || n(key) == u64::MAX {
            problems.push(what.to_string());
        }
    }
    if problems.is_empty() {
        println!("\ninterop: PASS — the Linux NFS/RDMA client mounted, wrote, listed, read back and unmounted through rpcrdma-gateway");
        Ok(())
    } else {
        eprintln!("{out}");
        Err(format!("interop failed: {}", problems.join("; ")).into())
    }
}

fn report(st: &HashMap<String, String>) {
    let g = |k: &str| st.get(k).cloned().unwrap_or_else(|| "?".into());
    println!("\nrpcrdma-gateway counters:");
    println!(
        "  calls {} (forwarded {}, replies {}); RDMA Read {} B in {} calls ({} in call chunks); write chunks {} B in {} replies; reply chunks {} B in {} replies",
        g("calls"),
        g("forwarded"),
        g("backend_replies"),
        g("read_bytes"),
        g("calls_with_read_chunks"),
        g("calls_in_call_chunk"),
        g("write_chunk_bytes"),
        g("write_chunk_replies"),
        g("reply_chunk_bytes"),
        g("reply_chunk_replies"),
    );
    println!(
        "  the client asked for {} credits (granted {}); offered write chunks in {} calls, reply chunks in {}",
        g("requested_credits"),
        g("granted"),
        g("calls_with_write_chunk"),
        g("calls_with_reply_chunk"),
    );
    println!(
        "  decode errors {} + {}; leaked {}; failed work requests {}; refused completions {}; backend errors {}",
        g("err_vers"),
        g("err_chunk"),
        g("leaked"),
        g("failed_completions"),
        g("pool_rejected"),
        g("backend_errors"),
    );
}

/// `cargo xtask bench vm --rival kernel`.
pub fn bench_rival() -> Result<()> {
    Err("bench vm --rival kernel: not built yet".into())
}
