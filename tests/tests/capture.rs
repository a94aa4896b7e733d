//! Kernel capture end to end: a helper server in its own cgroup moves known payloads to clients
//! in this process; the observer must deliver exactly those bytes, per connection and
//! direction, with the right addresses and pid — and nothing for processes it does not target.
use std::{
    io::{Read, Write},
    net::{Shutdown, SocketAddr, TcpStream},
    time::Duration,
};

use observer::{
    capture::{Direction, KernelConfig, TargetSpec, session::SessionConfig},
    stream::GapReason,
};
use observer_common::Counter;
use tests::{Cgroup, Observer, payload_server, require_root, wait_until};

/// One client conversation: what it sent and what it got back.
struct Conversation {
    client: SocketAddr,
    sent: Vec<u8>,
    received: Vec<u8>,
}

fn converse(port: u16, commands: &[&[u8]]) -> Conversation {
    converse_at("127.0.0.1", port, commands)
}

fn converse_at(host: &str, port: u16, commands: &[&[u8]]) -> Conversation {
    let mut stream = TcpStream::connect((host, port)).expect("connect");
    let client = stream.local_addr().unwrap();
    let mut sent = Vec::new();
    for c in commands {
        stream.write_all(c).unwrap();
        sent.extend_from_slice(c);
    }
    stream.shutdown(Shutdown::Write).unwrap();
    let mut received = Vec::new();
    stream.read_to_end(&mut received).unwrap();
    Conversation {
        client,
        sent,
        received,
    }
}

fn spec_for(pid: u32) -> TargetSpec {
    TargetSpec {
        pids: vec![pid],
        ..Default::default()
    }
}

#[test]
fn every_byte_is_captured_in_order_for_the_target_only() {
    require_root();
    let cgroup = Cgroup::create("bytes");
    let server = payload_server!(Some(&cgroup));
    let sibling = payload_server!(Some(&cgroup)); // same cgroup, not a target
    let outsider = payload_server!(None); // another cgroup entirely

    // A connection that exists before the observer attaches.
    let mut early = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    early.write_all(b"small 1 10\n").unwrap();
    let mut buf = [0u8; 10];
    early.read_exact(&mut buf).unwrap();

    let observer = Observer::start(spec_for(server.proc.pid()), SessionConfig::default());

    let upload = tests::pattern(99, 500_000);
    let mut upload_cmd = b"upload 500000\n".to_vec();
    upload_cmd.extend_from_slice(&upload);
    let conversations = [
        converse(server.port, &[b"small 500 37\n"]),
        converse(server.port, &[b"writev 200\n"]),
        converse(server.port, &[b"big 300000\n"]),
        converse(server.port, &[b"sendfile 200000\n"]),
        converse(server.port, &[&upload_cmd]),
        converse(
            server.port,
            &[b"small 3 5\n", b"big 70000\n", b"writev 10\n"],
        ),
    ];
    assert_eq!(conversations[0].received.len(), 500 * 37);
    assert_eq!(conversations[2].received.len(), 300_000);
    assert_eq!(conversations[3].received.len(), 200_000);
    assert_eq!(conversations[4].received, b"ok 500000\n");

    // The early connection now moves data while observed.
    early.write_all(b"big 100000\n").unwrap();
    early.shutdown(Shutdown::Write).unwrap();
    let mut early_received = Vec::new();
    early.read_to_end(&mut early_received).unwrap();
    assert_eq!(early_received.len(), 100_000);
    let early_client = early.local_addr().unwrap();

    // Traffic the observer must not see.
    let ignored = [
        converse(sibling.port, &[b"big 50000\n"]),
        converse(outsider.port, &[b"big 50000\n"]),
    ];
    assert!(ignored.iter().all(|c| c.received.len() == 50_000));

    let closed_all = wait_until(Duration::from_secs(5), || {
        let c = observer.captured.lock().unwrap();
        conversations
            .iter()
            .all(|conv| c.by_peer(conv.client).is_some_and(|x| x.closed))
    });
    let done = observer.finish(false);
    assert!(
        done.caught_up,
        "observer must read every record the kernel wrote"
    );
    assert!(closed_all, "every connection's close must be reported");

    let server_pid = server.proc.pid();
    for (i, conv) in conversations.iter().enumerate() {
        let c = done
            .captured
            .by_peer(conv.client)
            .unwrap_or_else(|| panic!("conversation {i} not captured"));
        assert_eq!(c.pid, Some(server_pid), "conversation {i}: pid");
        assert_eq!(
            c.local,
            Some(SocketAddr::from(([127, 0, 0, 1], server.port))),
            "conversation {i}: local"
        );
        assert!(!c.preexisting, "conversation {i} was opened while observed");
        assert!(
            c.gaps.is_empty(),
            "conversation {i}: unexpected gaps {:?}",
            c.gaps
        );
        assert!(
            c.ingress() == conv.sent.as_slice(),
            "conversation {i}: ingress differs ({} vs {} bytes)",
            c.ingress().len(),
            conv.sent.len()
        );
        assert!(
            c.egress() == conv.received.as_slice(),
            "conversation {i}: egress differs ({} vs {} bytes)",
            c.egress().len(),
            conv.received.len()
        );
        assert!(
            c.closed && c.ended == [true, true],
            "conversation {i}: close/end not seen"
        );
    }

    let early = done
        .captured
        .by_peer(early_client)
        .expect("pre-existing connection captured");
    assert!(early.preexisting, "joined mid-stream");
    assert!(
        early.fd.is_some(),
        "owner fd found in /proc for a long-lived connection"
    );
    assert_eq!(early.pid, Some(server_pid));
    assert_eq!(early.ingress(), b"big 100000\n");
    assert!(early.egress() == early_received.as_slice());
    assert!(early.gaps.is_empty());

    for port in [sibling.port, outsider.port] {
        assert_eq!(
            done.captured.by_local_port(port).count(),
            0,
            "port {port} is not a target"
        );
    }
    assert_eq!(done.kernel.get(Counter::ChunksLost), 0);
    assert_eq!(done.kernel.get(Counter::PacketsTruncated), 0);
    assert_eq!(done.kernel.get(Counter::CopyFailures), 0);
    assert_eq!(done.stats.malformed_records, 0);
    assert_eq!(done.stats.gaps, 0);
    let total: u64 = conversations
        .iter()
        .map(|c| (c.sent.len() + c.received.len()) as u64)
        .sum::<u64>()
        + 11
        + 100_000;
    assert_eq!(
        done.stats.bytes_delivered, total,
        "every byte delivered once"
    );
    assert_eq!(
        done.kernel.get(Counter::BytesCaptured),
        total,
        "nothing copied twice (no retransmissions on loopback)"
    );
}

