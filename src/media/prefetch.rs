//! A cache hint for the per-packet path: a media thread handles a batch of
//! readable sockets, each belonging to a room whose state (slots, legs,
//! participants) lives in a few heap blocks that have usually left the cache
//! since the room's last packet 20 ms ago. Asking for the next sockets'
//! blocks while the current one is handled overlaps those memory loads with
//! work instead of waiting on each in turn (see `engine::reactor`).

/// Asks the CPU to start loading the `lines` 64-byte cache lines from `p`.
/// Only a hint: it never faults and never changes what the program does.
#[inline(always)]
pub(crate) fn prefetch<T: ?Sized>(p: *const T, lines: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use core::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        let p = p.cast::<i8>();
        for i in 0..lines {
            // SAFETY: PREFETCHT0 only hints the cache: it cannot fault and
            // reads nothing the program sees, whatever the address (Intel
            // SDM vol. 2, PREFETCHh), and SSE is part of every x86_64 CPU.
            #[allow(unsafe_code)]
            unsafe {
                _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(i * 64));
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (p, lines);
}
