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
        // SAFETY: index < entries, so the element lies within the mapping, at a multiple of the
        // stride (itself a multiple of 8) from the page-aligned base: 8-aligned.
        Some(unsafe { read_fields(self.base.add(index as usize * self.stride)) })
    }
}

/// Copies a `T` out of memory that another writer may be updating, one aligned load per 8-byte
/// word (then 4, 2 and 1 bytes for a tail), so that every field of at most 8 bytes at its natural
/// alignment is read whole. A single volatile read of the whole struct does that too, but the
/// compiler lowers it to a move per 4-byte field: for the 450 buckets of an `OpStats`, twice the
/// loads and stores of this.
///
/// # Safety
/// `src` is 8-aligned and `size_of::<T>()` bytes from it are readable; any bits are a valid `T`.
unsafe fn read_fields<T: Copy>(src: *const u8) -> T {
    let mut out = std::mem::MaybeUninit::<T>::uninit();
    let size = std::mem::size_of::<T>();
    let dst = out.as_mut_ptr() as *mut u8;
    // SAFETY: every read lies within the `size` bytes at `src` and is aligned to its width
    // (offsets are multiples of it from an 8-aligned start); every write lies within `out`.
    unsafe {
        let mut at = 0;
        while at + 8 <= size {
            let v = std::ptr::read_volatile(src.add(at) as *const u64);
            (dst.add(at) as *mut u64).write_unaligned(v);
            at += 8;
        }
        if at + 4 <= size {
            let v = std::ptr::read_volatile(src.add(at) as *const u32);
            (dst.add(at) as *mut u32).write_unaligned(v);
            at += 4;
        }
        if at + 2 <= size {
            let v = std::ptr::read_volatile(src.add(at) as *const u16);
            (dst.add(at) as *mut u16).write_unaligned(v);
            at += 2;
        }
        if at < size {
            *dst.add(at) = std::ptr::read_volatile(src.add(at));
        }
        out.assume_init()
    }
}

impl<T> Drop for Mapped<T> {
    fn drop(&mut self) {
        // SAFETY: base and bytes are the mapping made in `new`, unmapped once.
        unsafe { libc::munmap(self.base as *mut libc::c_void, self.bytes) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nvmeof_common::{latency_bucket, OpStats};

    /// `bytes` copied into 8-aligned memory, read back as a `T`.
    fn round_trip<T: Copy>(bytes: &[u8]) -> T {
        assert_eq!(bytes.len(), std::mem::size_of::<T>());
        let mut words = vec![0u64; bytes.len().div_ceil(8)];
        // SAFETY: `words` holds at least `bytes.len()` bytes.
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                words.as_mut_ptr() as *mut u8,
                bytes.len(),
            )
        };
        // SAFETY: a Vec<u64> is 8-aligned and holds the bytes; any bits are a valid T here.
        unsafe { read_fields(words.as_ptr() as *const u8) }
    }

    #[test]
    fn reads_every_byte_of_words_and_tails() {
        let bytes: Vec<u8> = (1..=15).collect();
        // 8 + 4 + 2 + 1 bytes.
        assert_eq!(
            round_trip::<[u8; 15]>(&bytes),
            <[u8; 15]>::try_from(&bytes[..]).unwrap()
        );
        let v: [u32; 3] = round_trip(&[1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0]);
        assert_eq!(v, [1, 2, 3]);
        let mut s = OpStats {
            bytes: 1 << 40,
            errors: 7,
            latency_sum_ns: u64::MAX - 1,
            ..Default::default()
        };
        s.buckets[latency_bucket(100_000)] = 0xdead_beef;
        s.buckets[nvmeof_common::LATENCY_BUCKETS - 1] = 9;
        // SAFETY: OpStats is plain data; its bytes are read as such.
        let raw = unsafe {
            std::slice::from_raw_parts(
                &s as *const OpStats as *const u8,
                std::mem::size_of::<OpStats>(),
            )
        };
        assert_eq!(round_trip::<OpStats>(raw), s);
    }
}