#[test]
fn truncated_packets_become_exact_gaps() {
    require_root();
    let cgroup = Cgroup::create("truncate");
    let server = payload_server!(Some(&cgroup));
    let config = SessionConfig {
        kernel: KernelConfig {
            capture_cap: 1000,
            ..Default::default()
        },
        ..Default::default()
    };
    let observer = Observer::start(spec_for(server.proc.pid()), config);
    let conv = converse(server.port, &[b"big 300000\n"]);
    assert!(wait_until(Duration::from_secs(5), || {
        observer
            .captured
            .lock()
            .unwrap()
            .by_peer(conv.client)
            .is_some_and(|c| c.closed)
    }));
    let done = observer.finish(false);
    let c = done.captured.by_peer(conv.client).unwrap();
    let (data, gaps) = c.verify_against(Direction::Egress, &conv.received);
    assert_eq!(data + gaps, 300_000);
    assert!(gaps > 0 && data >= 1000);
    assert!(c.gaps.iter().all(|g| g.3 == GapReason::Truncated));
    assert_eq!(
        gaps as u64,
        done.kernel.get(Counter::BytesTruncated),
        "gap bytes = bytes the kernel did not copy"
    );
    assert_eq!(done.stats.gap_bytes_truncated, gaps as u64);
    assert!(c.ingress() == conv.sent.as_slice());
}

#[test]
fn ring_overflow_is_counted_and_becomes_gaps() {
    require_root();
    let cgroup = Cgroup::create("overflow");
    let server = payload_server!(Some(&cgroup));
    // 16 KiB holds about three 4 KiB chunks: a 64 KiB packet cannot fit.
    let config = SessionConfig {
        kernel: KernelConfig {
            ring_bytes: 16 * 1024,
            ..Default::default()
        },
        ..Default::default()
    };
    let observer = Observer::start(spec_for(server.proc.pid()), config);
    let conv = converse(server.port, &[b"big 4000000\n"]);
    assert_eq!(conv.received.len(), 4_000_000);
    std::thread::sleep(Duration::from_millis(300));
    let done = observer.finish(true);
    assert!(done.caught_up);
    let lost_chunks = done.kernel.get(Counter::ChunksLost);
    let lost_bytes = done.kernel.get(Counter::BytesLost);
    assert!(lost_chunks > 0, "a 16 KiB ring must overflow under 4 MB");
    // Everything the kernel wrote was read; everything it could not write is accounted.
    assert_eq!(
        done.stats.chunk_records + done.stats.control_records,
        done.kernel.get(Counter::ChunksEmitted) + done.kernel.get(Counter::ControlEmitted)
    );
    let c = done
        .captured
        .by_peer(conv.client)
        .expect("connection captured");
    let (data, gaps) = c.verify_against(Direction::Egress, &conv.received);
    assert_eq!((data + gaps) as u64, 4_000_000);
    // Every gap byte is one the ring dropped. Equality does not always hold: when TCP
    // retransmits a segment, the kernel counts its bytes again if the ring drops the copy too,
    // and counts nothing missing if the copy gets through (then it is a duplicate or fills the gap).
    let duplicates = done.stats.bytes_duplicate;
    eprintln!(
        "lost chunks {lost_chunks}, lost bytes {lost_bytes}, gap bytes {gaps}, data {data}, duplicates {duplicates}"
    );
    assert!(
        gaps as u64 <= lost_bytes,
        "gaps {gaps} exceed lost bytes {lost_bytes}"
    );
    assert_eq!(
        data as u64 + duplicates,
        done.kernel.get(Counter::BytesCaptured) - c.ingress().len() as u64,
        "every captured byte is delivered once or dropped as a duplicate"
    );
    assert!(
        done.stats.gap_bytes_lost > 0,
        "the kernel's loss records name the lost ranges"
    );
    assert_eq!(
        done.stats.gap_bytes_lost + done.stats.gap_bytes_unknown,
        gaps as u64
    );
}

