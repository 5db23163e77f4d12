//! A connect without a token asks the backend (`client.proxy.connect`): its
//! user, expiry, info, data and channels make the connection; its error
//! reaches the client; its disconnect closes; a failure is error 100 (3004
//! for a unidirectional client).

use herald_proxy::{Answer, ConnectGrant, Failure};

use super::*;

pub(super) fn json_payload(text: &str) -> herald_proxy::Payload {
    herald_proxy::Payload::Json(RawJson::from_str(text).unwrap())
}

/// Sends a tokenless connect and answers the proxy effect with `answer`.
fn connect_through(h: &mut Harness, answer: Result<Answer<ConnectGrant>, Failure>) {
    h.send(&[json!({"id": 1, "connect": {"name": "js", "data": {"hello": 1}}})]);
    h.answer_next(
        |e| matches!(e, Effect::ProxyConnect { name, data: Some(_), .. } if name == "js"),
        Outcome::ConnectProxied(answer),
    );
}

#[test]
fn the_backend_names_the_user_and_its_channels() {
    let mut h = Harness::with_connect_proxy(false);
    let grant = ConnectGrant {
        user: "alice".into(),
        expire_at: Some(T0_UNIX + 600),
        info: Some(json_payload(r#"{"n":1}"#)),
        data: Some(json_payload(r#"{"hi":"alice"}"#)),
        channels: vec!["news".into()],
        ..Default::default()
    };
    connect_through(&mut h, Ok(Answer::Result(grant)));
    h.answer_next(
        |e| matches!(e, Effect::Register { user } if user == "alice"),
        Outcome::Registered(true),
    );
    // No token: nothing to check for revocation.
    h.answer_next(
        |e| {
            matches!(
                e,
                Effect::Admit {
                    revocation: None,
                    ..
                }
            )
        },
        Outcome::Admitted(Ok(())),
    );
    h.answer_next(
        |e| matches!(e, Effect::Subscribe { plan } if plan.channel == "news"),
        Outcome::Subscribed(Ok((SubscribeResult::default(), None))),
    );
    let connect = &h.sent[0]["connect"];
    assert_eq!(connect["data"], json!({"hi": "alice"}), "{:?}", h.sent);
    assert_eq!(connect["expires"], true);
    assert_eq!(connect["ttl"], 600);
    assert!(connect["subs"]["news"].is_object(), "{connect}");
}

#[test]
fn refusals_and_failures_by_the_proxy_rules() {
    let mut h = Harness::with_connect_proxy(false);
    let refused = Answer::Error {
        code: 1001,
        message: "log in first".into(),
        temporary: false,
    };
    connect_through(&mut h, Ok(refused));
    assert_eq!(
        h.sent[0],
        json!({"id": 1, "error": {"code": 1001, "message": "log in first"}})
    );

    let mut h = Harness::with_connect_proxy(false);
    connect_through(&mut h, Err(Failure::Status(502)));
    assert_eq!(h.error_code(0), Some(100));
    assert!(h.closed.is_none());

    let mut h = Harness::with_connect_proxy(false);
    let bye = Answer::Disconnect {
        code: 4501,
        reason: "no session".into(),
    };
    connect_through(&mut h, Ok(bye));
    assert_eq!(h.closed.map(|d| d.code), Some(4501));

    // A unidirectional client cannot retry a connect: a failure is 3004.
    let mut h = Harness::with_connect_proxy(true);
    connect_through(&mut h, Err(Failure::Transport("timed out".into())));
    assert_eq!(h.connect_failed, vec![100]);
    assert_eq!(h.closed.map(|d| d.code), Some(3004));
}
