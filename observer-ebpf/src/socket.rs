//! cgroup_skb ingress/egress: copy the TCP payload of target sockets into the ring.
//!
//! Filter first: a packet whose local port is not a target port (and whose socket is not a
//! tracked outgoing connection) leaves after one array lookup. Then the IP and TCP headers are
//! parsed, and the payload is copied in chunks of at most CHUNK_DATA_MAX bytes up to
//! CAPTURE_CAP, each chunk its own ring record carrying its sequence number. Pure ACKs and SYNs
//! are not reported (sock_ops gives the initial sequence numbers). Whatever the ring cannot take
//! is counted and recorded per stream in LOST_RANGES, so userspace can turn it into exact gaps.
use aya_ebpf::{
    bindings::__sk_buff,
    helpers::{bpf_get_socket_cookie, bpf_ktime_get_ns, bpf_skb_load_bytes},
    macros::cgroup_skb,
    programs::SkBuffContext,
};
use observer_common::{
    CHUNK_DATA_MAX, CHUNK_HEADER_SIZE, ChunkHeader, Counter, EventKind, LostRange, MAX_CAPTURE_CAP,
    MAX_CHUNKS_PER_PACKET, StreamKey, chunk_flags,
};

use crate::maps::{
    EVENTS, LOST_RANGES, SCRATCH, TARGET_COOKIES, capture_cap, count, port_selected, ring_flags,
    track_outgoing,
};

const ETH_P_IP_BE: u32 = 0x0800u16.to_be() as u32;
const ETH_P_IPV6_BE: u32 = 0x86DDu16.to_be() as u32;
const IPPROTO_TCP: u8 = 6;
/// cgroup_skb: 1 lets the packet through. We never drop.
const PASS: i32 = 1;

#[cgroup_skb(ingress)]
pub fn capture_ingress(ctx: SkBuffContext) -> i32 {
    capture(&ctx, false);
    PASS
}

#[cgroup_skb(egress)]
pub fn capture_egress(ctx: SkBuffContext) -> i32 {
    capture(&ctx, true);
    PASS
}

#[inline(always)]
fn capture(ctx: &SkBuffContext, egress: bool) {
    let skb: *mut __sk_buff = ctx.skb.skb;
    let local_port = unsafe { (*skb).local_port };
    let cookie = if port_selected(local_port) {
        unsafe { bpf_get_socket_cookie(skb.cast()) }
    } else {
        if !track_outgoing() {
            return;
        }
        let cookie = unsafe { bpf_get_socket_cookie(skb.cast()) };
        if unsafe { TARGET_COOKIES.get(&cookie) }.is_none() {
            return;
        }
        cookie
    };
    let _ = copy_packet(ctx, skb, cookie, egress, local_port);
}

