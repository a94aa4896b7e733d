//! brokerscope kernel programs.
//!
//! - `socket.rs`: cgroup_skb ingress/egress — copies the TCP payload of the target brokers' sockets.
//! - `lifecycle.rs`: sock_ops — connection accepted/connected/closed and new listeners.
//! - `process.rs`: sched tracepoints — exec of target names, exit of target processes.
//! - `maps.rs`: every map and global, plus the emit/count helpers they share.
//!
//! Every program lets traffic pass and returns quickly for anything that is not a target.
// Host builds (`cargo check --workspace`) see an empty binary: the programs only exist for BPF.
#![cfg_attr(target_arch = "bpf", no_std, no_main)]

#[cfg(target_arch = "bpf")]
mod lifecycle;
#[cfg(target_arch = "bpf")]
mod maps;
#[cfg(target_arch = "bpf")]
mod process;
#[cfg(target_arch = "bpf")]
mod socket;

#[cfg(not(target_arch = "bpf"))]
fn main() {}

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier proves programs cannot reach a panic; this only satisfies the compiler.
    loop {}
}

#[cfg(target_arch = "bpf")]
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
