//! Give the heap freed after a burst (a reconcile of a million files, a session's discovery)
//! back to the operating system: glibc keeps freed memory in its arenas otherwise, and a daemon
//! that once held a million paths would keep that RSS forever. A leaf: imports nothing of pixdex.

/// Return free heap pages to the OS (glibc `malloc_trim`); a no-op elsewhere.
pub fn release_freed() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists; it takes no pointers.
    unsafe {
        libc::malloc_trim(0);
    }
}
