//! Giving the memory of a large message back to the system once it is handled.
//!
//! Nothing of a message outlives it (its body, decoded arguments and error are dropped
//! when it is settled), yet a worker that handled one 10 MB message used to keep about
//! 90 MB resident for good. glibc's `malloc` raises its mmap threshold to the size of the
//! largest block freed (up to 32 MiB: the "dynamic mmap threshold" of `mallopt(3)`), so
//! the next large blocks come from its heaps instead of their own mappings; a tokio worker
//! thread allocates from a secondary arena, whose top glibc never trims
//! (`malloc_trim` trims only the main arena's top), so that memory stays resident.
//!
//! Fixing the threshold turns the adjustment off: blocks of [`MMAP_THRESHOLD`] or more are
//! mapped on their own and unmapped when freed. Measured on the memory broker, three
//! 10 MB ill-typed arguments in turn: RSS 9.4 MB before, 91 MB after without this, 9.7 MB
//! with it. An explicit `MALLOC_MMAP_THRESHOLD_` in the environment wins: glibc reads it
//! at start and this leaves it alone. Other allocators (musl, or jemalloc or mimalloc as
//! the global allocator) have their own policies; there this does nothing.

/// Blocks at least this large get their own mapping: 1 MiB, well above glibc's initial
/// 128 KiB, so the many small and mid-sized allocations of a task still come from the heap.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: std::ffi::c_int = 1024 * 1024;

/// Fixes glibc's mmap threshold for the process, once, when a worker starts.
pub(super) fn at_worker_start() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_some() {
                return;
            }
            /// `M_MMAP_THRESHOLD` in glibc's `malloc.h`.
            const M_MMAP_THRESHOLD: std::ffi::c_int = -3;
            unsafe extern "C" {
                /// glibc's `int mallopt(int param, int value)`.
                fn mallopt(param: std::ffi::c_int, value: std::ffi::c_int) -> std::ffi::c_int;
            }
            // SAFETY: `mallopt` takes no pointer and locks malloc's state itself; changing
            // the threshold affects only where later blocks are allocated.
            unsafe {
                mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD);
            }
        });
    }
}
