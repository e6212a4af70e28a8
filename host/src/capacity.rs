//! How many connections this machine can hold at once.
//!
//! Each open connection costs a thread (stack, guard page, signal stacks)
//! — or, on an event loop, a fiber stack — and an instance (memory and
//! table slots), and every one of those is a memory mapping. Linux caps
//! mappings per process at `vm.max_map_count` (65530 by default); past it,
//! thread creation or mmap fails and the whole process can abort. Each
//! connection also holds a file descriptor, under the open-file limit. The
//! host raises that limit as far as it may at start ([`raise_open_files`]),
//! derives its default connection cap from both live limits, and warns
//! when asked to go above them.

use crate::sys::limits::{self, max_map_count};

/// Memory mappings one open connection adds on a thread of its own,
/// measured with `/proc/PID/maps` at 1,000 idle echo connections (10,077
/// mappings, 49 before): the thread's stack and guard, Rust's and
/// wasmtime's signal stacks with their guards, and the instance's memory
/// and table slots made accessible inside the pooling allocator's
/// reservations.
pub const MAPPINGS_PER_THREAD_CONNECTION: usize = 10;

/// The same on an event loop, measured at 3,000 idle echo connections
/// (24,356 mappings, 12,348 before): 4 for the instance's slots, plus the
/// 2 (stack and guard) that every fiber-stack slot costs from start-up.
pub const MAPPINGS_PER_EVENT_LOOP_CONNECTION: usize = 6;

/// Mappings kept free for the host itself (code, heap, compiled plugins,
/// reloads).
pub const RESERVED_MAPPINGS: usize = 4096;

/// The connection cap when the machine allows more.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;

/// File descriptors kept free for the host itself (listeners, the event
/// loops' epoll and wakers, the admin listener, compiled plugins, logs).
pub const RESERVED_FILES: usize = 64;

/// Raises the open-file soft limit to the hard limit and logs both (once,
/// at start-up); failing to is logged, and the cap then follows the limit
/// in force.
pub fn raise_open_files() {
    match limits::raise_open_files() {
        Ok(files) if files.was == files.now => tracing::info!(
            soft = files.now,
            hard = files.hard,
            "open-file limit: {} (already the hard limit)",
            files.now
        ),
        Ok(files) => tracing::info!(
            soft = files.now,
            hard = files.hard,
            "open-file limit raised from {} to the hard limit, {}",
            files.was,
            files.now
        ),
        Err(err) => tracing::warn!("cannot raise the open-file limit: {err}"),
    }
}

/// The most connections the open-file soft limit leaves room for when
/// each holds `files_per_connection` descriptors.
fn connections_for_open_files(files_per_connection: usize) -> Option<usize> {
    let soft = limits::open_files_soft_limit()?;
    let free = usize::try_from(soft)
        .unwrap_or(usize::MAX)
        .saturating_sub(RESERVED_FILES);
    Some(free / files_per_connection.max(1))
}

/// Mappings per connection: on event loops or on threads.
pub fn mappings_per_connection(event_loops: bool) -> usize {
    if event_loops {
        MAPPINGS_PER_EVENT_LOOP_CONNECTION
    } else {
        MAPPINGS_PER_THREAD_CONNECTION
    }
}

/// The most connections `max_map_count` leaves room for when each costs
/// `per_connection` mappings.
pub fn connections_for_map_count(max_map_count: usize, per_connection: usize) -> usize {
    max_map_count.saturating_sub(RESERVED_MAPPINGS) / per_connection
}

/// The default connection cap: [`DEFAULT_MAX_CONNECTIONS`], lowered to what
/// the live `vm.max_map_count` (served on event loops or threads) and the
/// open-file limit allow, for connections that each hold their socket and
/// `granted_dirs` directories (opened per connection, see
/// `plugin/wasm/grants.rs`). The budget is per listener: listeners of one
/// process share the limits, so several busy ones may still meet them.
pub fn default_max_connections(event_loops: bool, granted_dirs: usize) -> usize {
    let per_connection = mappings_per_connection(event_loops);
    let by_maps = max_map_count().map_or(DEFAULT_MAX_CONNECTIONS, |count| {
        connections_for_map_count(count, per_connection)
    });
    let by_files = connections_for_open_files(1 + granted_dirs).unwrap_or(DEFAULT_MAX_CONNECTIONS);
    DEFAULT_MAX_CONNECTIONS.min(by_maps).min(by_files).max(1)
}

/// The connection cap for a listener: `asked`, else the default; asking
/// for more than `vm.max_map_count` allows is warned about.
pub fn connection_cap(asked: Option<usize>, event_loops: bool, granted_dirs: usize) -> usize {
    let safe = default_max_connections(event_loops, granted_dirs);
    match asked {
        None => safe,
        Some(asked) => {
            if asked > safe {
                tracing::warn!(
                    "a connection cap of {asked} exceeds what vm.max_map_count and the \
                     open-file limit allow (about {safe}); raise them with \
                     `sysctl -w vm.max_map_count=262144` and, as root, the hard \
                     open-file limit (`LimitNOFILE=` for a systemd unit)"
                );
            }
            asked
        }
    }
}

/// The connection cap of a listener whose connections share instances
/// (the `protocol` world): a connection costs no mapping and one
/// descriptor, so the default is what the open-file limit leaves.
pub fn shared_connection_cap(asked: Option<usize>) -> usize {
    let safe = connections_for_open_files(1).unwrap_or(DEFAULT_MAX_CONNECTIONS);
    match asked {
        Some(asked) => {
            if asked > safe {
                tracing::warn!(
                    "a connection cap of {asked} exceeds what the open-file limit allows \
                     (about {safe}); raise the hard open-file limit as root \
                     (`LimitNOFILE=` for a systemd unit)"
                );
            }
            asked
        }
        None => safe.max(1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_linux_default_map_count_allows_thousands_of_connections() {
        let threads = mappings_per_connection(false);
        assert!(connections_for_map_count(65_530, threads) >= 6_000);
        assert!(connections_for_map_count(262_144, threads) >= 10_000);
        // Event loops fit the full default cap in the default map count.
        let loops = mappings_per_connection(true);
        assert!(connections_for_map_count(65_530, loops) >= DEFAULT_MAX_CONNECTIONS);
    }

    #[test]
    fn a_tiny_map_count_still_allows_one_connection() {
        assert_eq!(connections_for_map_count(10, 6), 0);
        assert!(default_max_connections(false, 0) >= 1);
        assert!(default_max_connections(true, 0) >= 1);
        // Each granted directory is a descriptor per connection.
        assert!(default_max_connections(true, 3) <= default_max_connections(true, 0));
    }
}
