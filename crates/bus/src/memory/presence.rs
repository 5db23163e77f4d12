//! Who is in one channel: client id -> info, each entry with its own expiry.
//! Plain state: time is passed in, nothing locks.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use herald_protocol::ClientInfo;
use tokio::time::Instant;

use crate::PresenceStats;

#[derive(Default)]
pub(super) struct Presence {
    clients: HashMap<String, Member>,
}

struct Member {
    info: ClientInfo,
    expires_at: Instant,
}

impl Presence {
    /// Adds or refreshes the entry of `info.client`.
    pub(super) fn add(&mut self, now: Instant, info: ClientInfo, ttl: Duration) {
        let member = Member {
            info,
            expires_at: now + ttl,
        };
        self.clients.insert(member.info.client.clone(), member);
    }

    pub(super) fn remove(&mut self, client: &str) {
        self.clients.remove(client);
    }

    pub(super) fn members(&mut self, now: Instant) -> BTreeMap<String, ClientInfo> {
        self.prune(now);
        self.clients
            .iter()
            .map(|(client, member)| (client.clone(), member.info.clone()))
            .collect()
    }

    /// Anonymous clients (empty user) count as one user, as in Centrifugo.
    pub(super) fn stats(&mut self, now: Instant) -> PresenceStats {
        self.prune(now);
        let users: HashSet<&str> = self
            .clients
            .values()
            .map(|member| member.info.user.as_str())
            .collect();
        PresenceStats {
            num_clients: saturating_u32(self.clients.len()),
            num_users: saturating_u32(users.len()),
        }
    }

    pub(super) fn prune(&mut self, now: Instant) {
        self.clients.retain(|_, member| member.expires_at > now);
    }

    pub(super) fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }
}

fn saturating_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}
