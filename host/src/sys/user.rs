//! Who the host runs as: the effective user id, for checks that a file
//! the host trusts belongs to it.

/// The process's effective user id.
pub fn effective_uid() -> u32 {
    // SAFETY: `geteuid` takes nothing, cannot fail and touches no memory.
    unsafe { libc::geteuid() }
}
