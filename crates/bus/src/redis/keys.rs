//! Names of Redis keys and pub/sub channels, and which shard a channel lives on.
//!
//! Standalone and sharded mode: `P.client.ch`, `P.stream.ch`, ... (P = prefix).
//! Cluster mode wraps the channel in a hash tag so every key and the pub/sub
//! channel of one herald channel share a slot (one Lua script can touch them
//! all, and SPUBLISH goes to the shard that holds the stream): `P.client.{ch}`.
//! A channel name containing `{` or `}` would break the tag, so such names are
//! tagged with their hash instead: `P.client.{#<16 hex>}ch`.

/// FNV-1a, 64 bit.
pub(crate) fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// Jump consistent hash (Lamping & Veach): a bucket in `0..buckets` that
/// moves for only 1/n of the keys when a bucket is added.
pub(crate) fn jump_hash(mut key: u64, buckets: usize) -> usize {
    let buckets = buckets.max(1) as i64;
    let (mut b, mut j) = (-1i64, 0i64);
    while j < buckets {
        b = j;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        j = ((b + 1) as f64 * ((1u64 << 31) as f64 / ((key >> 33) + 1) as f64)) as i64;
    }
    b as usize
}

/// The shard (index into the configured addresses) that owns `channel`.
pub(crate) fn shard_of(channel: &str, shards: usize) -> usize {
    jump_hash(fnv1a64(channel.as_bytes()), shards)
}

#[derive(Debug, Clone)]
pub(crate) struct Keys {
    prefix: String,
    cluster: bool,
}

impl Keys {
    pub(crate) fn new(prefix: &str, cluster: bool) -> Self {
        Self {
            prefix: prefix.to_owned(),
            cluster,
        }
    }

    fn name(&self, kind: &str, channel: &str) -> String {
        let mut out = String::with_capacity(self.prefix.len() + kind.len() + channel.len() + 24);
        out.push_str(&self.prefix);
        out.push('.');
        out.push_str(kind);
        out.push('.');
        if !self.cluster {
            out.push_str(channel);
        } else if channel.contains(['{', '}']) {
            out.push_str(&format!("{{#{:016x}}}", fnv1a64(channel.as_bytes())));
            out.push_str(channel);
        } else {
            out.push('{');
            out.push_str(channel);
            out.push('}');
        }
        out
    }

    /// The pub/sub channel carrying a channel's publications, joins and leaves.
    pub(crate) fn client_channel(&self, channel: &str) -> String {
        self.name("client", channel)
    }

    /// The herald channel a pub/sub channel name carries, if it is one of ours.
    pub(crate) fn channel_of<'a>(&self, pubsub_channel: &'a str) -> Option<&'a str> {
        let rest = pubsub_channel
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix(".client.")?;
        if !self.cluster {
            return Some(rest);
        }
        if let Some(hashed) = rest.strip_prefix("{#") {
            let end = hashed.find('}')?;
            return Some(&hashed[end + 1..]);
        }
        rest.strip_prefix('{')?.strip_suffix('}')
    }

    pub(crate) fn stream(&self, channel: &str) -> String {
        self.name("stream", channel)
    }

    pub(crate) fn stream_meta(&self, channel: &str) -> String {
        self.name("stream.meta", channel)
    }

    /// Remembers the result of an idempotent publish.
    pub(crate) fn result(&self, channel: &str, idempotency_key: &str) -> String {
        let mut key = self.name("result", channel);
        key.push('.');
        key.push_str(idempotency_key);
        key
    }

    /// Hash: client id -> ClientInfo JSON.
    pub(crate) fn presence_data(&self, channel: &str) -> String {
        self.name("presence.data", channel)
    }

    /// Sorted set: client id scored by its expiry (unix seconds).
    pub(crate) fn presence_expire(&self, channel: &str) -> String {
        self.name("presence.expire", channel)
    }

    /// A revoked token id (value unused; expires with the revocation).
    pub(crate) fn revoked_token(&self, token_id: &str) -> String {
        format!("{}.revoked.token.{token_id}", self.prefix)
    }

    /// A user's tokens issued before the stored unix time are refused.
    pub(crate) fn revoked_user(&self, user: &str) -> String {
        format!("{}.revoked.user.{user}", self.prefix)
    }

    /// Node heartbeats and cluster-wide commands.
    pub(crate) fn control_channel(&self) -> String {
        format!("{}.control", self.prefix)
    }

    /// A pub/sub channel every pub/sub connection holds from its start, so a
    /// connection with no client channel is still checked and resubscribed.
    pub(crate) fn link_channel(&self, node: &str, link: usize) -> String {
        format!("{}.link.{node}.{link}", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a64_matches_reference_vectors() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn jump_hash_is_stable_and_moves_few_keys() {
        let mut moved = 0;
        for k in 0..10_000u64 {
            let key = fnv1a64(&k.to_le_bytes());
            assert_eq!(jump_hash(key, 1), 0);
            let (before, after) = (jump_hash(key, 4), jump_hash(key, 5));
            assert!(before < 4 && after < 5);
            if before != after {
                // A key only ever moves to the new bucket.
                assert_eq!(after, 4);
                moved += 1;
            }
        }
        // About 1/5 of the keys move.
        assert!((1500..2500).contains(&moved), "{moved}");
    }

    #[test]
    fn names_round_trip_in_both_modes() {
        let plain = Keys::new("h", false);
        assert_eq!(plain.client_channel("chat:1"), "h.client.chat:1");
        assert_eq!(plain.channel_of("h.client.chat:1"), Some("chat:1"));
        assert_eq!(plain.channel_of("h.control"), None);
        assert_eq!(plain.channel_of("other.client.x"), None);

        let cluster = Keys::new("h", true);
        assert_eq!(cluster.client_channel("chat:1"), "h.client.{chat:1}");
        assert_eq!(cluster.stream_meta("chat:1"), "h.stream.meta.{chat:1}");
        assert_eq!(cluster.result("chat:1", "k"), "h.result.{chat:1}.k");
        assert_eq!(cluster.channel_of("h.client.{chat:1}"), Some("chat:1"));
        for odd in ["a{b}", "}x", "{", "x}y{"] {
            let name = cluster.client_channel(odd);
            assert!(name.starts_with("h.client.{#"), "{name}");
            assert_eq!(cluster.channel_of(&name), Some(odd), "{name}");
        }
    }
}
