//! Host wait: how long a command spent in the host before the driver built it, from the bio's
//! submission (`block:block_bio_queue`) to `nvme_setup_cmd` of the request that carries it
//! (`request->bio`, the request's first bio). That span holds the multipath head's path choice,
//! the wait for a free tag when the hardware queue is full, the I/O scheduler and plugging; the
//! existing latency (`nvme_setup_cmd` → `nvme_complete_rq`) is the fabric's and the device's.
//!
//! (The block layer's own `block_rq_issue` fires in the driver's `queue_rq` right after
//! `nvme_setup_cmd`, and `block_rq_insert` only for requests that go through a scheduler or a
//! dispatch list, so neither marks the start of the host's part for every command.)
//!
//! Opt-in (`--ebpf.host-wait`): every bio of every block device costs an LRU map update. Only the
//! request-keyed attach modes see the request, so the classic mode does without.

use bytemuck::{Pod, Zeroable};

/// Name of the global that carries [`HostWait`].
pub const HOST_WAIT_GLOBAL: &str = "HOST_WAIT";

/// Map names.
pub mod maps {
    object_names! {
        /// When each bio was submitted: `struct bio *` as `u64` → ns (0 once a setup took it).
        BIO_QUEUED,
        /// Per controller instance, host wait statistics: index → [`crate::OpStats`] (its `bytes`
        /// and `errors` unused).
        HOST_WAIT_STATS,
    }
}

/// Program names.
pub mod programs {
    object_names! {
        BLOCK_BIO_QUEUE_BTF: block_bio_queue_btf,
        BLOCK_BIO_QUEUE_RAW: block_bio_queue_raw,
    }
}

/// The block tracepoint the programs attach to.
pub const BLOCK_BIO_QUEUE: &str = "block_bio_queue";

/// Written by the agent before load.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct HostWait {
    /// Non-zero turns host wait on; 0 (the default) lets the verifier drop its code.
    pub on: u32,
    /// `struct request`: `bio` (`struct bio *`), from BTF.
    pub request_bio: u32,
    /// The index of the `struct bio *` argument of `block_bio_queue` (0 since 5.11, where the
    /// request queue argument went; 1 before).
    pub bio_arg: u32,
    pub _pad: u32,
}

impl HostWait {
    pub const OFF: HostWait = HostWait {
        on: 0,
        request_bio: 0,
        bio_arg: 0,
        _pad: 0,
    };
}
