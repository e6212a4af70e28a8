//! `host`: a plugin host that serves TCP connections with request handlers
//! written as WebAssembly components (or native libraries), in the shape of
//! Python's `socketserver.BaseRequestHandler`: `setup`, `handle`, `finish`.
//!
//! - [`server`] owns the listeners (`mio`) and runs each connection on a
//!   pooled thread;
//! - [`plugin`] loads handlers and serves one connection in a fresh,
//!   isolated instance;
//! - [`connection`] is the host-owned byte stream plugins read and write.

#![deny(missing_docs)]

pub mod address;
pub mod admin;
pub mod capacity;
pub mod config;
pub mod connection;
pub mod metrics;
pub mod plugin;
pub mod reload;
pub mod server;
pub mod service;
pub mod size;
pub mod sys;
pub mod watch;

/// An error and its causes on one line: `outer: inner: root`.
pub fn one_line(err: &anyhow::Error) -> String {
    format!("{err:#}")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}