#[test]
fn process_name_follows_new_pids() {
    require_root();
    let cgroup = Cgroup::create("follow");
    let first = payload_server!(Some(&cgroup));
    let spec = TargetSpec {
        names: vec!["payload-server".into()],
        ..Default::default()
    };
    let observer = Observer::start(spec, SessionConfig::default());
    let before = converse(first.port, &[b"big 1000\n"]);
    // A new process of the same name (a restarted broker) is picked up by its exec.
    let second = payload_server!(Some(&cgroup));
    assert!(
        wait_until(Duration::from_secs(5), || observer
            .captured
            .lock()
            .unwrap()
            .targets_added
            .contains(&second.proc.pid())),
        "new pid {} not followed",
        second.proc.pid()
    );
    let after = converse(second.port, &[b"big 2000\n"]);
    assert!(wait_until(Duration::from_secs(5), || {
        observer
            .captured
            .lock()
            .unwrap()
            .by_peer(after.client)
            .is_some_and(|c| c.closed)
    }));
    let done = observer.finish(false);
    let a = done
        .captured
        .by_peer(before.client)
        .expect("first server captured");
    assert_eq!(a.pid, Some(first.proc.pid()));
    let b = done
        .captured
        .by_peer(after.client)
        .expect("second server captured");
    assert_eq!(b.pid, Some(second.proc.pid()));
    assert!(b.egress() == after.received.as_slice());
}

#[test]
fn ipv6_connections_are_captured() {
    require_root();
    let cgroup = Cgroup::create("ipv6");
    let server = payload_server!(Some(&cgroup), "0", "::1");
    let observer = Observer::start(spec_for(server.proc.pid()), SessionConfig::default());
    let conv = converse_at("::1", server.port, &[b"big 150000\n", b"small 20 3\n"]);
    assert!(wait_until(Duration::from_secs(5), || {
        observer
            .captured
            .lock()
            .unwrap()
            .by_peer(conv.client)
            .is_some_and(|c| c.closed)
    }));
    let done = observer.finish(false);
    let c = done
        .captured
        .by_peer(conv.client)
        .expect("IPv6 connection captured");
    assert_eq!(
        c.local,
        Some(SocketAddr::from((
            std::net::Ipv6Addr::LOCALHOST,
            server.port
        )))
    );
    assert_eq!(c.pid, Some(server.proc.pid()));
    assert!(c.ingress() == conv.sent.as_slice());
    assert!(c.egress() == conv.received.as_slice());
    assert!(c.gaps.is_empty());
    assert_eq!(done.kernel.get(Counter::HeadersUnsupported), 0);
}

#[test]
fn outgoing_connections_are_followed_when_asked() {
    require_root();
    let cgroup = Cgroup::create("outgoing");
    let server = payload_server!(Some(&cgroup));
    let upstream = payload_server!(None); // not a target: only the server's own connection to it is
    let config = SessionConfig {
        kernel: KernelConfig {
            track_outgoing: true,
            ..Default::default()
        },
        ..Default::default()
    };
    let observer = Observer::start(spec_for(server.proc.pid()), config);
    let command = format!("fetch {} 80000\n", upstream.port);
    let conv = converse(server.port, &[command.as_bytes()]);
    assert_eq!(conv.received, b"fetched 80000\n");
    assert!(wait_until(Duration::from_secs(5), || {
        let c = observer.captured.lock().unwrap();
        c.by_peer(conv.client).is_some_and(|c| c.closed)
            && c.conns.values().any(|c| c.outgoing && c.closed)
    }));
    let done = observer.finish(false);
    let link: Vec<_> = done
        .captured
        .conns
        .values()
        .filter(|c| c.outgoing)
        .collect();
    assert_eq!(link.len(), 1, "one outgoing connection: {link:?}");
    let link = link[0];
    assert_eq!(link.peer.map(|a| a.port()), Some(upstream.port));
    assert_eq!(
        link.pid,
        Some(server.proc.pid()),
        "pid from the connect() hook"
    );
    assert_eq!(
        link.egress(),
        b"big 80000\n",
        "what the server sent upstream"
    );
    assert_eq!(link.ingress().len(), 80_000, "what it got back");
    assert!(link.gaps.is_empty() && !link.preexisting);
    // The upstream server's own listening port is not captured (it is not a target).
    assert_eq!(done.captured.by_local_port(upstream.port).count(), 0);
}
