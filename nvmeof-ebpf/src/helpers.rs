//! Small pieces every program uses: the BPF atomic add and the map patterns around it.
use aya_ebpf::maps::HashMap;

/// `BPF_NOEXIST`: insert only when the key is absent.
pub const BPF_NOEXIST: u64 = 1;

/// Adds to a shared counter with the BPF atomic add (the result is unused, so LLVM emits the
/// fetch-less form that 5.10 accepts too).
#[inline(always)]
pub fn atomic_add(dst: *mut u64, v: u64) {
    // SAFETY: dst points into a map value that the kernel keeps alive for this program run.
    unsafe {
        core::intrinsics::atomic_xadd::<u64, u64, { core::intrinsics::AtomicOrdering::Relaxed }>(
            dst, v,
        );
    }
}

/// [`atomic_add`] for a 32-bit counter.
#[inline(always)]
pub fn atomic_add32(dst: *mut u32, v: u32) {
    // SAFETY: as in `atomic_add`.
    unsafe {
        core::intrinsics::atomic_xadd::<u32, u32, { core::intrinsics::AtomicOrdering::Relaxed }>(
            dst, v,
        );
    }
}

/// The value of `key`, inserted as `init` first when absent (another CPU may insert it between
/// the two lookups: NOEXIST keeps theirs). `None` when the map is full.
#[inline(always)]
pub fn get_or_insert<K, V>(map: &HashMap<K, V>, key: &K, init: &V) -> Option<*mut V> {
    if let Some(p) = map.get_ptr_mut(key) {
        return Some(p);
    }
    let _ = map.insert(key, init, BPF_NOEXIST);
    map.get_ptr_mut(key)
}

/// Adds one to the count under `key`, creating it when absent.
#[inline(always)]
pub fn count_key<K>(map: &HashMap<K, u64>, key: &K) {
    match map.get_ptr_mut(key) {
        Some(p) => atomic_add(p, 1),
        None => {
            if map.insert(key, &1, BPF_NOEXIST).is_err() {
                if let Some(p) = map.get_ptr_mut(key) {
                    atomic_add(p, 1);
                }
            }
        }
    }
}
