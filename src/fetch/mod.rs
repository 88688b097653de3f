//! Fetch: make one attempt at one request and describe what happened.
//!
//! A failure of one URL is data, not control flow: every attempt, good or bad, comes back as an
//! [`Outcome`], its error classified into an `ErrorKind` by walking the error's source chain.
//! This module makes one attempt; it does not decide when a request may start or whether to
//! try again (that is `limit`/`scheduler` and `retry`). Its parts: `client` builds the shared
//! HTTP client, `attempt` makes one request, `redirect` decides each redirect (fetchall follows
//! them itself), `classify` names what went wrong, `resolve` answers name lookups.

mod attempt;
mod classify;
mod client;
mod redirect;
mod resolve;

pub(crate) use self::attempt::{Outcome, attempt};
pub(crate) use self::client::{Clients, POOL_IDLE_TIMEOUT, client};
pub(crate) use self::redirect::{leave_origin, same_origin};
