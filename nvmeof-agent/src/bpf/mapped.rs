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
        let mut out = std::mem::MaybeUninit::<T>::uninit();
        // SAFETY: index < entries, so the element lies within the mapping, at a multiple of the
        // stride (itself a multiple of 8) from the page-aligned base: 8-aligned. `read_fields`
        // writes every byte of `out`, and T is Pod: any bits are valid.
        unsafe {
            read_fields::<T>(self.at(index), out.as_mut_ptr() as *mut u8);
            Some(out.assume_init())
        }
    }

    /// Element `index` copied into `out` as [`Self::get`] reads it, saying whether any of its
    /// bytes is non-zero (an element no program has written is all zeros: the test rides on the
    /// copy, no second pass); `None` past the end, `out` untouched. Into the caller's memory, so
    /// that a large element is not copied once more from the stack.
    pub fn read_into(&self, index: u32, out: &mut T) -> Option<bool> {
        if index >= self.entries {
            return None;
        }
        // SAFETY: as in `get`; `out` is a valid T with room for all its bytes, and T is Pod.
        Some(unsafe { read_fields::<T>(self.at(index), out as *mut T as *mut u8) })
    }

    /// The address of element `index` (< entries).
    fn at(&self, index: u32) -> *const u8 {
        // SAFETY: callers check index < entries: within the mapping.
        unsafe { self.base.add(index as usize * self.stride) }
    }
}

/// Copies the `size_of::<T>()` bytes of a `T` at `src`, which another writer may be updating,
/// to `dst`, one aligned load per 8-byte word (then 4, 2 and 1 bytes for a tail), so that every
/// field of at most 8 bytes at its natural alignment is read whole; says whether any byte was
/// non-zero. A single volatile read of the whole struct reads fields whole too, but the compiler
/// lowers it to a move per 4-byte field: for the 450 buckets of an `OpStats`, twice the loads and
/// stores of this.
///
/// # Safety
/// `src` is 8-aligned and `size_of::<T>()` bytes from it are readable; as many bytes from `dst`
/// are writable.
unsafe fn read_fields<T>(src: *const u8, dst: *mut u8) -> bool {
    let size = std::mem::size_of::<T>();
    let mut any = 0u64;
    // SAFETY: every read lies within the `size` bytes at `src` and is aligned to its width
    // (offsets are multiples of it from an 8-aligned start); every write lies within `dst`'s.
    unsafe {
        let mut at = 0;
        while at + 8 <= size {
            let v = std::ptr::read_volatile(src.add(at) as *const u64);
            (dst.add(at) as *mut u64).write_unaligned(v);
            any |= v;
            at += 8;
        }
        if at + 4 <= size {
            let v = std::ptr::read_volatile(src.add(at) as *const u32);
            (dst.add(at) as *mut u32).write_unaligned(v);
            any |= u64::from(v);
            at += 4;
        }
        if at + 2 <= size {
            let v = std::ptr::read_volatile(src.add(at) as *const u16);
            (dst.add(at) as *mut u16).write_unaligned(v);
            any |= u64::from(v);
            at += 2;
        }
        if at < size {
            let v = std::ptr::read_volatile(src.add(at));
            *dst.add(at) = v;
            any |= u64::from(v);
        }
    }
    any != 0
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

    /// `bytes` copied into 8-aligned memory, read back as a `T`, and whether any was non-zero.
    fn round_trip<T: Copy>(bytes: &[u8]) -> (T, bool) {
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
        let mut out = std::mem::MaybeUninit::<T>::uninit();
        // SAFETY: a Vec<u64> is 8-aligned and holds the bytes; `out` has room for them; every
        // T used here is valid for any bits.
        unsafe {
            let any = read_fields::<T>(words.as_ptr() as *const u8, out.as_mut_ptr() as *mut u8);
            (out.assume_init(), any)
        }
    }

    #[test]
    fn reads_every_byte_of_words_and_tails() {
        let bytes: Vec<u8> = (1..=15).collect();
        // 8 + 4 + 2 + 1 bytes.
        let want = <[u8; 15]>::try_from(&bytes[..]).unwrap();
        assert_eq!(round_trip::<[u8; 15]>(&bytes), (want, true));
        let v = round_trip::<[u32; 3]>(&[1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0]);
        assert_eq!(v, ([1, 2, 3], true));
        // Zero but the last byte, in the tail: non-zero. All zero: not.
        let mut last = [0u8; 15];
        last[14] = 1;
        assert_eq!(round_trip::<[u8; 15]>(&last), (last, true));
        assert_eq!(round_trip::<[u8; 15]>(&[0; 15]), ([0; 15], false));
        let mut s = OpStats {
            bytes: 1 << 40,
            errors: 7,
            latency_sum_ns: u64::MAX - 1,
            ..Default::default()
        };
        s.buckets[latency_bucket(100_000)] = 0xdead_beef;
        s.buckets[nvmeof_common::LATENCY_BUCKETS - 1] = 9;
        assert_eq!(round_trip::<OpStats>(bytes_of(&s)), (s, true));
        let z = OpStats::default();
        assert_eq!(round_trip::<OpStats>(bytes_of(&z)), (z, false));
    }

    fn bytes_of(s: &OpStats) -> &[u8] {
        // SAFETY: OpStats is plain data without padding; its bytes are read as such.
        unsafe {
            std::slice::from_raw_parts(
                s as *const OpStats as *const u8,
                std::mem::size_of::<OpStats>(),
            )
        }
    }
}
