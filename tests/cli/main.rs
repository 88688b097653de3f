//! fetchall's integration tests: one test crate (so it links once), a real HTTP server on
//! loopback, the real reqwest client, the real binary.

mod api;
mod api_server;
mod binary;
mod cookbook;
mod deploy;
mod everyday;
mod fault_server;
mod faults;
mod hardening;
mod library;
mod limits;
mod politeness;
mod polling;
mod profiles;
mod properties;
mod redis;
mod resources;
mod retries;
mod scaleout;
mod security;
mod server;
mod shared_limits;
mod shell;
mod signals;
mod sockets;
mod support;
