//! Real `redis-server` processes for the Redis engine tests.
//!
//! [`RedisServer`] is one server on a free loopback port with its own temp
//! directory (standalone, TLS or ACL flavoured) that can be stopped and
//! restarted on the same port, with or without its data; [`RedisCluster`] is
//! a Redis Cluster of N masters; [`SentinelSetup`] a master, a replica and
//! three Sentinels; [`Monitor`] records `MONITOR` output.
//! Everything is killed and removed on drop.
//!
//! A missing `redis-server` or `redis-cli` fails the test, never skips it.
//! Every wait is bounded (10 s for a server to answer `PING`).

// Each test uses a different subset of the helpers.
#![allow(dead_code)]

mod cluster;
mod sentinel;
mod server;
mod tls;

pub(crate) use cluster::RedisCluster;
pub(crate) use sentinel::{SentinelSetup, MASTER_NAME, SENTINEL_PASSWORD};
pub(crate) use server::{free_port, Options, RedisServer};
pub(crate) use tls::TlsMaterial;
