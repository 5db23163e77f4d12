//! `rpc` with an RPC proxy: the backend's result, error and disconnect
//! reach the client as the proxy protocol says; a failure is error 100; a
//! method of a namespace without the proxy is 108.

use herald_proxy::{Answer, Failure, RpcConfig, RpcNamespace, RpcNamespaceOptions};

use super::*;

fn proxied() -> Harness {
    let mut h = Harness::with_rpc(RpcConfig {
        without_namespace: RpcNamespaceOptions {
            proxy_enabled: true,
            proxy_name: String::new(),
        },
        namespaces: vec![RpcNamespace {
            name: "off".into(),
            proxy_enabled: false,
            proxy_name: String::new(),
        }],
        ..Default::default()
    });
    h.connect_as(claims("u"));
    h
}

/// Sends `rpc` `method` and answers its effect with `answer`.
fn call(h: &mut Harness, id: u64, method: &str, answer: Result<Answer, Failure>) {
    h.send(&[json!({"id": id, "rpc": {"method": method, "data": {"q": 1}}})]);
    h.answer_next(
        |e| matches!(e, Effect::Rpc { method: m, data: Some(_), proxy } if m == method && proxy.is_empty()),
        Outcome::Rpc(answer),
    );
}

#[test]
fn the_backend_answers_results_errors_and_disconnects() {
    let mut h = proxied();
    let data = RawJson::from_str(r#"{"a":1}"#).unwrap();
    let reply = herald_proxy::RpcReply {
        data: Some(herald_proxy::Payload::Json(data)),
    };
    call(&mut h, 2, "echo", Ok(Answer::Result(reply)));
    assert_eq!(h.sent[0], json!({"id": 2, "rpc": {"data": {"a": 1}}}));
    let refused = Answer::Error {
        code: 1000,
        message: "no".into(),
        temporary: false,
    };
    call(&mut h, 3, "echo", Ok(refused));
    assert_eq!(
        h.sent[1],
        json!({"id": 3, "error": {"code": 1000, "message": "no"}})
    );
    call(&mut h, 4, "echo", Err(Failure::Status(500)));
    assert_eq!(h.error_code(2), Some(100));
    assert!(h.closed.is_none());
    call(
        &mut h,
        5,
        "echo",
        Ok(Answer::Disconnect {
            code: 4501,
            reason: "bye".into(),
        }),
    );
    let closed = h.closed.expect("closed");
    assert_eq!((closed.code, &*closed.reason), (4501, "bye"));
}

#[test]
fn a_namespace_without_the_proxy_is_108() {
    let mut h = proxied();
    h.send(&[json!({"id": 2, "rpc": {"method": "off:x"}})]);
    assert_eq!(h.error_code(0), Some(108));
    assert!(h.waiting.is_empty());
}
