//! A BPF array map mapped into the agent's memory (`BPF_F_MMAPABLE`, Linux 5.5): the drain reads
//! its elements in place, with no system call per element, and so can afford to look at every
//! queue's state every drain and read only the statistics that moved.
use std::marker::PhantomData;
use std::os::fd::{AsFd, AsRawFd};

use anyhow::{bail, Context as _};
use aya::maps::MapData;

/// Elements of type `T` at a stride of `size_of::<T>()` rounded up to 8 bytes (the kernel's
/// `round_up(value_size, 8)` for array maps), read-only.
pub struct Mapped<T> {
    base: *const u8,
    bytes: usize,
    entries: u32,
    stride: usize,
    _value: PhantomData<T>,
}

// SAFETY: the mapping is read-only for the agent and lives as long as the value; the kernel
// writes it concurrently, which `get` tolerates by reading each element with a volatile copy.
unsafe impl<T> Send for Mapped<T> {}
unsafe impl<T> Sync for Mapped<T> {}

impl<T: aya::Pod> Mapped<T> {
    /// Maps `entries` elements of `map`, which must have been created with `BPF_F_MMAPABLE`.
    pub fn new(map: &MapData, entries: u32) -> anyhow::Result<Self> {
        let stride = std::mem::size_of::<T>().next_multiple_of(8);
        let bytes = stride * entries as usize;
        if bytes == 0 {
            bail!("an empty array cannot be mapped");
        }
        let fd = map.fd().as_fd().as_raw_fd();
        // SAFETY: a fresh shared read-only mapping of the map's fd; the length is the map's
        // value area (the kernel rounds the mapping up to a page itself), checked by mmap.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error()).context(
                "mapping a BPF array into memory (needs BPF_F_MMAPABLE, Linux 5.5 or later)",
            );
        }
        Ok(Mapped {
            base: base as *const u8,
            bytes,
            entries,
            stride,
            _value: PhantomData,
        })
    }

    pub fn len(&self) -> u32 {
        self.entries
    }

    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }

    /// Element `index`, copied out; `None` past the end. A program may be updating it meanwhile:
    /// each field is read whole (aligned, at most 8 bytes), but two fields can be a completion
    /// apart, as with any unlocked read of counters.
    pub fn get(&self, index: u32) -> Option<T> {
        if index >= self.entries {
            return None;
        }
        // SAFETY: index < entries, so the element lies within the mapping; T is Pod (any bits
        // are valid); the mapping is page-aligned and the stride a multiple of 8, which no Pod
        // map value's alignment exceeds.
        Some(unsafe {
            std::ptr::read_volatile(self.base.add(index as usize * self.stride) as *const T)
        })
    }
}

impl<T> Drop for Mapped<T> {
    fn drop(&mut self) {
        // SAFETY: base and bytes are the mapping made in `new`, unmapped once.
        unsafe { libc::munmap(self.base as *mut libc::c_void, self.bytes) };
    }
}
