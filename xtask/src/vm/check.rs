//! `cargo xtask vm --check`: boots the VM and shows Soft-RoCE working end to end —
//! `ibv_devinfo` on rxe0 and an `ib_send_bw` client/server pair over it.

use std::ffi::OsString;
use std::time::Instant;

use super::{ensure_ready, need_tool, run_in_vm_capture, vm_dir, VmOptions, RXE_DEV, VM_ADDR};
use crate::util::Result;

pub fn self_check(opts: &VmOptions) -> Result<()> {
    need_tool("ib_send_bw", "perftest")?;
    let t = Instant::now();
    ensure_ready()?;
    let prep = t.elapsed();
    let script = format!(
        r#"set -u
echo "== ibv_devinfo -d {dev}"
ibv_devinfo -d {dev} || exit 10
echo "== ib_send_bw -d {dev} -x 1 -s 64 -n 2000: server in the background, client to {addr}"
ib_send_bw -d {dev} -x 1 -s 64 -n 2000 > /tmp/ib_send_bw.server 2>&1 &
server=$!
ok=0
for i in 1 2 3 4 5 6 7 8 9 10; do
  sleep 0.5
  if ib_send_bw -d {dev} -x 1 -s 64 -n 2000 {addr} > /tmp/ib_send_bw.client 2>&1; then ok=1; break; fi
  kill -0 $server 2>/dev/null || break
done
wait $server; srv=$?
echo "-- client"; cat /tmp/ib_send_bw.client
echo "-- server"; cat /tmp/ib_send_bw.server
[ $ok = 1 ] || exit 11
[ $srv = 0 ] || exit 12
"#,
        dev = RXE_DEV,
        addr = VM_ADDR
    );
    let cmd: [OsString; 3] = ["bash".into(), "-c".into(), script.into()];
    let t = Instant::now();
    let (code, output) = run_in_vm_capture(&cmd, opts)?;
    let took = t.elapsed();
    let rates = msg_rates_mpps(&output);
    let devinfo = output.contains("transport:") && output.contains("PORT_ACTIVE");
    eprintln!(
        "\nvm check: preparation {:.1} s, VM run {:.1} s (boot + ibv_devinfo + ib_send_bw)",
        prep.as_secs_f64(),
        took.as_secs_f64()
    );
    eprintln!(
        "vm check: ibv_devinfo -d {RXE_DEV}: {}",
        if devinfo {
            "ok (PORT_ACTIVE)"
        } else {
            "FAILED"
        }
    );
    match rates[..] {
        [client, server, ..] => eprintln!(
            "vm check: ib_send_bw 64 B over {RXE_DEV}: client {client} Mpps, server {server} Mpps \
             ({:.1} k msg/s received)",
            server * 1000.0
        ),
        _ => eprintln!("vm check: ib_send_bw: FAILED (no result lines from client and server)"),
    }
    if code == 0 && devinfo && rates.len() >= 2 {
        eprintln!("vm check: PASS");
        Ok(())
    } else {
        Err(format!(
            "vm check FAILED (exit status {code}; 10 = ibv_devinfo failed, 11/12 = ib_send_bw \
             client/server failed, 125 = no status from the VM). The console log is {}; \
             check that rdma-core, ibverbs-providers, ibverbs-utils and perftest are installed \
             (`cargo xtask setup`)",
            vm_dir().join("console.log").display()
        )
        .into())
    }
}

/// The `MsgRate[Mpps]` column of each of perftest's result lines (the last column of the first
/// line that starts with a number after each `#bytes` header).
fn msg_rates_mpps(output: &str) -> Vec<f64> {
    let mut rates = Vec::new();
    let mut after_header = false;
    for line in output.lines() {
        let line = line.trim();
        if line.starts_with("#bytes") {
            after_header = true;
        } else if after_header && line.starts_with(|c: char| c.is_ascii_digit()) {
            after_header = false;
            if let Some(r) = line.split_whitespace().last().and_then(|r| r.parse().ok()) {
                rates.push(r);
            }
        }
    }
    rates
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates() {
        let out = " #bytes     #iterations    BW peak[MB/sec]    BW average[MB/sec]   \
                   MsgRate[Mpps]\n 64         2000             3.61               3.58  \
                   \t\t   0.058672\n";
        assert_eq!(msg_rates_mpps(out), [0.058672]);
        assert_eq!(
            msg_rates_mpps(&format!("{out}--\n{out}")),
            [0.058672, 0.058672]
        );
    }
}
