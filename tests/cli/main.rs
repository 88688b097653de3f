//! fetchall's integration tests: one test crate (so it links once), a real HTTP server on
//! loopback, the real reqwest client, the real binary.

mod binary;
mod library;
mod limits;
mod politeness;
mod server;
mod support;
