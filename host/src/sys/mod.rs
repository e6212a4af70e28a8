//! Every direct OS call the host makes (through `libc`), behind small
//! functions (safe ones, except where the caller must vouch for a buffer
//! or a descriptor, which say so in their `# Safety`): socket calls the connection's fast paths need
//! ([`socket`]), the wake-up a handler waiting for its client or a
//! message waits on ([`doorbell`]), the accept loop's scheduling class ([`sched`]), the
//! process limits that bound how many connections fit ([`limits`]), and
//! the user the host runs as ([`user`]). The
//! rest of the host uses the standard library, `mio`, `socket2` and
//! tokio, and has no `unsafe` of its own for the OS.

pub mod doorbell;
pub mod limits;
pub mod sched;
pub mod socket;
pub mod user;
