//! sock_ops on the target cgroups: connection lifecycle and new listeners.
//!
//! - listen() by a target process: its port joins TARGET_PORTS at once (no polling window in
//!   which accepted connections would be missed), and userspace is told.
//! - A connection accepted on a target port: reported with the initial sequence numbers of both
//!   directions (rcv_nxt, snd_nxt), so userspace knows the streams start exactly there; the
//!   state callback is switched on for it so its close is reported too.
//! - connect() by a target process (when following outgoing connections): the socket cookie joins
//!   TARGET_COOKIES and is reported once established.
use aya_ebpf::{
    bindings::{
        BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB, BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB,
        BPF_SOCK_OPS_STATE_CB, BPF_SOCK_OPS_STATE_CB_FLAG, BPF_SOCK_OPS_TCP_CONNECT_CB,
        BPF_SOCK_OPS_TCP_LISTEN_CB, bpf_sock_ops,
    },
    helpers::{bpf_get_socket_cookie, bpf_ktime_get_ns},
    macros::sock_ops,
    programs::SockOpsContext,
};
use observer_common::{ConnOp, ConnRecord, EventKind, pid_flags};

use crate::maps::{
    TARGET_COOKIES, TARGET_PIDS, TARGET_PORTS, current_tgid, emit_control, port_selected,
    track_outgoing,
};

const AF_INET6: u32 = 10;
const TCP_CLOSE: u32 = 7;

#[sock_ops]
pub fn lifecycle(ctx: SockOpsContext) -> u32 {
    on_sock_op(&ctx);
    1
}

#[inline(always)]
fn on_sock_op(ctx: &SockOpsContext) {
    let ops = ctx.ops;
    let local_port = ctx.local_port();
    match ctx.op() {
        BPF_SOCK_OPS_TCP_LISTEN_CB => {
            let pid = current_tgid();
            let follow = unsafe { TARGET_PIDS.get(&pid) }
                .is_some_and(|flags| flags & pid_flags::FOLLOW_LISTEN != 0);
            if follow {
                let _ = TARGET_PORTS.set(local_port, 1u32, 0);
                report(ops, ConnOp::Listen, pid, 0);
            }
        }
        BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB => {
            if port_selected(local_port) {
                let _ = ctx.set_cb_flags((ctx.cb_flags() | BPF_SOCK_OPS_STATE_CB_FLAG) as i32);
                report(ops, ConnOp::Accepted, 0, 0);
            }
        }
        BPF_SOCK_OPS_TCP_CONNECT_CB => {
            if track_outgoing() {
                let pid = current_tgid();
                if unsafe { TARGET_PIDS.get(&pid) }.is_some() {
                    let cookie = unsafe { bpf_get_socket_cookie(ops.cast()) };
                    let _ = TARGET_COOKIES.insert(&cookie, &pid, 0);
                    let _ = ctx.set_cb_flags((ctx.cb_flags() | BPF_SOCK_OPS_STATE_CB_FLAG) as i32);
                }
            }
        }
        BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB => {
            if track_outgoing() {
                let cookie = unsafe { bpf_get_socket_cookie(ops.cast()) };
                if let Some(pid) = unsafe { TARGET_COOKIES.get(&cookie) } {
                    report(ops, ConnOp::Connected, *pid, 0);
                }
            }
        }
        BPF_SOCK_OPS_STATE_CB => {
            let old_state = ctx.arg(0);
            if ctx.arg(1) != TCP_CLOSE {
                return;
            }
            if port_selected(local_port) {
                report(ops, ConnOp::Closed, 0, old_state);
            } else if track_outgoing() {
                let cookie = unsafe { bpf_get_socket_cookie(ops.cast()) };
                if unsafe { TARGET_COOKIES.get(&cookie) }.is_some() {
                    report(ops, ConnOp::Closed, 0, old_state);
                    let _ = TARGET_COOKIES.remove(&cookie);
                }
            }
        }
        _ => {}
    }
}

#[inline(always)]
fn report(ops: *mut bpf_sock_ops, op: ConnOp, pid: u32, old_state: u32) {
    let mut local_addr = [0u8; 16];
    let mut remote_addr = [0u8; 16];
    // Context fields must be read at constant offsets from the context pointer (the verifier
    // refuses a pointer into the context that was moved first), hence one volatile read each.
    let field = |f: &u32| unsafe { core::ptr::read_volatile(f) };
    let o = unsafe { &*ops };
    let family = field(&o.family);
    if family == AF_INET6 {
        for i in 0..4 {
            local_addr[i * 4..i * 4 + 4].copy_from_slice(&field(&o.local_ip6[i]).to_ne_bytes());
            remote_addr[i * 4..i * 4 + 4].copy_from_slice(&field(&o.remote_ip6[i]).to_ne_bytes());
        }
    } else {
        local_addr[..4].copy_from_slice(&field(&o.local_ip4).to_ne_bytes());
        remote_addr[..4].copy_from_slice(&field(&o.remote_ip4).to_ne_bytes());
    }
    // remote_port is network order, in the upper 16 bits on older kernels and the lower 16 on
    // newer ones; local_port is host order.
    let rp = field(&o.remote_port);
    let remote_port = u16::from_be(if rp > 0xffff {
        (rp >> 16) as u16
    } else {
        rp as u16
    });
    let local_port = field(&o.local_port) as u16;
    let (rcv_nxt, snd_nxt) = (field(&o.rcv_nxt), field(&o.snd_nxt));
    let record = ConnRecord {
        kind: EventKind::Conn as u32,
        op: op as u32,
        ts_ns: unsafe { bpf_ktime_get_ns() },
        cookie: unsafe { bpf_get_socket_cookie(ops.cast()) },
        pid,
        family,
        rcv_nxt,
        snd_nxt,
        local_addr,
        remote_addr,
        local_port,
        remote_port,
        old_state,
    };
    emit_control(&record);
}
