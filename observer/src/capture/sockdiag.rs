//! NETLINK_SOCK_DIAG (inet_diag): TCP sockets of our own network namespace asked of the kernel
//! directly, instead of reading /proc/PID/net/tcp{,6}.
//!
//! Why: every read of /proc/net/tcp walks all buckets of the established hash (262 144 here,
//! ~5-7 ms of CPU) however few sockets there are. A dump restricted to `1 << TCP_LISTEN` walks
//! only the listening hash, and an exact 4-tuple request (no `NLM_F_DUMP`) is one hash lookup.
//!
//! - [`SockDiag::listeners`]: every listening TCP socket (AF_INET and AF_INET6).
//! - [`SockDiag::connection`]: the socket with this exact (local, remote) pair, if any.
//! - [`parse_reply`]: the netlink reply bytes → [`TcpSocketEntry`]s (tested with canned bytes).
//!
//! The kernel answers for the network namespace of the netlink socket, i.e. ours: callers use
//! this only for processes in our namespace (see `ProcFs`), and /proc for the others.
//! Results are the same [`TcpSocketEntry`] as the /proc parser gives: addresses as the kernel
//! holds them (a dual-stack socket's v4 peer stays `::ffff:a.b.c.d`), inode, uid, state.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::procfs::{TCP_LISTEN, TcpSocketEntry, normalize};

// uapi constants (linux/netlink.h, linux/sock_diag.h, linux/inet_diag.h).
const NETLINK_SOCK_DIAG: libc::c_int = 4;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_MULTI: u16 = 0x2;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_HDRLEN: usize = 16;
/// struct inet_diag_sockid: sport, dport, src[4], dst[4], if, cookie[2].
const SOCKID_LEN: usize = 48;
/// struct inet_diag_req_v2: family, protocol, ext, pad, states, sockid.
const REQ_LEN: usize = 8 + SOCKID_LEN;
/// struct inet_diag_msg: family, state, timer, retrans, sockid, expires, rqueue, wqueue, uid,
/// inode.
const MSG_LEN: usize = 4 + SOCKID_LEN + 20;
/// INET_DIAG_NOCOOKIE: do not check the socket cookie.
const NO_COOKIE: u32 = !0;
/// Replies to a dump come in datagrams of at most a few pages; this holds the largest.
const RECV_BUF: usize = 64 * 1024;

/// Why the kernel could not be asked. Callers fall back to /proc on any of these.
#[derive(Debug, thiserror::Error)]
pub enum DiagError {
    #[error("sock_diag netlink socket: {what}: {source}")]
    Io {
        what: &'static str,
        source: io::Error,
    },
    #[error("sock_diag request failed: {0}")]
    Kernel(io::Error),
    #[error("malformed sock_diag reply: {0}; report it with the kernel version")]
    Malformed(String),
}

/// What one datagram of a reply says about the rest.
#[derive(Debug, PartialEq, Eq)]
pub enum Reply {
    /// A dump continues in the next datagram.
    More,
    /// NLMSG_DONE, or the end of a reply that is not multipart.
    Done,
}

/// A NETLINK_SOCK_DIAG socket (closed on drop).
#[derive(Debug)]
pub struct SockDiag {
    fd: OwnedFd,
    seq: u32,
    buf: Vec<u8>,
}

