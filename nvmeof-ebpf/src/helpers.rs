//! Small pieces every program uses: the BPF atomic add, the map patterns around it, and the
//! classic tracepoints' field read.
use aya_ebpf::{
    maps::{HashMap, PerCpuArray},
    programs::TracePointContext,
};
use nvmeof_common::count_maps::CountMap;
use nvmeof_common::FieldLoc;

/// The value the agent wrote into a global before load. The read is volatile: the global's
/// initialiser is zeroed, and a plain read would let the compiler fold that zero in.
#[inline(always)]
pub fn global<T: Copy>(g: &T) -> T {
    // SAFETY: `g` is a reference, so valid and aligned for a read of `T`.
    unsafe { core::ptr::read_volatile(g) }
}

/// `BPF_NOEXIST`: insert only when the key is absent.
pub const BPF_NOEXIST: u64 = 1;

/// Adds to a shared counter with the BPF atomic add (the result is unused, so LLVM emits the
/// fetch-less form that 5.10 accepts too).
///
/// # Safety
/// `dst` points into a map value (which the kernel keeps alive for the program run).
#[inline(always)]
pub unsafe fn atomic_add(dst: *mut u64, v: u64) {
    // SAFETY: the caller's promise.
    unsafe {
        core::intrinsics::atomic_xadd::<u64, u64, { core::intrinsics::AtomicOrdering::Relaxed }>(
            dst, v,
        );
    }
}

/// [`atomic_add`] for a 32-bit counter.
///
/// # Safety
/// As for [`atomic_add`].
#[inline(always)]
pub unsafe fn atomic_add32(dst: *mut u32, v: u32) {
    // SAFETY: the caller's promise.
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

/// Adds one to the count under `key` of the counting map `map` (`which`), creating it when
/// absent. When the map is full and refuses the new key, the event is counted in the object's
/// `MAP_FULL` slot for `which` instead, so nothing goes uncounted silently.
#[inline(always)]
pub fn count_key<K>(map: &HashMap<K, u64>, key: &K, which: CountMap, full: &PerCpuArray<u64>) {
    if let Some(p) = map.get_ptr_mut(key) {
        // SAFETY: p points into the map's value for key.
        unsafe { atomic_add(p, 1) };
        return;
    }
    if map.insert(key, 1, BPF_NOEXIST).is_ok() {
        return;
    }
    // Either another CPU inserted the key between the lookup and the insert, or the map is full.
    match map.get_ptr_mut(key) {
        // SAFETY: as above.
        Some(p) => unsafe { atomic_add(p, 1) },
        None => map_full(full, which),
    }
}

/// Counts one event that `which` could not count because it was full.
#[inline(always)]
pub fn map_full(full: &PerCpuArray<u64>, which: CountMap) {
    if let Some(p) = full.get_ptr_mut(which as u32) {
        // SAFETY: a per-CPU slot: no other program run touches it while this one runs.
        unsafe { *p += 1 };
    }
}

/// Reads an unsigned integer field of 1, 2, 4 or 8 bytes of a classic tracepoint's record, at
/// the place the agent found in the `format` file. `None` for a size the programs cannot read,
/// `Some(Err(()))` when the read itself failed.
#[inline(always)]
pub fn read_field(ctx: &TracePointContext, loc: FieldLoc) -> Option<Result<u64, ()>> {
    let off = loc.offset as usize;
    // SAFETY: read_at goes through bpf_probe_read; a bad offset fails, it cannot fault.
    let v = unsafe {
        match loc.size {
            1 => ctx.read_at::<u8>(off).map(u64::from),
            2 => ctx.read_at::<u16>(off).map(u64::from),
            4 => ctx.read_at::<u32>(off).map(u64::from),
            8 => ctx.read_at::<u64>(off),
            _ => return None,
        }
    };
    Some(v.map_err(|_| ()))
}

/// Stores `new` at `dst` if it holds `old` (BPF_CMPXCHG, Linux 5.12); returns what it held.
///
/// # Safety
/// As for [`atomic_add`].
#[inline(always)]
pub unsafe fn compare_exchange(dst: *mut u64, old: u64, new: u64) -> u64 {
    use core::intrinsics::AtomicOrdering::SeqCst;
    // SAFETY: the caller's promise.
    unsafe { core::intrinsics::atomic_cxchg::<u64, { SeqCst }, { SeqCst }>(dst, old, new).0 }
}
