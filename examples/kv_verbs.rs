//! The key-value service of `kv.rs` on real verbs: `rpcrdma-hosted`'s server runs it on an
//! RDMA device (a NIC, or Soft-RoCE), and a verbs client calls it over a real RC connection.
//!
//! ```sh
//! # inside the Soft-RoCE VM (rxe0 on 10.0.2.15), from the repository root:
//! cargo build --example kv_verbs
//! cargo xtask vm -- target/debug/examples/kv_verbs --addr 10.0.2.15
//! ```
//!
//! The server side is the same service value as over the software NIC: only the device
//! changed. It runs on its own thread here so that one program holds both peers.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rpcrdma_core::responder::{Call, ReplyWriter, Service, Verdict};
use rpcrdma_examples::{
    parse_result, put_args, KvService, KV_NOT_FOUND, KV_OK, KV_PROG, KV_VERS, PROC_GET, PROC_PUT,
};
use rpcrdma_hosted::client::{Client, Reply};
use rpcrdma_hosted::server::{App, Server, ServerConfig};
use rpcrdma_services::oncrpc;

/// The service, as the hosted server runs it: a [`Service`] that is also an [`App`] (no
/// calls answered later, so every `App` default applies).
struct Kv(KvService);

impl Service for Kv {
    fn serve(&mut self, call: &Call<'_>, reply: &mut ReplyWriter<'_>) -> Verdict {
        self.0.serve(call, reply)
    }
}

impl App for Kv {
    type Answer = ();
}

const PORT: u16 = 20051;

fn main() {
    let addr: Ipv4Addr = std::env::args()
        .skip_while(|a| a != "--addr")
        .nth(1)
        .map_or(Ok(Ipv4Addr::new(10, 0, 2, 15)), |a| a.parse())
        .expect("--addr takes an IPv4 address");
    if let Err(e) = run(addr) {
        eprintln!("kv_verbs: {e}");
        std::process::exit(1);
    }
}

fn run(addr: Ipv4Addr) -> Result<(), Box<dyn std::error::Error>> {
    let stop = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let server_stop = Arc::clone(&stop);
    let server = std::thread::spawn(move || -> Result<u64, String> {
        let cfg = ServerConfig {
            addr,
            port: PORT,
            credits: 16,
            ..ServerConfig::default()
        };
        let mut server =
            Server::with_app(cfg, Kv(KvService::default())).map_err(|e| e.to_string())?;
        let _ = ready_tx.send(());
        server.run(&server_stop).map_err(|e| e.to_string())?;
        let stats = server.stats();
        if stats.leaked != 0 {
            return Err(format!("{} descriptors held after teardown", stats.leaked));
        }
        Ok(stats.responder.calls)
    });
    ready_rx
        .recv_timeout(Duration::from_secs(10))
        .map_err(|_| "the server did not start (is there an RDMA device? `rdma link`)")?;

    let mut client = Client::connect(addr, PORT, 16, 4096, 4096, 1)?;
    let mut xid = 0;
    let mut call = |client: &mut Client, proc_: u32, args: &[u8]| -> Result<Vec<u8>, String> {
        xid += 1;
        let mut msg = vec![0u8; 40];
        let n = oncrpc::emit_call(&mut msg, xid, KV_PROG, KV_VERS, proc_).ok_or("call header")?;
        msg.truncate(n);
        msg.extend_from_slice(args);
        client.send_call(xid, &msg).map_err(|e| e.to_string())?;
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut replies = Vec::new();
        while replies.is_empty() {
            client
                .poll_replies(&mut replies)
                .map_err(|e| e.to_string())?;
            if Instant::now() > deadline {
                return Err(format!("no reply to xid {xid} within 10 s"));
            }
        }
        match replies.remove(0) {
            Reply::Msg { rpc, .. } => Ok(rpc),
            Reply::Error { code, .. } => Err(format!("RDMA_ERROR {code}")),
        }
    };
    let puts: [(u32, &[u8]); 2] = [(1, b"over verbs"), (2, &[7; 100])];
    for (key, value) in puts {
        let mut args = [0u8; 512];
        let n = put_args(&mut args, key, value).ok_or("value too long")?;
        let rpc = call(&mut client, PROC_PUT, &args[..n])?;
        assert_eq!(parse_result(&rpc)?.0, KV_OK);
        println!("PUT {key}: ok");
    }
    for (key, value) in puts {
        let rpc = call(&mut client, PROC_GET, &key.to_be_bytes())?;
        assert_eq!(parse_result(&rpc)?, (KV_OK, value));
        println!("GET {key}: {} bytes, as stored", value.len());
    }
    let rpc = call(&mut client, PROC_GET, &5u32.to_be_bytes())?;
    assert_eq!(parse_result(&rpc)?.0, KV_NOT_FOUND);
    println!("GET 5: not found");
    client.disconnect();
    stop.store(true, Ordering::Relaxed);
    let calls = server.join().map_err(|_| "server thread panicked")??;
    println!("server: {calls} calls answered, nothing held after teardown");
    Ok(())
}
