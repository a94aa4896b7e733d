//! Decoding of raw ring-buffer records into typed views (no copies, no allocation).
//!
//! The kernel writes three record types, each starting with a `u32` [`EventKind`]. A record that
//! is too short or has an unknown kind is a bug or a version mismatch between the embedded
//! object and this code; it is reported as [`RecordError`] and counted by the caller.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use observer_common::{
    CHUNK_HEADER_SIZE, ChunkHeader, ConnOp, ConnRecord, EventKind, ProcOp, ProcRecord, chunk_flags,
};

/// One record from the ring, borrowing its bytes.
#[derive(Debug)]
pub enum Record<'a> {
    Chunk(Chunk<'a>),
    Conn(ConnRecord),
    Proc(ProcRecord),
}

/// One chunk of one packet's payload.
#[derive(Debug)]
pub struct Chunk<'a> {
    pub header: ChunkHeader,
    pub data: &'a [u8],
}

impl Chunk<'_> {
    pub fn egress(&self) -> bool {
        self.header.flags & chunk_flags::EGRESS != 0
    }
    pub fn has(&self, flag: u32) -> bool {
        self.header.flags & flag != 0
    }
    pub fn local(&self) -> SocketAddr {
        socket_addr(
            self.header.flags & chunk_flags::IPV6 != 0,
            &self.header.local_addr,
            self.header.local_port,
        )
    }
    pub fn remote(&self) -> SocketAddr {
        socket_addr(
            self.header.flags & chunk_flags::IPV6 != 0,
            &self.header.remote_addr,
            self.header.remote_port,
        )
    }
}

/// Connection record accessors.
pub trait ConnRecordExt {
    fn operation(&self) -> Option<ConnOp>;
    fn local(&self) -> SocketAddr;
    fn remote(&self) -> SocketAddr;
}

impl ConnRecordExt for ConnRecord {
    fn operation(&self) -> Option<ConnOp> {
        ConnOp::from_u32(self.op)
    }
    fn local(&self) -> SocketAddr {
        socket_addr(self.family == AF_INET6, &self.local_addr, self.local_port)
    }
    fn remote(&self) -> SocketAddr {
        socket_addr(self.family == AF_INET6, &self.remote_addr, self.remote_port)
    }
}

/// Process record accessors.
pub trait ProcRecordExt {
    fn operation(&self) -> Option<ProcOp>;
}

impl ProcRecordExt for ProcRecord {
    fn operation(&self) -> Option<ProcOp> {
        match self.op {
            1 => Some(ProcOp::Exec),
            2 => Some(ProcOp::Exit),
            _ => None,
        }
    }
}

const AF_INET6: u32 = 10;

/// IPv4 addresses occupy the first 4 bytes; v4-mapped IPv6 is shown as IPv4, as users expect.
fn socket_addr(ipv6: bool, bytes: &[u8; 16], port: u16) -> SocketAddr {
    let ip = if ipv6 {
        let v6 = Ipv6Addr::from(*bytes);
        match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        }
    } else {
        IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]))
    };
    SocketAddr::new(ip, port)
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecordError {
    #[error(
        "ring record of {len} bytes is too short for its kind {kind}; the embedded eBPF object does not match this build"
    )]
    TooShort { kind: u32, len: usize },
    #[error("ring record has unknown kind {0}; the embedded eBPF object does not match this build")]
    UnknownKind(u32),
    #[error("chunk record claims {claimed} payload bytes but carries {actual}")]
    BadLength { claimed: u32, actual: usize },
}

/// Reads a record. `bytes` is exactly what the kernel wrote (the ring reports each record's size).
pub fn parse(bytes: &[u8]) -> Result<Record<'_>, RecordError> {
    if bytes.len() < 4 {
        return Err(RecordError::TooShort {
            kind: 0,
            len: bytes.len(),
        });
    }
    let kind = u32::from_ne_bytes(bytes[..4].try_into().expect("4 bytes"));
    match EventKind::from_u32(kind) {
        Some(EventKind::Chunk) => {
            let header: ChunkHeader = read_pod(bytes, kind)?;
            let data = &bytes[CHUNK_HEADER_SIZE..];
            if data.len() != header.captured as usize {
                return Err(RecordError::BadLength {
                    claimed: header.captured,
                    actual: data.len(),
                });
            }
            Ok(Record::Chunk(Chunk { header, data }))
        }
        Some(EventKind::Conn) => Ok(Record::Conn(read_pod(bytes, kind)?)),
        Some(EventKind::Proc) => Ok(Record::Proc(read_pod(bytes, kind)?)),
        None => Err(RecordError::UnknownKind(kind)),
    }
}

/// Copies a plain-old-data struct out of the record (the ring gives no alignment guarantee
/// beyond 8 bytes, and the structs are small).
fn read_pod<T: Copy>(bytes: &[u8], kind: u32) -> Result<T, RecordError> {
    if bytes.len() < std::mem::size_of::<T>() {
        return Err(RecordError::TooShort {
            kind,
            len: bytes.len(),
        });
    }
    // SAFETY: length checked; T is a repr(C) record type from observer-common made only of
    // integers and byte arrays, so every bit pattern is valid.
    Ok(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn as_bytes<T>(v: &T) -> &[u8] {
        unsafe {
            std::slice::from_raw_parts((v as *const T).cast::<u8>(), std::mem::size_of::<T>())
        }
    }

    #[test]
    fn chunk_with_payload_and_addresses() {
        let header = ChunkHeader {
            kind: EventKind::Chunk as u32,
            flags: chunk_flags::EGRESS | chunk_flags::PSH,
            ts_ns: 7,
            cookie: 42,
            seq: 1000,
            payload_len: 5,
            offset: 0,
            captured: 5,
            local_addr: [127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            remote_addr: [127, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            local_port: 1883,
            remote_port: 40000,
            chunks: 1,
            _pad: 0,
        };
        let mut raw = as_bytes(&header).to_vec();
        raw.extend_from_slice(b"hello");
        let Record::Chunk(chunk) = parse(&raw).unwrap() else {
            panic!("not a chunk")
        };
        assert_eq!(chunk.data, b"hello");
        assert!(chunk.egress());
        assert_eq!(chunk.local(), "127.0.0.1:1883".parse().unwrap());
        assert_eq!(chunk.remote(), "127.0.0.2:40000".parse().unwrap());
        raw.pop();
        assert_eq!(
            parse(&raw).unwrap_err(),
            RecordError::BadLength {
                claimed: 5,
                actual: 4
            }
        );
    }

    #[test]
    fn v4_mapped_ipv6_is_shown_as_ipv4() {
        let mut addr = [0u8; 16];
        addr[10] = 0xff;
        addr[11] = 0xff;
        addr[12..].copy_from_slice(&[10, 1, 2, 3]);
        assert_eq!(socket_addr(true, &addr, 5), "10.1.2.3:5".parse().unwrap());
        let loopback6 = Ipv6Addr::LOCALHOST.octets();
        assert_eq!(socket_addr(true, &loopback6, 5), "[::1]:5".parse().unwrap());
    }

    #[test]
    fn short_and_unknown_records_are_errors() {
        assert!(matches!(parse(&[1, 0]), Err(RecordError::TooShort { .. })));
        assert!(matches!(
            parse(&[1, 0, 0, 0, 0]),
            Err(RecordError::TooShort { kind: 1, .. })
        ));
        assert_eq!(
            parse(&[9, 0, 0, 0]).unwrap_err(),
            RecordError::UnknownKind(9)
        );
    }
}