#[inline(always)]
fn copy_packet(
    ctx: &SkBuffContext,
    skb: *mut __sk_buff,
    cookie: u64,
    egress: bool,
    local_port: u32,
) -> Result<(), ()> {
    let protocol = unsafe { (*skb).protocol };
    let mut src = [0u8; 16];
    let mut dst = [0u8; 16];
    let mut flags = if egress { chunk_flags::EGRESS } else { 0 };
    let ip_len: u32;
    if protocol == ETH_P_IP_BE {
        let version_ihl: u8 = ctx.load(0).map_err(|_| ())?;
        let ihl = ((version_ihl & 0x0f) as u32) * 4;
        if version_ihl >> 4 != 4 || ihl < 20 {
            count(Counter::HeadersUnsupported, 1);
            return Err(());
        }
        let proto: u8 = ctx.load(9).map_err(|_| ())?;
        if proto != IPPROTO_TCP {
            return Err(());
        }
        let addrs: [u8; 8] = ctx.load(12).map_err(|_| ())?;
        src[..4].copy_from_slice(&addrs[..4]);
        dst[..4].copy_from_slice(&addrs[4..]);
        ip_len = ihl;
    } else if protocol == ETH_P_IPV6_BE {
        let next_header: u8 = ctx.load(6).map_err(|_| ())?;
        if next_header != IPPROTO_TCP {
            // Extension headers: rare for TCP; counted so it is never silent.
            count(Counter::HeadersUnsupported, 1);
            return Err(());
        }
        src = ctx.load(8).map_err(|_| ())?;
        dst = ctx.load(24).map_err(|_| ())?;
        flags |= chunk_flags::IPV6;
        ip_len = 40;
    } else {
        return Err(());
    }

    // TCP header: ports (0..4), seq (4..8), data offset and flags (12, 13).
    let ports: [u8; 4] = ctx.load(ip_len as usize).map_err(|_| ())?;
    let seq_be: u32 = ctx.load(ip_len as usize + 4).map_err(|_| ())?;
    let off_flags: [u8; 2] = ctx.load(ip_len as usize + 12).map_err(|_| ())?;
    let tcp_len = ((off_flags[0] >> 4) as u32) * 4;
    let tcp_flags = off_flags[1] as u32;
    flags |= (tcp_flags & 0x1f) << chunk_flags::TCP_FLAGS_SHIFT;
    let payload_off = ip_len + tcp_len;
    let skb_len = unsafe { (*skb).len };
    let payload_len = skb_len.saturating_sub(payload_off);
    if payload_len == 0 && flags & (chunk_flags::FIN | chunk_flags::RST) == 0 {
        return Ok(()); // pure ACK or SYN: nothing for the stream
    }
    count(Counter::PacketsMatched, 1);

    let cap = {
        let c = capture_cap();
        if c > MAX_CAPTURE_CAP {
            MAX_CAPTURE_CAP
        } else {
            c
        }
    };
    let to_copy = if payload_len > cap {
        count(Counter::PacketsTruncated, 1);
        count(Counter::BytesTruncated, (payload_len - cap) as u64);
        cap
    } else {
        payload_len
    };
    let chunks = if to_copy == 0 {
        1
    } else {
        to_copy.div_ceil(CHUNK_DATA_MAX as u32)
    };

    let record = SCRATCH.get_ptr_mut(0).ok_or(())?;
    let (local_addr, remote_addr) = if egress { (src, dst) } else { (dst, src) };
    let src_port = u16::from_be_bytes([ports[0], ports[1]]);
    let dst_port = u16::from_be_bytes([ports[2], ports[3]]);
    let remote_port = if egress { dst_port } else { src_port };
    let seq = u32::from_be(seq_be);
    unsafe {
        (*record).header = ChunkHeader {
            kind: EventKind::Chunk as u32,
            flags,
            ts_ns: bpf_ktime_get_ns(),
            cookie,
            seq,
            payload_len,
            offset: 0,
            captured: 0,
            local_addr,
            remote_addr,
            local_port: local_port as u16,
            remote_port,
            chunks: chunks as u16,
            _pad: 0,
        };
    }

    let mut i: u32 = 0;
    while i < MAX_CHUNKS_PER_PACKET {
        let offset = i * CHUNK_DATA_MAX as u32;
        if i > 0 && offset >= to_copy {
            break;
        }
        let remaining = to_copy.saturating_sub(offset);
        let n = if remaining > CHUNK_DATA_MAX as u32 {
            CHUNK_DATA_MAX as u32
        } else {
            remaining
        };
        unsafe {
            (*record).header.offset = offset;
            (*record).header.captured = 0;
        }
        if n > 0 {
            // The verifier needs the length provably in [1, CHUNK_DATA_MAX].
            let len = bounded_len(n);
            let ret = unsafe {
                bpf_skb_load_bytes(
                    skb.cast(),
                    payload_off + offset,
                    (*record).data.as_mut_ptr().cast(),
                    len,
                )
            };
            if ret != 0 {
                count(Counter::CopyFailures, 1);
                record_loss(cookie, egress, seq.wrapping_add(offset), n);
                i += 1;
                continue;
            }
            unsafe { (*record).header.captured = len };
        }
        let size = CHUNK_HEADER_SIZE + unsafe { (*record).header.captured } as usize;
        let bytes = unsafe { core::slice::from_raw_parts(record as *const u8, bounded_size(size)) };
        match EVENTS.output::<[u8]>(bytes, ring_flags(bytes.len())) {
            Ok(()) => {
                count(Counter::ChunksEmitted, 1);
                count(Counter::BytesCaptured, n as u64);
            }
            Err(_) => {
                count(Counter::ChunksLost, 1);
                count(Counter::BytesLost, n as u64);
                record_loss(cookie, egress, seq.wrapping_add(offset), n);
            }
        }
        i += 1;
    }
    Ok(())
}

/// Clamp to [1, CHUNK_DATA_MAX] in a way the verifier can see: the optimiser knows `n` is already
/// in range and would drop a plain check, so hide the value from it and mask.
#[inline(always)]
fn bounded_len(n: u32) -> u32 {
    let n = unsafe { core::ptr::read_volatile(&n) };
    (n.wrapping_sub(1) & (CHUNK_DATA_MAX as u32 - 1)) + 1
}

#[inline(always)]
fn bounded_size(size: usize) -> usize {
    let max = CHUNK_HEADER_SIZE + CHUNK_DATA_MAX;
    if size > max { max } else { size }
}

/// Remember which stream bytes the ring dropped, so userspace can mark exact gaps.
#[inline(always)]
fn record_loss(cookie: u64, egress: bool, first_seq: u32, len: u32) {
    let key = StreamKey {
        cookie,
        egress: egress as u32,
        _pad: 0,
    };
    let end = first_seq.wrapping_add(len);
    match LOST_RANGES.get_ptr_mut(&key) {
        Some(range) => unsafe {
            if (end.wrapping_sub((*range).end_seq) as i32) > 0 {
                (*range).end_seq = end;
            }
            if (first_seq.wrapping_sub((*range).first_seq) as i32) < 0 {
                (*range).first_seq = first_seq;
            }
            (*range).chunks += 1;
            (*range).bytes += len;
        },
        None => {
            let range = LostRange {
                first_seq,
                end_seq: end,
                chunks: 1,
                bytes: len,
            };
            let _ = LOST_RANGES.insert(&key, &range, 0);
        }
    }
}
