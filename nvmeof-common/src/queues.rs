//! Which TCP connection carries each NVMe/TCP queue. nvme-tcp keeps its queue in the socket's
//! `sk_user_data` (`nvme_tcp_alloc_queue`), and its queue id is the queue's index in its
//! controller's `queues` array (`nvme_tcp_queue_id`). A BPF iterator over the kernel's TCP
//! sockets (`iter/tcp`, Linux 5.9) follows those pointers for each socket whose queue points back
//! at it, and writes one [`TcpQueueRecord`] per queue: nothing runs per command, the agent reads
//! the iterator when a scrape asks for queues.

use bytemuck::{Pod, Zeroable};

/// Name of the global that carries [`TcpQueueLayout`].
pub const TCP_QUEUE_LAYOUT_GLOBAL: &str = "TCP_QUEUE_LAYOUT";

/// Program names.
pub mod programs {
    object_names! {
        /// The `iter/tcp` program.
        TCP_QUEUES: tcp_queues,
    }
}

/// The iterator target the program attaches to.
pub const TCP_ITER_TARGET: &str = "tcp";

/// Byte offsets from BTF (vmlinux's and nvme_tcp's), written by the agent before load.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct TcpQueueLayout {
    /// `struct sock`: `sk_user_data`.
    pub sock_user_data: u32,
    /// `struct sock_common`: `skc_num` (the local port, host order).
    pub skc_num: u32,
    /// `struct sock_common`: `skc_dport` (the remote port, network order).
    pub skc_dport: u32,
    /// `struct socket`: `sk`.
    pub socket_sk: u32,
    /// `struct nvme_tcp_queue`: `sock`.
    pub queue_sock: u32,
    /// `struct nvme_tcp_queue`: `ctrl`.
    pub queue_ctrl: u32,
    /// `sizeof(struct nvme_tcp_queue)`.
    pub queue_size: u32,
    /// `struct nvme_tcp_ctrl`: `queues`.
    pub ctrl_queues: u32,
    /// `struct nvme_tcp_ctrl`: `ctrl.instance` (the embedded `nvme_ctrl`'s offset plus its
    /// `instance`'s).
    pub ctrl_instance: u32,
    /// Non-zero once filled.
    pub valid: u32,
}

/// One queue's connection, as the iterator writes it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct TcpQueueRecord {
    /// `nvme_ctrl->instance`: the N of `/dev/nvmeN`.
    pub ctrl_instance: u32,
    /// 0 for the admin queue, 1.. for the I/O queues.
    pub qid: u32,
    pub local_port: u16,
    pub remote_port: u16,
    pub _pad: u32,
}