impl SockDiag {
    pub fn open() -> Result<Self, DiagError> {
        // SAFETY: plain socket(2); the result is checked before it is owned.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
                NETLINK_SOCK_DIAG,
            )
        };
        if fd < 0 {
            return Err(DiagError::Io {
                what: "socket",
                source: io::Error::last_os_error(),
            });
        }
        // SAFETY: fd is a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // A daemon must never hang on the kernel: give up after a second.
        let tv = libc::timeval {
            tv_sec: 1,
            tv_usec: 0,
        };
        // SAFETY: tv lives across the call and its size is passed.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&raw const tv).cast(),
                size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(DiagError::Io {
                what: "SO_RCVTIMEO",
                source: io::Error::last_os_error(),
            });
        }
        Ok(Self {
            fd,
            seq: 0,
            buf: vec![0; RECV_BUF],
        })
    }

    /// Every listening TCP socket of our network namespace, AF_INET first, then AF_INET6
    /// (the order of net/tcp then net/tcp6). A kernel without IPv6 yields only AF_INET ones.
    pub fn listeners(&mut self) -> Result<Vec<TcpSocketEntry>, DiagError> {
        let mut out = self.dump(libc::AF_INET as u8, 1 << TCP_LISTEN)?;
        match self.dump(libc::AF_INET6 as u8, 1 << TCP_LISTEN) {
            Ok(v6) => out.extend(v6),
            Err(DiagError::Kernel(e))
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ENOENT | libc::EAFNOSUPPORT | libc::EINVAL)
                ) => {}
            Err(e) => return Err(e),
        }
        Ok(out)
    }

    /// The TCP socket whose local and remote addresses are these (IPv4-mapped addresses and
    /// plain IPv4 are the same connection), in any state; `None` if there is none.
    pub fn connection(
        &mut self,
        local: SocketAddr,
        remote: SocketAddr,
    ) -> Result<Option<TcpSocketEntry>, DiagError> {
        let (local, remote) = (normalize(local), normalize(remote));
        // AF_INET finds dual-stack sockets with mapped addresses too: the kernel looks IPv4
        // tuples up in the same hash the IPv4 receive path uses.
        let family = if local.is_ipv4() && remote.is_ipv4() {
            libc::AF_INET
        } else {
            libc::AF_INET6
        };
        let req = request(
            self.next_seq(),
            family as u8,
            !0,
            NLM_F_REQUEST,
            Some((local, remote)),
        );
        match self.exchange(&req) {
            Ok(mut v) => Ok(v.pop()),
            Err(DiagError::Kernel(e)) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    fn dump(&mut self, family: u8, states: u32) -> Result<Vec<TcpSocketEntry>, DiagError> {
        let req = request(
            self.next_seq(),
            family,
            states,
            NLM_F_REQUEST | NLM_F_DUMP,
            None,
        );
        self.exchange(&req)
    }

    fn exchange(&mut self, req: &[u8]) -> Result<Vec<TcpSocketEntry>, DiagError> {
        let seq = u32::from_ne_bytes(req[8..12].try_into().expect("4 bytes"));
        // SAFETY: req is a valid buffer of req.len() bytes; an unconnected netlink socket sends
        // to the kernel (port id 0).
        let n = unsafe { libc::send(self.fd.as_raw_fd(), req.as_ptr().cast(), req.len(), 0) };
        if n < 0 {
            return Err(DiagError::Io {
                what: "send",
                source: io::Error::last_os_error(),
            });
        }
        let mut out = Vec::new();
        loop {
            // SAFETY: buf is writable for its whole length.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    self.buf.as_mut_ptr().cast(),
                    self.buf.len(),
                    libc::MSG_TRUNC,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(DiagError::Io {
                    what: "recv",
                    source: e,
                });
            }
            let n = n as usize;
            if n > self.buf.len() {
                return Err(DiagError::Malformed(format!(
                    "a {n}-byte datagram does not fit the {}-byte buffer",
                    self.buf.len()
                )));
            }
            if parse_reply(&self.buf[..n], seq, &mut out)? == Reply::Done {
                return Ok(out);
            }
        }
    }
}

