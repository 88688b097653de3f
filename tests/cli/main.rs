//! fetchall's integration tests: one test crate (so it links once), a real HTTP server on
//! loopback, the real reqwest client, the real binary.

mod binary;
mod cookbook;
mod everyday;
mod library;
mod limits;
mod server;
mod shell;
mod support;
