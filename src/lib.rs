//! fetchall: fetch many URLs concurrently, politely, and report every one as a JSON record.
//!
//! The pipeline, one module per stage:
//!
//! ```text
//! input (lines -> requests) -> scheduler (limit: per-host queues, slots, rate quotas) -> fetch -> record -> output
//! ```
//!
//! The library runs on the caller's tokio runtime: [`start`] spawns the pipeline's tasks on the
//! current runtime and hands back the records as they complete; it never builds or nests a
//! runtime of its own, and never installs signal handlers (stop a run with
//! [`start_with_cancel`]'s token). Every input line gets exactly one [`Record`]: a failure of
//! one URL is a record with an [`ErrorKind`], never an error of the run.
//!
//! ```
//! # use std::io::{Read, Write};
//! # let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
//! # let addr = listener.local_addr().unwrap();
//! # std::thread::spawn(move || {
//! #     for stream in listener.incoming().take(2) {
//! #         let mut stream = stream.unwrap();
//! #         let mut buf = [0u8; 1024];
//! #         let n = stream.read(&mut buf).unwrap();
//! #         let found = String::from_utf8_lossy(&buf[..n]).starts_with("GET /a ");
//! #         let reply: &[u8] = if found {
//! #             b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 11\r\nconnection: close\r\n\r\n{\"a\": true}"
//! #         } else {
//! #             b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
//! #         };
//! #         stream.write_all(reply).unwrap();
//! #     }
//! # });
//! # let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
//! # runtime.block_on(async {
//! // A server on 127.0.0.1 answers /a with JSON and anything else with 404.
//! let input = format!("http://{addr}/a\nhttp://{addr}/missing\n");
//! let mut settings = fetchall::Settings::default();
//! settings.concurrency = std::num::NonZeroUsize::new(2).unwrap();
//! let mut run = fetchall::start(settings, Box::pin(std::io::Cursor::new(input)))?;
//! let mut records = Vec::new();
//! while let Some(record) = run.next().await {
//!     records.push(record);
//! }
//! run.finish().await?;
//! records.sort_by_key(|r| r.seq);
//! assert!(records[0].ok);
//! assert_eq!(records[0].body, Some(serde_json::json!({"a": true})));
//! let error = records[1].error.as_ref().unwrap();
//! assert_eq!((records[1].status, error.kind), (Some(404), fetchall::ErrorKind::HttpStatus));
//! # Ok::<(), fetchall::Error>(())
//! # }).unwrap();
//! ```
//!
//! What is public, and why:
//! - [`start`], [`start_with_cancel`] and [`Run`] run a pipeline and hand back its records;
//!   [`CancellationToken`] stops it. [`start_input`] runs one that polls (rounds on a
//!   schedule, a state of earlier outcomes, conditional requests; see docs/polling.md),
//!   reading an [`Input`] again every round.
//! - [`run`] writes every record as a JSON line to any `Write`; [`Run::write_to`] does the same
//!   with an observer per record and a [`Writing`] whose [`SinkHandle`] can freeze the output
//!   between two whole lines before an immediate exit (the binary's second Ctrl-C).
//! - [`Settings`] and its parts ([`RequestDefaults`], [`Body`], [`RetryPolicy`], [`Proxy`],
//!   [`CaCerts`], [`BodyMode`], [`Rate`], [`Filter`] (a compiled jq filter), [`HostProfile`]
//!   and [`HostPattern`] (settings for some hosts only), with [`Method`], [`HeaderMap`] and [`Bytes`] re-exported) configure
//!   a run; the parsers a front end needs to build them from text are public too
//!   ([`parse_header`], [`parse_header_value`], [`parse_method`], the units' `FromStr`), as
//!   are the redaction rules a front end shows ([`is_credential_header`],
//!   [`DEFAULT_MASKED_PARAMS`]), and [`SettingsError::new`] lets it report its own settings
//!   the same way.
//! - [`Record`] and its parts ([`RecordError`], [`ErrorKind`], [`PreviousError`], [`Saved`],
//!   [`BodyEncoding`]) describe each line; [`Tally`] counts what was written.
//! - [`Error`] and [`SettingsError`] stop a run; [`count_records`] sizes a progress bar.
//!
//! Everything else is private. The public structs and enums are `#[non_exhaustive]`, so new
//! fields and kinds are not breaking changes.

#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![warn(unreachable_pub)]

mod count;
mod error;
mod fetch;
mod filter;
mod header;
mod input;
mod json;
mod limit;
mod output;
mod paging;
mod profile;
mod proxy;
mod record;
mod redact;
mod reorder;
mod request;
mod resume;
mod retry;
mod run;
mod save;
mod scheduler;
mod settings;
mod shard;
mod state;
mod units;

pub use crate::count::count_records;
pub use crate::error::{Error, SettingsError};
pub use crate::filter::Filter;
pub use crate::header::{is_credential_header, parse_header, parse_header_value, parse_method};
pub use crate::input::{Input, Source};
pub use crate::output::{Frozen, Observer, SinkHandle, Tally};
pub use crate::profile::{HostPattern, HostProfile};
pub use crate::record::{
    BodyEncoding, BodyMode, ErrorKind, PreviousError, Record, RecordError, Saved,
};
pub use crate::redact::DEFAULT_MASKED_PARAMS;
pub use crate::request::{Body, RequestDefaults};
pub use crate::retry::RetryPolicy;
pub use crate::run::{Run, Writing, check_limits, run, start, start_input, start_with_cancel};
pub use crate::scheduler::Skipped;
pub use crate::settings::{
    CaCerts, LimitsFallback, LimitsUrl, MAX_CONCURRENCY, MAX_LOOKAHEAD, Proxy, Settings,
};
pub use crate::shard::Shard;
pub use crate::units::{ByteSize, HumanDuration, Rate};
pub use bytes::Bytes;
pub use reqwest::Method;
pub use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
pub use tokio_util::sync::CancellationToken;