/// One nlmsghdr + inet_diag_req_v2 for TCP. With `exact`, the sockid carries the 4-tuple (the
/// kernel looks it up with src = local); both addresses must be of `family` after mapping.
fn request(
    seq: u32,
    family: u8,
    states: u32,
    flags: u16,
    exact: Option<(SocketAddr, SocketAddr)>,
) -> Vec<u8> {
    let len = NLMSG_HDRLEN + REQ_LEN;
    let mut b = Vec::with_capacity(len);
    b.extend_from_slice(&(len as u32).to_ne_bytes());
    b.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    b.extend_from_slice(&flags.to_ne_bytes());
    b.extend_from_slice(&seq.to_ne_bytes());
    b.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills it in
    b.extend_from_slice(&[family, libc::IPPROTO_TCP as u8, 0, 0]);
    b.extend_from_slice(&states.to_ne_bytes());
    let (local, remote) = exact.unwrap_or((
        SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), 0),
        SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), 0),
    ));
    b.extend_from_slice(&local.port().to_be_bytes());
    b.extend_from_slice(&remote.port().to_be_bytes());
    let v6 = family == libc::AF_INET6 as u8;
    b.extend_from_slice(&addr_bytes(local.ip(), v6));
    b.extend_from_slice(&addr_bytes(remote.ip(), v6));
    b.extend_from_slice(&0u32.to_ne_bytes()); // any interface
    b.extend_from_slice(&NO_COOKIE.to_ne_bytes());
    b.extend_from_slice(&NO_COOKIE.to_ne_bytes());
    debug_assert_eq!(b.len(), len);
    b
}

/// An address as the 16 bytes of `idiag_src`/`idiag_dst` (network order; IPv4 in the first 4).
fn addr_bytes(ip: IpAddr, v6: bool) -> [u8; 16] {
    let mut out = [0u8; 16];
    match (ip, v6) {
        (IpAddr::V4(a), false) => out[..4].copy_from_slice(&a.octets()),
        (IpAddr::V4(a), true) => out = a.to_ipv6_mapped().octets(),
        (IpAddr::V6(a), _) => out = a.octets(),
    }
    out
}

/// Parses one datagram of a reply to request `seq`, appending its sockets to `out`. Messages of
/// other sequence numbers (a late reply to an earlier request) are skipped. NLMSG_ERROR with a
/// non-zero code is [`DiagError::Kernel`]; anything cut short or inconsistent is
/// [`DiagError::Malformed`].
pub fn parse_reply(
    mut buf: &[u8],
    seq: u32,
    out: &mut Vec<TcpSocketEntry>,
) -> Result<Reply, DiagError> {
    if buf.is_empty() {
        return Err(DiagError::Malformed("an empty datagram".into()));
    }
    let (mut multi, mut ours) = (false, false);
    while !buf.is_empty() {
        if buf.len() < NLMSG_HDRLEN {
            return Err(DiagError::Malformed(format!(
                "{} bytes left, less than a message header",
                buf.len()
            )));
        }
        let len = u32::from_ne_bytes(buf[0..4].try_into().expect("4 bytes")) as usize;
        let kind = u16::from_ne_bytes(buf[4..6].try_into().expect("2 bytes"));
        let flags = u16::from_ne_bytes(buf[6..8].try_into().expect("2 bytes"));
        let mseq = u32::from_ne_bytes(buf[8..12].try_into().expect("4 bytes"));
        if len < NLMSG_HDRLEN || len > buf.len() {
            return Err(DiagError::Malformed(format!(
                "message length {len} with {} bytes in the datagram",
                buf.len()
            )));
        }
        let payload = &buf[NLMSG_HDRLEN..len];
        // Messages are padded to 4 bytes; the last one may end the datagram unpadded.
        let step = (len + 3) & !3;
        buf = buf.get(step..).unwrap_or(&[]);
        if mseq != seq {
            continue;
        }
        ours = true;
        multi |= flags & NLM_F_MULTI != 0;
        match kind {
            NLMSG_DONE => return Ok(Reply::Done),
            NLMSG_ERROR => {
                let code = payload.get(0..4).ok_or_else(|| {
                    DiagError::Malformed("an NLMSG_ERROR without its code".into())
                })?;
                let code = i32::from_ne_bytes(code.try_into().expect("4 bytes"));
                if code == 0 {
                    return Ok(Reply::Done); // an acknowledgement
                }
                return Err(DiagError::Kernel(io::Error::from_raw_os_error(-code)));
            }
            SOCK_DIAG_BY_FAMILY => out.push(parse_msg(payload)?),
            other => {
                return Err(DiagError::Malformed(format!(
                    "unexpected message type {other}"
                )));
            }
        }
    }
    // Only stale messages: ours is still to come.
    Ok(if multi || !ours {
        Reply::More
    } else {
        Reply::Done
    })
}

