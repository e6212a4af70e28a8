//! Process limits that bound how many connections one host can hold: the
//! open-file limit (one descriptor per connection), raised to its hard
//! limit at start, and `vm.max_map_count` (memory mappings per process),
//! read for [`capacity`](crate::capacity).

use std::fs;
use std::io;

/// The open-file limit before and after [`raise_open_files`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenFiles {
    /// The soft limit the process started with.
    pub was: u64,
    /// The soft limit now (the hard limit, if raising it worked).
    pub now: u64,
    /// The hard limit, which only a privileged process can raise.
    pub hard: u64,
}

/// Raises the soft limit on open files to the hard limit: every connection
/// holds a descriptor, and the default soft limit (often 1,024) would cap
/// the host far below what its memory allows.
pub fn raise_open_files() -> io::Result<OpenFiles> {
    let mut limit = open_files()?;
    let was = limit.rlim_cur;
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: `raised` is a valid rlimit; raising the soft limit up to
        // the hard one needs no privilege.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            return Err(io::Error::last_os_error());
        }
        limit = raised;
    }
    Ok(OpenFiles {
        was,
        now: limit.rlim_cur,
        hard: limit.rlim_max,
    })
}

/// The open-file soft limit in force, if readable.
pub fn open_files_soft_limit() -> Option<u64> {
    open_files().ok().map(|limit| limit.rlim_cur)
}

/// The open-file limits (`RLIMIT_NOFILE`).
fn open_files() -> io::Result<libc::rlimit> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid rlimit to write to.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(limit)
}

/// The live `vm.max_map_count`, if readable.
pub fn max_map_count() -> Option<usize> {
    fs::read_to_string("/proc/sys/vm/max_map_count")
        .ok()?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_open_file_limit_is_raised_to_the_hard_one() {
        let limits = raise_open_files().unwrap();
        assert_eq!(limits.now, limits.hard);
        assert!(limits.was <= limits.now);
        // Raising again changes nothing.
        assert_eq!(raise_open_files().unwrap().was, limits.now);
    }

    #[test]
    fn the_map_count_limit_is_readable() {
        assert!(max_map_count().unwrap() > 0);
    }
}
