//! The queue programs of nvmeof-exporter (object `nvmeof-queues`): which TCP connection carries
//! each NVMe/TCP queue (`nvmeof_common::queues`).
//!
//! Hook: a BPF iterator over the kernel's TCP sockets (`iter/tcp`), run only when the agent reads
//! it. For each socket whose `sk_user_data` is an nvme-tcp queue that points back at the socket,
//! it writes the queue's controller instance, queue id and ports. Offsets come from BTF
//! (`TCP_QUEUE_LAYOUT`, written by the agent before load); every pointer is read with
//! `bpf_probe_read_kernel`, so a socket of another owner reads as garbage and fails the
//! back-pointer check, never faults.
#![no_std]
#![no_main]

use aya_ebpf::bindings::seq_file;
use aya_ebpf::helpers::{bpf_probe_read_kernel, generated::bpf_seq_write};
use nvmeof_common::queues::{TcpQueueLayout, TcpQueueRecord};
use nvmeof_ebpf::helpers::global;

/// Written by the agent before load, from BTF.
#[no_mangle]
static TCP_QUEUE_LAYOUT: TcpQueueLayout = TcpQueueLayout {
    sock_user_data: 0,
    skc_num: 0,
    skc_dport: 0,
    socket_sk: 0,
    queue_sock: 0,
    queue_ctrl: 0,
    queue_size: 0,
    ctrl_queues: 0,
    ctrl_instance: 0,
    valid: 0,
};

/// Reads a `T` at `base + offset` of kernel memory.
#[inline(always)]
fn kread<T>(base: u64, offset: u32) -> Option<T> {
    // SAFETY: bpf_probe_read_kernel fails on a bad address, it cannot fault.
    unsafe { bpf_probe_read_kernel((base + offset as u64) as *const T).ok() }
}

/// `struct bpf_iter__tcp { struct bpf_iter_meta *meta; struct sock_common *sk_common; uid_t uid; }`,
/// and `struct bpf_iter_meta` starts with `struct seq_file *seq`.
///
/// # Safety
/// Called by the kernel only, with its iterator context.
#[no_mangle]
#[link_section = "iter/tcp"]
pub unsafe fn tcp_queues(ctx: *mut u64) -> i32 {
    // SAFETY: the context is the kernel's `bpf_iter__tcp`: two pointers the verifier types from
    // BTF, `meta` never null; plain loads keep those types (the helper wants a typed seq_file).
    let (meta, sk) = unsafe {
        (
            core::ptr::read_volatile(ctx as *const *const *mut seq_file),
            core::ptr::read_volatile(ctx.add(1) as *const u64),
        )
    };
    if sk == 0 {
        return 0;
    }
    let Some(rec) = queue_of(sk) else {
        return 0;
    };
    // SAFETY: as above; `seq` is the first member of `bpf_iter_meta`.
    unsafe {
        let seq = core::ptr::read_volatile(meta);
        bpf_seq_write(
            seq,
            &rec as *const TcpQueueRecord as *const _,
            core::mem::size_of::<TcpQueueRecord>() as u32,
        );
    }
    0
}

#[inline(always)]
fn queue_of(sk: u64) -> Option<TcpQueueRecord> {
    let l = global(&TCP_QUEUE_LAYOUT);
    if l.valid == 0 || l.queue_size == 0 {
        return None;
    }
    let queue: u64 = kread(sk, l.sock_user_data)?;
    if queue == 0 {
        return None;
    }
    // Another owner's `sk_user_data` fails here: an nvme-tcp queue's socket points at this sock.
    let socket: u64 = kread(queue, l.queue_sock)?;
    if socket == 0 || kread::<u64>(socket, l.socket_sk)? != sk {
        return None;
    }
    let ctrl: u64 = kread(queue, l.queue_ctrl)?;
    let queues: u64 = kread(ctrl, l.ctrl_queues)?;
    if queue < queues {
        return None;
    }
    let qid = (queue - queues) / u64::from(l.queue_size);
    if qid > u64::from(u16::MAX) {
        return None;
    }
    let dport: u16 = kread(sk, l.skc_dport)?;
    Some(TcpQueueRecord {
        ctrl_instance: kread(ctrl, l.ctrl_instance)?,
        qid: qid as u32,
        local_port: kread(sk, l.skc_num)?,
        remote_port: u16::from_be(dport),
        _pad: 0,
    })
}

nvmeof_ebpf::gpl_object!();