/// One struct inet_diag_msg (attributes after it, none requested, are ignored).
fn parse_msg(p: &[u8]) -> Result<TcpSocketEntry, DiagError> {
    if p.len() < MSG_LEN {
        return Err(DiagError::Malformed(format!(
            "an inet_diag_msg of {} bytes, expected at least {MSG_LEN}",
            p.len()
        )));
    }
    let family = p[0];
    let state = p[1];
    let id = &p[4..4 + SOCKID_LEN];
    let sport = u16::from_be_bytes([id[0], id[1]]);
    let dport = u16::from_be_bytes([id[2], id[3]]);
    let src: [u8; 16] = id[4..20].try_into().expect("16 bytes");
    let dst: [u8; 16] = id[20..36].try_into().expect("16 bytes");
    let word = |at: usize| u32::from_ne_bytes(p[at..at + 4].try_into().expect("4 bytes"));
    let uid = word(4 + SOCKID_LEN + 12);
    let inode = u64::from(word(4 + SOCKID_LEN + 16));
    let addr = |b: [u8; 16], port: u16| -> Result<SocketAddr, DiagError> {
        match i32::from(family) {
            libc::AF_INET => Ok(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::new(b[0], b[1], b[2], b[3]),
                port,
            ))),
            libc::AF_INET6 => Ok(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(b),
                port,
                0,
                0,
            ))),
            f => Err(DiagError::Malformed(format!("address family {f}"))),
        }
    };
    Ok(TcpSocketEntry {
        local: addr(src, sport)?,
        remote: addr(dst, dport)?,
        state,
        inode,
        uid,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hdr(len: usize, kind: u16, flags: u16, seq: u32) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&(len as u32).to_ne_bytes());
        b.extend_from_slice(&kind.to_ne_bytes());
        b.extend_from_slice(&flags.to_ne_bytes());
        b.extend_from_slice(&seq.to_ne_bytes());
        b.extend_from_slice(&4242u32.to_ne_bytes());
        b
    }

    /// A canned SOCK_DIAG_BY_FAMILY message as the kernel writes it.
    fn diag_msg(seq: u32, flags: u16, e: &TcpSocketEntry) -> Vec<u8> {
        let v6 = e.local.is_ipv6();
        let mut b = hdr(NLMSG_HDRLEN + MSG_LEN, SOCK_DIAG_BY_FAMILY, flags, seq);
        let family = if v6 { libc::AF_INET6 } else { libc::AF_INET } as u8;
        b.extend_from_slice(&[family, e.state, 0, 0]);
        b.extend_from_slice(&e.local.port().to_be_bytes());
        b.extend_from_slice(&e.remote.port().to_be_bytes());
        b.extend_from_slice(&addr_bytes(e.local.ip(), v6));
        b.extend_from_slice(&addr_bytes(e.remote.ip(), v6));
        b.extend_from_slice(&[0; 12]); // if, cookie
        b.extend_from_slice(&[0; 12]); // expires, rqueue, wqueue
        b.extend_from_slice(&e.uid.to_ne_bytes());
        b.extend_from_slice(&(e.inode as u32).to_ne_bytes());
        b
    }

    fn error(seq: u32, code: i32) -> Vec<u8> {
        let mut b = hdr(NLMSG_HDRLEN + 4 + NLMSG_HDRLEN, NLMSG_ERROR, 0, seq);
        b.extend_from_slice(&code.to_ne_bytes());
        b.extend_from_slice(&hdr(NLMSG_HDRLEN + REQ_LEN, SOCK_DIAG_BY_FAMILY, 1, seq));
        b
    }

    fn done(seq: u32) -> Vec<u8> {
        let mut b = hdr(NLMSG_HDRLEN + 4, NLMSG_DONE, NLM_F_MULTI, seq);
        b.extend_from_slice(&0i32.to_ne_bytes());
        b
    }

    fn listener(addr: &str, inode: u64) -> TcpSocketEntry {
        let local: SocketAddr = addr.parse().unwrap();
        let remote = match local {
            SocketAddr::V4(_) => SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), 0),
            SocketAddr::V6(_) => SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), 0),
        };
        TcpSocketEntry {
            local,
            remote,
            state: TCP_LISTEN,
            inode,
            uid: 1000,
        }
    }

    #[test]
    fn request_layout() {
        let r = request(
            7,
            libc::AF_INET as u8,
            1 << TCP_LISTEN,
            NLM_F_REQUEST | NLM_F_DUMP,
            None,
        );
        assert_eq!(r.len(), 72);
        assert_eq!(u32::from_ne_bytes(r[0..4].try_into().unwrap()), 72);
        assert_eq!(u16::from_ne_bytes(r[4..6].try_into().unwrap()), 20);
        assert_eq!(u16::from_ne_bytes(r[6..8].try_into().unwrap()), 0x301);
        assert_eq!(u32::from_ne_bytes(r[8..12].try_into().unwrap()), 7);
        assert_eq!(&r[16..20], &[libc::AF_INET as u8, 6, 0, 0]);
        assert_eq!(u32::from_ne_bytes(r[20..24].try_into().unwrap()), 1 << 10);
        assert_eq!(&r[64..72], &[0xff; 8]); // no cookie
        let local: SocketAddr = "127.0.0.1:1883".parse().unwrap();
        let remote: SocketAddr = "10.1.2.3:50000".parse().unwrap();
        let r = request(
            1,
            libc::AF_INET as u8,
            !0,
            NLM_F_REQUEST,
            Some((local, remote)),
        );
        assert_eq!(&r[24..28], &[0x07, 0x5b, 0xc3, 0x50]); // ports, big-endian
        assert_eq!(&r[28..32], &[127, 0, 0, 1]);
        assert_eq!(&r[44..48], &[10, 1, 2, 3]);
        let r = request(
            1,
            libc::AF_INET6 as u8,
            !0,
            NLM_F_REQUEST,
            Some((local, remote)),
        );
        assert_eq!(
            &r[28..44],
            &Ipv4Addr::new(127, 0, 0, 1).to_ipv6_mapped().octets()
        );
    }

    #[test]
    fn parses_a_dump_across_datagrams() {
        let a = listener("0.0.0.0:1883", 11);
        let b = listener("[::]:1883", 12);
        let mut d1 = diag_msg(5, NLM_F_MULTI, &a);
        d1.extend(diag_msg(5, NLM_F_MULTI, &b));
        let mut out = Vec::new();
        assert_eq!(parse_reply(&d1, 5, &mut out).unwrap(), Reply::More);
        assert_eq!(parse_reply(&done(5), 5, &mut out).unwrap(), Reply::Done);
        assert_eq!(out, [a, b]);
        // A late message of another request is skipped.
        let mut d = diag_msg(4, NLM_F_MULTI, &a);
        d.extend(done(5));
        let mut out = Vec::new();
        assert_eq!(parse_reply(&d, 5, &mut out).unwrap(), Reply::Done);
        assert!(out.is_empty());
    }

    #[test]
    fn parses_an_exact_reply_and_its_errors() {
        let e = TcpSocketEntry {
            local: "[::ffff:127.0.0.1]:1883".parse().unwrap(),
            remote: "[::ffff:127.0.0.1]:40000".parse().unwrap(),
            state: 1,
            inode: 99,
            uid: 0,
        };
        let mut out = Vec::new();
        assert_eq!(
            parse_reply(&diag_msg(9, 0, &e), 9, &mut out).unwrap(),
            Reply::Done
        );
        assert_eq!(out, [e]);
        let err = parse_reply(&error(9, -libc::ENOENT), 9, &mut out).unwrap_err();
        assert!(
            matches!(&err, DiagError::Kernel(e) if e.raw_os_error() == Some(libc::ENOENT)),
            "{err}"
        );
        assert!(err.to_string().contains("No such file"), "{err}");
        // An acknowledgement is the end.
        assert_eq!(parse_reply(&error(9, 0), 9, &mut out).unwrap(), Reply::Done);
    }

    #[test]
    fn malformed_replies_are_errors_not_panics() {
        let good = diag_msg(1, NLM_F_MULTI, &listener("0.0.0.0:80", 1));
        let mut out = Vec::new();
        // Every truncation of a valid message.
        for cut in 0..good.len() {
            let r = parse_reply(&good[..cut], 1, &mut out);
            assert!(
                matches!(r, Err(DiagError::Malformed(_))),
                "cut {cut}: {r:?}"
            );
        }
        // Length fields that lie.
        for len in [0u32, 8, 15, good.len() as u32 + 1, u32::MAX] {
            let mut b = good.clone();
            b[0..4].copy_from_slice(&len.to_ne_bytes());
            let r = parse_reply(&b, 1, &mut out);
            assert!(
                matches!(r, Err(DiagError::Malformed(_))),
                "len {len}: {r:?}"
            );
        }
        // A message too short for an inet_diag_msg, an unknown family, an unknown type.
        let short = hdr(NLMSG_HDRLEN + 8, SOCK_DIAG_BY_FAMILY, 0, 1)
            .into_iter()
            .chain([0; 8])
            .collect::<Vec<_>>();
        let mut bad_family = good.clone();
        bad_family[16] = 99;
        let mut bad_type = good.clone();
        bad_type[4..6].copy_from_slice(&77u16.to_ne_bytes());
        let no_code = hdr(NLMSG_HDRLEN, NLMSG_ERROR, 0, 1);
        for (name, b) in [
            ("short", short),
            ("family", bad_family),
            ("type", bad_type),
            ("error without code", no_code),
        ] {
            let r = parse_reply(&b, 1, &mut out);
            let msg = format!("{:?}", r);
            assert!(matches!(r, Err(DiagError::Malformed(_))), "{name}: {msg}");
        }
        // Random bytes never panic.
        let mut x = 0x1234_5678u32;
        for _ in 0..2000 {
            let mut b = good.clone();
            for _ in 0..4 {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                let i = x as usize % b.len();
                b[i] = (x >> 8) as u8;
            }
            let _ = parse_reply(&b, 1, &mut out);
        }
    }

    // ---- Against the kernel ----

    #[test]
    fn real_listener_and_connection() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let mut d = SockDiag::open().unwrap();
        let ls = d.listeners().unwrap();
        let me = ls
            .iter()
            .find(|e| e.local == addr)
            .expect("our listener is listed");
        assert_eq!(me.state, TCP_LISTEN);
        assert_ne!(me.inode, 0);
        assert!(ls.iter().all(|e| e.state == TCP_LISTEN));
        let client = std::net::TcpStream::connect(addr).unwrap();
        let (server, peer) = l.accept().unwrap();
        let s = d.connection(addr, peer).unwrap().expect("server side");
        let c = d
            .connection(client.local_addr().unwrap(), addr)
            .unwrap()
            .expect("client side");
        assert_eq!((s.state, c.state), (1, 1));
        assert_ne!(s.inode, c.inode);
        assert_eq!((s.local, s.remote), (addr, peer));
        drop((client, server));
        let gone: SocketAddr = "127.0.0.1:1".parse().unwrap();
        assert_eq!(
            d.connection(gone, "127.0.0.1:2".parse().unwrap()).unwrap(),
            None
        );
    }
}
