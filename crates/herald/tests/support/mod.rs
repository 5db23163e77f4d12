//! Helpers for the end-to-end tests: a real `herald serve` process per test
//! ([`Server`]), a WebSocket client that speaks the JSON wire protocol line by
//! line ([`Client`]), and HS256 connection tokens ([`token`]).
//!
//! Every wait is bounded: a helper that does not see what it waits for panics
//! with what it saw instead, so no test can hang or pass by timing out.

// Each test uses a different subset of the helpers.
#![allow(dead_code)]

mod client;
mod server;
pub(crate) mod tls;
mod token;

pub(crate) use client::{error_code, is_push, push_pub, Client, Incoming};
pub(crate) use server::{unique_temp_dir, Server};
pub(crate) use token::{token, token_signed_with, token_with_exp, unix_now};
