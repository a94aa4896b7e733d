//! The connection table: socket cookie → connection (who, where, when) and its two streams.
//!
//! Connections come from the kernel's accept/connect records, or from the first packet of a
//! connection that was open before capture started. Closed cookies are remembered for a while
//! (bounded) so late retransmissions do not resurrect them as new connections.
use std::{
    collections::{HashMap, VecDeque},
    fmt,
    net::SocketAddr,
};

use crate::stream::{Reassembler, ReassemblyConfig};

/// Observer-local connection number, shown to users (cookies are long and opaque).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "c{}", self.0)
    }
}

/// Direction from the broker's point of view.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Peer → broker.
    Ingress = 0,
    /// Broker → peer.
    Egress = 1,
}

impl Direction {
    pub fn from_egress(egress: bool) -> Self {
        if egress { Self::Egress } else { Self::Ingress }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ingress => "in",
            Self::Egress => "out",
        }
    }
}

/// Who and where a connection is.
#[derive(Clone, Debug)]
pub struct Connection {
    pub id: ConnId,
    pub cookie: u64,
    /// Owning process, once known.
    pub pid: Option<u32>,
    pub fd: Option<u32>,
    /// Broker-side address.
    pub local: SocketAddr,
    pub peer: SocketAddr,
    /// Wall-clock ns since the epoch when it was established, if seen.
    pub opened_ns: Option<u64>,
    pub closed_ns: Option<u64>,
    /// Open before capture started: its streams were joined mid-way.
    pub preexisting: bool,
    /// Opened by the target process (else accepted on a target port).
    pub outgoing: bool,
}

pub(crate) struct Entry {
    pub info: Connection,
    pub streams: [Reassembler; 2],
    /// Kernel reports the close (sock_ops state callback enabled for it).
    pub close_reported_by_kernel: bool,
    pub owner_attempts: u8,
}

pub(crate) struct Table {
    entries: HashMap<u64, Entry>,
    closed: HashMap<u64, ()>,
    closed_order: VecDeque<u64>,
    closed_cap: usize,
    next_id: u64,
    reassembly: ReassemblyConfig,
}

impl Table {
    pub fn new(reassembly: ReassemblyConfig) -> Self {
        Self {
            entries: HashMap::new(),
            closed: HashMap::new(),
            closed_order: VecDeque::new(),
            closed_cap: 65536,
            next_id: 1,
            reassembly,
        }
    }

    pub fn get_mut(&mut self, cookie: u64) -> Option<&mut Entry> {
        self.entries.get_mut(&cookie)
    }

    pub fn was_closed(&self, cookie: u64) -> bool {
        self.closed.contains_key(&cookie)
    }

    pub fn insert(&mut self, cookie: u64, local: SocketAddr, peer: SocketAddr) -> &mut Entry {
        let id = ConnId(self.next_id);
        self.next_id += 1;
        let info = Connection {
            id,
            cookie,
            pid: None,
            fd: None,
            local,
            peer,
            opened_ns: None,
            closed_ns: None,
            preexisting: false,
            outgoing: false,
        };
        let streams = [
            Reassembler::new(self.reassembly.clone()),
            Reassembler::new(self.reassembly.clone()),
        ];
        self.entries.entry(cookie).or_insert(Entry {
            info,
            streams,
            close_reported_by_kernel: false,
            owner_attempts: 0,
        })
    }

    pub fn remove(&mut self, cookie: u64) -> Option<Entry> {
        let entry = self.entries.remove(&cookie)?;
        if self.closed.insert(cookie, ()).is_none() {
            self.closed_order.push_back(cookie);
            if self.closed_order.len() > self.closed_cap
                && let Some(old) = self.closed_order.pop_front()
            {
                self.closed.remove(&old);
            }
        }
        Some(entry)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn cookies(&self) -> Vec<u64> {
        self.entries.keys().copied().collect()
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&u64, &mut Entry)> {
        self.entries.iter_mut()
    }
}
