//! [`ServerConfig`], and the pool and responder configurations it gives each connection.

use std::net::Ipv4Addr;

use rpcrdma_core::pool::PoolConfig;
use rpcrdma_core::responder::ResponderConfig;
use rpcrdma_core::wire::{DecodeLimits, NFS_RDMA_PORT};
use rpcrdma_services::{Program, NFS_PROG};

use super::{MAX_CALLS, MAX_RECV};

/// Server settings.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address to listen on (0.0.0.0: every RDMA device).
    pub addr: Ipv4Addr,
    /// The peers that may connect (empty: every peer). A refused peer gets a connection
    /// reject, and the reason is logged.
    pub allow: Vec<AllowRule>,
    /// Port (20049, NFS/RDMA's).
    pub port: u16,
    /// Required device name, if any.
    pub device: Option<String>,
    /// Receive buffer size (inline threshold we receive).
    pub buffer_size: usize,
    /// Credits granted per connection (for all connections together with an SRQ).
    pub credits: u16,
    /// Receives per refill doorbell.
    pub batch: u16,
    /// Largest inline reply (send slot size).
    pub send_size: usize,
    /// Share one SRQ and pool among all connections.
    pub srq: bool,
    /// Sleep on completion channels instead of busy-polling.
    pub event_mode: bool,
    /// Signal every send-queue work request instead of the last Send of each batch (for
    /// comparison; see `ResponderConfig::signal_all`).
    pub signal_all: bool,
    /// Register and deregister a memory region around every Receive (the design the
    /// persistent pool replaced; for comparison only).
    pub register_per_receive: bool,
    /// Programs whose NULL procedure is answered.
    pub programs: Vec<Program>,
    /// Largest Read-chunk payload of one call.
    pub max_read_payload: u32,
    /// Bytes of Read-sink pages (all connections).
    pub sink_bytes: usize,
    /// Bytes of reply-payload pages (all connections).
    pub payload_bytes: usize,
    /// Receive buffers per connection beyond `credits + batch`: calls an app answers later
    /// keep their Receive, so an app with many calls pending (a gateway) needs these to keep
    /// its full grant.
    pub extra_receives: u16,
    /// Disconnect a connection on which nothing arrived for this long while it had no call in
    /// progress and no backward call outstanding (`None`: never). A peer that vanished without
    /// a disconnect (its link went down, its machine died) leaves a QP that nothing will ever
    /// fail if the server has nothing to send on it; this reaps it. A live client that was
    /// only quiet reconnects when it next calls (Linux's client drops idle transports itself
    /// after 5 minutes; the kernel's server ages idle ones out after 6 to 12). Keep it well
    /// above the clients' RPC timeout: a client that just reconnected may send nothing until
    /// that timeout passes (60 s for Linux's NFS over RDMA), and a shorter idle timeout would
    /// disconnect it again and again.
    pub idle_timeout: Option<std::time::Duration>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            addr: Ipv4Addr::UNSPECIFIED,
            port: NFS_RDMA_PORT,
            device: None,
            buffer_size: 4096,
            credits: 64,
            batch: 16,
            send_size: 4096,
            srq: false,
            event_mode: false,
            signal_all: false,
            register_per_receive: false,
            programs: vec![Program {
                prog: NFS_PROG,
                low: 3,
                high: 4,
            }],
            max_read_payload: 1 << 20,
            sink_bytes: 8 << 20,
            payload_bytes: 8 << 20,
            extra_receives: 0,
            allow: Vec::new(),
            idle_timeout: None,
        }
    }
}

impl ServerConfig {
    /// A receive pool's configuration: a connection's own (`epoch` ≥ 1), or the SRQ's (`credits`
    /// for all connections, epoch 0).
    pub(super) fn pool_config(&self, credits: u16, epoch: u16) -> PoolConfig {
        PoolConfig {
            buffer_size: self.buffer_size,
            credits,
            batch: self.batch,
            limits: DecodeLimits {
                max_read_payload: self.max_read_payload,
            },
            buffers: if self.extra_receives == 0 {
                0
            } else {
                credits
                    .saturating_add(self.batch)
                    .saturating_add(self.extra_receives)
                    .min(MAX_RECV as u16)
            },
            epoch,
        }
    }

    /// A connection's responder: `initiator_depth` RDMA Reads in flight (what its requester
    /// accepts), its epoch, and with an SRQ at most half its call slots in credits.
    pub(super) fn responder_config(&self, initiator_depth: u8, epoch: u16) -> ResponderConfig {
        let credits = if self.srq {
            self.credits.min((MAX_CALLS / 2) as u16)
        } else {
            self.credits
        };
        ResponderConfig {
            credits,
            send_size: self.send_size,
            initiator_depth,
            sq_depth: self.sq_depth(credits),
            epoch,
            signal_all: self.signal_all,
        }
    }

    /// Send-queue depth for `credits`.
    fn sq_depth(&self, credits: u16) -> u16 {
        // A Send per call plus room for Writes and Reads; the responder never exceeds it.
        (credits as usize * 4 + 64).min(u16::MAX as usize) as u16
    }
}

/// A range of IPv4 peers allowed to connect: `ADDR/PREFIX` (or `ADDR`, a /32).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AllowRule {
    /// The network address.
    pub addr: Ipv4Addr,
    /// Prefix length, 0..=32.
    pub prefix: u8,
}

impl AllowRule {
    /// Whether `peer` is in the range.
    pub fn contains(&self, peer: Ipv4Addr) -> bool {
        let mask = u32::MAX
            .checked_shl(32 - u32::from(self.prefix))
            .unwrap_or(0);
        u32::from(peer) & mask == u32::from(self.addr) & mask
    }
}

impl std::str::FromStr for AllowRule {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let (addr, prefix) = s.split_once('/').unwrap_or((s, "32"));
        let addr: Ipv4Addr = addr
            .parse()
            .map_err(|_| format!("`{s}`: not an IPv4 address (ADDR/PREFIX, e.g. 10.0.2.0/24)"))?;
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| *p <= 32)
            .ok_or_else(|| format!("`{s}`: the prefix length must be 0..=32"))?;
        Ok(AllowRule { addr, prefix })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_rules_parse_and_match_their_range_only() {
        let r: AllowRule = "10.0.2.0/24".parse().unwrap();
        assert!(r.contains("10.0.2.15".parse().unwrap()));
        assert!(!r.contains("10.0.3.15".parse().unwrap()));
        let one: AllowRule = "192.0.2.7".parse().unwrap();
        assert_eq!(one.prefix, 32);
        assert!(one.contains("192.0.2.7".parse().unwrap()));
        assert!(!one.contains("192.0.2.8".parse().unwrap()));
        let all: AllowRule = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("203.0.113.1".parse().unwrap()));
        assert!("10.0.2.0/33".parse::<AllowRule>().is_err());
        assert!("host/24".parse::<AllowRule>().is_err());
    }
}
