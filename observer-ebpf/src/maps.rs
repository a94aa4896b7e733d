//! Maps, globals and the small helpers every program uses.
use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
};
use observer_common::{
    ChunkRecord, Counter, DEFAULT_CAPTURE_CAP, LostRange, PORT_SLOTS, StreamKey,
};

/// Userspace resizes this before loading (`--ring-size`).
#[map(name = "EVENTS")]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(16 * 1024 * 1024, 0);

#[map(name = "TARGET_PORTS")]
pub static TARGET_PORTS: Array<u32> = Array::with_max_entries(PORT_SLOTS, 0);

#[map(name = "TARGET_COOKIES")]
pub static TARGET_COOKIES: HashMap<u64, u32> = HashMap::with_max_entries(65536, 0);

#[map(name = "TARGET_PIDS")]
pub static TARGET_PIDS: HashMap<u32, u32> = HashMap::with_max_entries(4096, 0);

#[map(name = "TARGET_COMMS")]
pub static TARGET_COMMS: HashMap<[u8; 16], u32> = HashMap::with_max_entries(256, 0);

#[map(name = "COUNTERS")]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(Counter::COUNT, 0);

#[map(name = "LOST_RANGES")]
pub static LOST_RANGES: LruHashMap<StreamKey, LostRange> = LruHashMap::with_max_entries(16384, 0);

#[map(name = "SCRATCH")]
pub static SCRATCH: PerCpuArray<ChunkRecord> = PerCpuArray::with_max_entries(1, 0);

#[unsafe(no_mangle)]
static CAPTURE_CAP: u32 = DEFAULT_CAPTURE_CAP;

#[unsafe(no_mangle)]
static TRACK_OUTGOING: u32 = 0;

/// Userspace sets this before loading (default: ring size / 16). Never 0 in practice; 0 would
/// mean a wake-up per record, the kernel's own behaviour with flags 0.
#[unsafe(no_mangle)]
static RING_WAKE_BYTES: u32 = 1024 * 1024;

/// Globals must be read volatile, or the compiler folds in the default values.
#[inline(always)]
pub fn capture_cap() -> u32 {
    unsafe { core::ptr::read_volatile(&CAPTURE_CAP) }
}

#[inline(always)]
pub fn track_outgoing() -> bool {
    unsafe { core::ptr::read_volatile(&TRACK_OUTGOING) != 0 }
}

#[inline(always)]
fn ring_wake_bytes() -> u64 {
    unsafe { core::ptr::read_volatile(&RING_WAKE_BYTES) as u64 }
}

/// Flags for writing a record of `size` bytes to EVENTS. With flags 0 the kernel wakes the reader
/// whenever it has caught up, i.e. once per packet under request/response or moderate load. So
/// write without a wake-up, and force one when the data waiting (including this record) crosses
/// RING_WAKE_BYTES: the reader drains on a short timer for the rest, and is woken long before the
/// ring fills under a burst.
#[inline(always)]
pub fn ring_flags(size: usize) -> u64 {
    let waiting = EVENTS.query(BPF_RB_AVAIL_DATA as u64);
    let threshold = ring_wake_bytes();
    // Only the record that crosses the threshold wakes the reader. While the ring stays above
    // it the reader is either draining already or stalled (paused, overloaded): a forced
    // wake-up per record would then put an irq_work on every packet's path again (measured:
    // +7.7 µs per packet in the kernel bench's paused-daemon loop).
    if waiting < threshold && waiting + size as u64 >= threshold {
        BPF_RB_FORCE_WAKEUP as u64
    } else {
        BPF_RB_NO_WAKEUP as u64
    }
}

#[inline(always)]
pub fn count(counter: Counter, n: u64) {
    if let Some(slot) = COUNTERS.get_ptr_mut(counter as u32) {
        // Per-CPU slot: no other writer while this program runs on this CPU.
        unsafe { *slot += n }
    }
}

#[inline(always)]
pub fn port_selected(port: u32) -> bool {
    matches!(TARGET_PORTS.get(port), Some(v) if *v != 0)
}

#[inline(always)]
pub fn current_tgid() -> u32 {
    (aya_ebpf::helpers::bpf_get_current_pid_tgid() >> 32) as u32
}

/// Writes a fixed-size control record (connection or process) and counts the outcome.
///
/// Same wake-up policy as data chunks, not an unconditional wake-up: control records are rare
/// per packet but not per connection, and a load of short connections (open, one request,
/// close) would otherwise bring back a wake-up or two per connection. Nothing needs them
/// sooner than the data: the ring is one FIFO, so a connection's open is read before its chunks
/// whatever the timing, and the drain timer bounds the delay for both.
#[inline(always)]
pub fn emit_control<T>(record: &T) {
    match EVENTS.output::<T>(record, ring_flags(core::mem::size_of::<T>())) {
        Ok(()) => count(Counter::ControlEmitted, 1),
        Err(_) => count(Counter::ControlLost, 1),
    }
}
