//! `cargo xtask vm --nodes 2`: two VMs, each booting its own kernel, joined by one wire.
//!
//! Node A is x86_64 (10.0.3.1); node B is x86_64 or aarch64 (10.0.3.2). Each has one
//! virtio-net NIC whose frames QEMU carries as UDP datagrams between the two QEMU processes on
//! the host's loopback (`-netdev socket,udp=…`), and Soft-RoCE (`rxe0`) runs on its `eth0`:
//! two independent RDMA stacks with a real link between them that either side can take down.
//! Nothing leaves the host: the datagrams go from one QEMU to the other on 127.0.0.1, and
//! neither VM has any other network device.
//!
//! The interface is the one-node VM's, once per node: each node runs a command in the caller's
//! directory with the caller's environment, plus `XTASK_NODE` (`a`/`b`), `XTASK_NODE_ADDR`,
//! `XTASK_PEER_ADDR` and `XTASK_BOOT` (1 on the first boot). The run lasts as long as node A's
//! command: node B's command is the server side and should end when node A tells it to (over
//! the wire); if it still runs [`PairOptions::linger`] after node A ended, it is stopped. When
//! node B goes down before its command ended (it powered itself off, rebooted or crashed: no
//! exit status) while node A still runs, node B boots again with the same command
//! (`XTASK_BOOT` counts the boots) — a reboot, as the peer sees it.

use std::ffi::OsString;
use std::net::UdpSocket;
use std::time::{Duration, Instant};

use super::boot::{self, Running, Wire};
use super::{prepare_image_for, vm_dir, Arch, VmImage, VmOptions, NO_STATUS};
use crate::util::Result;

/// Node A's address on the wire.
pub const ADDR_A: &str = "10.0.3.1";
/// Node B's address on the wire.
pub const ADDR_B: &str = "10.0.3.2";

/// How to run a pair.
#[derive(Clone, Debug)]
pub struct PairOptions {
    /// Node B's architecture (node A is x86_64).
    pub arch_b: Arch,
    /// Each node's limits (per boot).
    pub a: VmOptions,
    pub b: VmOptions,
    /// How long node B may run after node A's command ended before it is stopped.
    pub linger: Duration,
    /// At most this many boots of node B (its reboots while node A runs).
    pub max_boots_b: u32,
}

impl Default for PairOptions {
    fn default() -> Self {
        // One vCPU each: two TCG VMs on a 2-core host.
        let one = VmOptions {
            smp: 1,
            mem_mib: 1536,
            ..VmOptions::default()
        };
        PairOptions {
            arch_b: Arch::X86_64,
            a: one.clone(),
            b: one,
            linger: Duration::from_secs(30),
            max_boots_b: 4,
        }
    }
}

/// One boot of a node: its command's exit status (125: none) and output.
#[derive(Debug)]
pub struct NodeRun {
    pub code: i32,
    pub output: String,
}

/// What a pair run gives back: node A's run and each boot of node B in order.
#[derive(Debug)]
pub struct PairRun {
    pub a: NodeRun,
    pub b: Vec<NodeRun>,
}

impl PairRun {
    /// Node B's output over all its boots.
    pub fn b_output(&self) -> String {
        self.b.iter().map(|r| r.output.as_str()).collect()
    }
}

/// Two free UDP ports on the loopback (free when asked; QEMU binds them right after).
fn free_udp_ports() -> Result<(u16, u16)> {
    let a = UdpSocket::bind("127.0.0.1:0")?;
    let b = UdpSocket::bind("127.0.0.1:0")?;
    Ok((a.local_addr()?.port(), b.local_addr()?.port()))
}

/// Makes both nodes' images (kernels, initramfs, the aarch64 userland) if they are not cached.
pub fn prepare(arch_b: Arch) -> Result<(VmImage, VmImage)> {
    let a = prepare_image_for(Arch::X86_64)?;
    let b = prepare_image_for(arch_b)?;
    Ok((a, b))
}

