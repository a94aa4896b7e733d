//! sched tracepoints: a process with a target name starts (so `--process NAME` follows restarts),
//! or a target process exits (so its state is freed). Everything else returns at once.
use aya_ebpf::{
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::tracepoint,
    programs::TracePointContext,
};
use observer_common::{EventKind, ProcOp, ProcRecord};

use crate::maps::{TARGET_COMMS, TARGET_PIDS, emit_control};

#[tracepoint]
pub fn process_exec(_ctx: TracePointContext) -> u32 {
    let Ok(comm) = bpf_get_current_comm() else {
        return 0;
    };
    if unsafe { TARGET_COMMS.get(&comm) }.is_some() {
        let pid = (bpf_get_current_pid_tgid() >> 32) as u32;
        report(ProcOp::Exec, pid, comm);
    }
    0
}

#[tracepoint]
pub fn process_exit(_ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let (tgid, tid) = ((pid_tgid >> 32) as u32, pid_tgid as u32);
    // Threads exit too; the process is gone when its leader goes.
    if tgid == tid && unsafe { TARGET_PIDS.get(&tgid) }.is_some() {
        report(
            ProcOp::Exit,
            tgid,
            bpf_get_current_comm().unwrap_or([0; 16]),
        );
    }
    0
}

#[inline(always)]
fn report(op: ProcOp, pid: u32, comm: [u8; 16]) {
    let record = ProcRecord {
        kind: EventKind::Proc as u32,
        op: op as u32,
        ts_ns: unsafe { bpf_ktime_get_ns() },
        pid,
        _pad: 0,
        comm,
    };
    emit_control(&record);
}
