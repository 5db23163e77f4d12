//! A client connection, from accept to close: the per-address admission
//! and the stream (`accept.rs`, with its abort switch in `abort.rs`), the
//! WebSocket upgrade (`upgrade.rs`), opening a connection on any transport
//! (`open.rs`), the protocol's rules as a machine without I/O (`machine.rs`,
//! with its state, rate limiter and timers), the actix actor that drives it
//! (`session.rs`), the calls to the application backend it runs for the
//! machine (`backend.rs`), and the WebSocket socket task (`socket.rs`).

pub(crate) mod abort;
pub(crate) mod accept;
pub(crate) mod backend;
pub(crate) mod machine;
pub(crate) mod open;
pub(crate) mod rate;
pub(crate) mod session;
pub(crate) mod socket;
pub(crate) mod state;
pub(crate) mod timer;
pub(crate) mod upgrade;

#[cfg(test)]
mod tests {
    /// The protocol's rules and everything they are made of.
    const PURE: [(&str, &str); 11] = [
        ("conn/machine.rs", include_str!("conn/machine.rs")),
        (
            "conn/machine/commands.rs",
            include_str!("conn/machine/commands.rs"),
        ),
        (
            "conn/machine/connect.rs",
            include_str!("conn/machine/connect.rs"),
        ),
        (
            "conn/machine/effect.rs",
            include_str!("conn/machine/effect.rs"),
        ),
        (
            "conn/machine/proxied.rs",
            include_str!("conn/machine/proxied.rs"),
        ),
        (
            "conn/machine/timers.rs",
            include_str!("conn/machine/timers.rs"),
        ),
        ("node/plan.rs", include_str!("node/plan.rs")),
        ("conn/rate.rs", include_str!("conn/rate.rs")),
        ("conn/state.rs", include_str!("conn/state.rs")),
        ("conn/timer.rs", include_str!("conn/timer.rs")),
        ("codes.rs", include_str!("codes.rs")),
    ];

    /// What the pure modules may import of this crate: each other, and the
    /// leaves (configuration, metrics counters).
    const ALLOWED: [&str; 13] = [
        "crate::node::plan",
        "crate::conn::timer",
        "super::super::state",
        "crate::conn::state",
        "super::{",
        "crate::codes",
        "crate::config",
        "crate::metrics",
        "super::plan",
        "super::proxied",
        "super::rate",
        "super::state",
        "super::timer",
    ];

    /// The code of a source file, its tests left out: comments and doc
    /// comments dropped.
    fn code(source: &str) -> impl Iterator<Item = (usize, &str)> {
        let end = source.find("#[cfg(test)]").unwrap_or(source.len());
        source[..end]
            .lines()
            .enumerate()
            .map(|(i, line)| (i + 1, line.split("//").next().unwrap_or("")))
    }

    #[test]
    fn the_connection_machine_does_no_io() {
        for (file, source) in PURE {
            for (n, line) in code(source) {
                for runtime in [
                    "actix",
                    "tokio",
                    "std::net",
                    "std::thread",
                    "SystemTime",
                    "Instant::now",
                ] {
                    assert!(!line.contains(runtime), "{file}:{n} uses {runtime}: {line}");
                }
                for path in ["crate::", "super::"] {
                    if let Some(at) = line.find(path) {
                        let used = &line[at..];
                        assert!(
                            ALLOWED.iter().any(|allowed| used.starts_with(allowed))
                                || used.starts_with("super::*"),
                            "{file}:{n} imports {used}: only pure modules and leaves may be used"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn the_check_catches_an_import() {
        let bad = "use actix::prelude::*;\nuse crate::node::Node;\n";
        let uses_actix = code(bad).any(|(_, l)| l.contains("actix"));
        let imports_node = code(bad).any(|(_, l)| {
            l.find("crate::")
                .is_some_and(|at| !ALLOWED.iter().any(|a| l[at..].starts_with(a)))
        });
        assert!(uses_actix && imports_node);
    }
}