/// Runs `cmd_a` on node A and `cmd_b` on node B (see the module's text).
pub fn run_pair(cmd_a: &[OsString], cmd_b: &[OsString], opts: &PairOptions) -> Result<PairRun> {
    if cmd_a.is_empty() || cmd_b.is_empty() {
        return Err("vm: a pair needs a command for each node".into());
    }
    let (image_a, image_b) = prepare(opts.arch_b)?;
    let (port_a, port_b) = free_udp_ports()?;
    let wire_a = Wire {
        node: 'a',
        addr: ADDR_A.into(),
        peer: ADDR_B.into(),
        mac: "52:54:00:00:03:01".into(),
        local_port: port_a,
        peer_port: port_b,
        boot: 1,
    };
    let mut wire_b = Wire {
        node: 'b',
        addr: ADDR_B.into(),
        peer: ADDR_A.into(),
        mac: "52:54:00:00:03:02".into(),
        local_port: port_b,
        peer_port: port_a,
        boot: 1,
    };
    let dir = vm_dir();
    let mut dirs = Vec::new();
    let mut new_dir = || -> Result<std::path::PathBuf> {
        let d = boot::new_run_dir(&dir)?;
        dirs.push(d.clone());
        Ok(d)
    };
    let start_b = |wire: &Wire, run_dir: &std::path::Path| {
        boot::start(&image_b, run_dir, cmd_b, &opts.b, Some(wire))
    };
    let mut b: Running = start_b(&wire_b, &new_dir()?)?;
    let mut a = boot::start(&image_a, &new_dir()?, cmd_a, &opts.a, Some(&wire_a))?;
    let mut b_runs = Vec::new();
    let a_run = loop {
        if let Some((code, output)) = a.poll()? {
            break NodeRun { code, output };
        }
        if b_runs.len() < wire_b.boot as usize {
            if let Some((code, output)) = b.poll()? {
                b_runs.push(NodeRun { code, output });
            }
        }
        if b_runs.len() == wire_b.boot as usize
            && b_runs.last().is_some_and(|r| r.code == NO_STATUS)
        {
            if wire_b.boot >= opts.max_boots_b {
                eprintln!(
                    "vm: node B powered off {} times; not booting it again",
                    wire_b.boot
                );
                let (code, output) = a.finish()?;
                break NodeRun { code, output };
            }
            wire_b.boot += 1;
            eprintln!(
                "vm: node B powered off; booting it again (boot {})",
                wire_b.boot
            );
            b = start_b(&wire_b, &new_dir()?)?;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    if b_runs.len() < wire_b.boot as usize {
        let deadline = Instant::now() + opts.linger;
        let last = loop {
            if let Some((code, output)) = b.poll()? {
                break (code, output);
            }
            if Instant::now() > deadline {
                eprintln!(
                    "vm: node B still ran {} s after node A ended; stopped it",
                    opts.linger.as_secs()
                );
                break b.kill();
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        b_runs.push(NodeRun {
            code: last.0,
            output: last.1,
        });
    }
    for (i, d) in dirs.iter().enumerate() {
        if i + 1 == dirs.len() {
            let _ = std::fs::copy(d.join("console.log"), dir.join("console.log"));
        }
        let _ = std::fs::remove_dir_all(d);
    }
    Ok(PairRun {
        a: a_run,
        b: b_runs,
    })
}

/// `cargo xtask vm --nodes 2 [--arch-b aarch64] --b CMD -- CMD-A…`: prints each node's output
/// with its name in front; the exit status is node A's, or node B's last boot's when node A's
/// is 0.
pub fn main(cmd_a: &[OsString], cmd_b: &str, opts: &PairOptions) -> Result<i32> {
    let b: Vec<OsString> = vec!["sh".into(), "-c".into(), cmd_b.into()];
    let run = run_pair(cmd_a, &b, opts)?;
    for line in run.a.output.lines() {
        println!("a| {line}");
    }
    for (i, r) in run.b.iter().enumerate() {
        for line in r.output.lines() {
            println!("b{}| {line}", i + 1);
        }
    }
    eprintln!(
        "vm: node A exit status {}; node B ({}) {}",
        run.a.code,
        opts.arch_b.name(),
        run.b
            .iter()
            .enumerate()
            .map(|(i, r)| format!("boot {}: {}", i + 1, r.code))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let b_last = run.b.last().map_or(0, |r| r.code);
    Ok(if run.a.code != 0 { run.a.code } else { b_last })
}
