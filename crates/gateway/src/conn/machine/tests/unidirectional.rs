//! A unidirectional connection (`uni_*` transports): the connect result is
//! a connect push, a failed connect is a disconnect, pings expect no pong,
//! and a moved expiry is told with a refresh push.

use crate::config::{
    ConnectCodeToUnidirectionalDisconnect, UniDisconnectTo, UniDisconnectTransform,
};

use super::*;

/// Connects a unidirectional client as `user` through every effect.
fn uni_connected(edit: impl FnOnce(&mut ClientConfig)) -> Harness {
    let mut h = Harness::unidirectional(edit);
    h.send(&[json!({"id": 1, "connect": {"token": "t"}})]);
    h.answer_next(
        |e| matches!(e, Effect::VerifyConnection { .. }),
        Outcome::Verified(Ok(principal(claims("u")))),
    );
    h.answer_next(|_| true, Outcome::Registered(true));
    h.answer_next(|_| true, Outcome::Admitted(Ok(())));
    h
}

#[test]
fn the_connect_result_is_a_connect_push_with_the_session_and_no_pong() {
    let h = uni_connected(|_| {});
    assert_eq!(h.sent.len(), 1, "{:?}", h.sent);
    let connect = &h.sent[0]["push"]["connect"];
    assert_eq!(connect["client"], "c1", "{:?}", h.sent);
    assert_eq!(connect["session"], "s1");
    assert_eq!(connect["ping"], 25);
    assert!(connect.get("pong").is_none(), "{connect}");
    assert!(h.sent[0].get("id").is_none(), "a push, not a reply");
    assert!(h.connect_failed.is_empty());
}

#[test]
fn pings_go_out_and_no_pong_is_awaited() {
    let mut h = uni_connected(|_| {});
    h.take_sent();
    h.advance(Duration::from_secs(25 * 4));
    assert!(h.closed.is_none(), "closed: {:?}", h.closed);
    assert!(
        h.sent.iter().filter(|r| **r == json!({})).count() >= 3,
        "{:?}",
        h.sent
    );
}

#[test]
fn a_failed_connect_is_a_disconnect_by_the_table() {
    let rows: Vec<(TokenError, u32, u16)> = vec![
        (TokenError::Expired, 109, 3005),
        (TokenError::Unavailable, 100, 3004),
        (invalid(), 3500, 3500),
    ];
    for (error, failed, close) in rows {
        let mut h = Harness::unidirectional(|_| {});
        h.send(&[json!({"id": 1, "connect": {"token": "t"}})]);
        let (id, _) = h.next_effect();
        h.answer(id, Outcome::Verified(Err(error.clone())));
        assert!(h.sent.is_empty(), "{error:?}: no error reply: {:?}", h.sent);
        assert_eq!(h.connect_failed, vec![failed], "{error:?}");
        assert_eq!(h.closed.as_ref().map(|d| d.code), Some(close), "{error:?}");
    }
}

#[test]
fn configured_transforms_pick_the_disconnect() {
    let mut h = Harness::unidirectional(|c| {
        c.connect_code_to_unidirectional_disconnect = ConnectCodeToUnidirectionalDisconnect {
            enabled: true,
            transforms: vec![UniDisconnectTransform {
                code: 109,
                to: UniDisconnectTo {
                    code: 4501,
                    reason: "token gone".into(),
                },
            }],
        };
    });
    h.send(&[json!({"id": 1, "connect": {"token": "t"}})]);
    let (id, _) = h.next_effect();
    h.answer(id, Outcome::Verified(Err(TokenError::Expired)));
    assert_eq!(h.connect_failed, vec![109]);
    let closed = h.closed.expect("closed");
    assert_eq!((closed.code, &*closed.reason), (4501, "token gone"));
}

#[test]
fn a_moved_expiry_is_told_with_a_refresh_push() {
    let mut h = uni_connected(|_| {});
    h.take_sent();
    let command = ControlCommand::Refresh {
        user: "u".into(),
        client: String::new(),
        expired: false,
        expire_at: Some(T0_UNIX + 600),
    };
    h.machine.handle_control(command, h.now);
    h.collect();
    assert_eq!(
        h.sent,
        vec![json!({"push": {"refresh": {"expires": true, "ttl": 600}}})]
    );
}
