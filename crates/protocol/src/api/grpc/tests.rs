use prost::Message as _;

use super::*;

fn params_json(
    method: Method,
    request: &impl prost::Message,
) -> Result<serde_json::Value, ApiError> {
    let params = method
        .params(&request.encode_to_vec())
        .expect("a well-formed request")?;
    Ok(serde_json::from_str(params.get()).unwrap())
}

fn raw(json: &str) -> Box<RawValue> {
    RawValue::from_string(json.to_owned()).unwrap()
}

#[test]
fn routes_are_the_service_methods() {
    for method in Method::ALL {
        let path = format!("/{SERVICE}/{}", method.grpc_name());
        assert_eq!(
            Route::from_path(&path),
            Some(Route::Method(method)),
            "{path}"
        );
    }
    assert_eq!(
        Route::from_path("/centrifugal.centrifugo.api.CentrifugoApi/Batch"),
        Some(Route::Batch)
    );
    for path in [
        "/centrifugal.centrifugo.api.CentrifugoApi/Connections",
        "/centrifugal.centrifugo.api.CentrifugoApi/",
        "/centrifugal.centrifugo.api.CentrifugoApiX/Publish",
        "/other.Service/Publish",
        "centrifugal.centrifugo.api.CentrifugoApi/Publish",
        "",
    ] {
        assert_eq!(Route::from_path(path), None, "{path}");
    }
}

#[test]
fn publish_data_is_json_or_else_bytes() {
    let request = |data: &[u8]| wire::PublishRequest {
        channel: "chat:a".into(),
        data: data.to_vec(),
        ..Default::default()
    };
    // JSON passes as it is, byte for byte.
    let params = Method::Publish
        .params(&request(br#"{"a": [1, 2]}"#).encode_to_vec())
        .unwrap()
        .unwrap();
    assert!(
        params.get().contains(r#""data":{"a": [1, 2]}"#),
        "{}",
        params.get()
    );
    // Anything else becomes b64data.
    let json = params_json(Method::Publish, &request(b"\x00\xff")).unwrap();
    assert_eq!(json["b64data"], "AP8=");
    assert!(json["data"].is_null());
    // Nothing: neither, and the API answers "data required".
    let json = params_json(Method::Publish, &request(b"")).unwrap();
    assert!(json["data"].is_null());
    assert_eq!(json["b64data"], "");
}

#[test]
fn fields_the_api_cannot_take_are_api_errors() {
    let cases: Vec<(Method, Vec<u8>)> = vec![
        (
            Method::Subscribe,
            wire::SubscribeRequest {
                info: b"not json".to_vec(),
                ..Default::default()
            }
            .encode_to_vec(),
        ),
        (
            Method::Refresh,
            wire::RefreshRequest {
                expire_at: -1,
                ..Default::default()
            }
            .encode_to_vec(),
        ),
        (
            Method::RevokeToken,
            wire::RevokeTokenRequest {
                expire_at: -5,
                uid: "t".into(),
            }
            .encode_to_vec(),
        ),
        (
            Method::InvalidateUserTokens,
            wire::InvalidateUserTokensRequest {
                issued_before: -1,
                ..Default::default()
            }
            .encode_to_vec(),
        ),
        (
            Method::Disconnect,
            wire::DisconnectRequest {
                user: "u".into(),
                disconnect: Some(wire::Disconnect {
                    code: 70_000,
                    reason: String::new(),
                }),
                ..Default::default()
            }
            .encode_to_vec(),
        ),
    ];
    for (method, request) in cases {
        let error = method.params(&request).unwrap().unwrap_err();
        assert_eq!(
            error.code,
            ErrorCode::BadRequest.code(),
            "{method:?}: {error:?}"
        );
    }
}

#[test]
fn requests_become_the_http_api_params() {
    let json = params_json(
        Method::History,
        &wire::HistoryRequest {
            channel: "chat:a".into(),
            limit: 5,
            since: Some(wire::StreamPosition {
                offset: 3,
                epoch: "e".into(),
            }),
            reverse: true,
        },
    )
    .unwrap();
    assert_eq!(
        json,
        serde_json::json!({"channel": "chat:a", "limit": 5, "since": {"offset": 3, "epoch": "e"}, "reverse": true})
    );
    let json = params_json(
        Method::Subscribe,
        &wire::SubscribeRequest {
            channel: "c".into(),
            user: "u".into(),
            info: br#"{"role":"x"}"#.to_vec(),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(json["info"], serde_json::json!({"role": "x"}));
    assert!(json["data"].is_null());
    let json = params_json(
        Method::InvalidateUserTokens,
        &wire::InvalidateUserTokensRequest {
            expire_at: 10,
            user: "u".into(),
            issued_before: 7,
            channel: "c".into(),
        },
    )
    .unwrap();
    assert_eq!(
        json,
        serde_json::json!({"user": "u", "issued_before": 7, "expire_at": 10, "channel": "c"})
    );
}

#[test]
fn a_message_that_is_not_the_request_is_a_decode_error() {
    // Field 1 as a varint where every request has a string or a message.
    for method in [Method::Publish, Method::History, Method::Presence] {
        assert!(method.params(b"\x08\x01").is_err(), "{method:?}");
    }
    assert!(Method::Info.params(b"\xff").is_err());
    assert!(Batch::decode(b"\x0a\x05\x01").is_err());
}

#[test]
fn errors_go_in_the_response_error_field() {
    let error = ApiError::with_message(ErrorCode::BadRequest, "channel required");
    let bytes = Method::Publish.response(Err(&error), false);
    let response = wire::Response::<wire::PublishResult>::decode(&bytes[..]).unwrap();
    assert_eq!(
        response.error,
        Some(wire::Error {
            code: 107,
            message: "channel required".into()
        })
    );
    assert_eq!(response.result, None);
}

#[test]
fn json_results_become_protobuf_results() {
    let bytes = Method::Publish.response(Ok(&raw(r#"{"offset":4,"epoch":"ep"}"#)), false);
    let response = wire::Response::<wire::PublishResult>::decode(&bytes[..]).unwrap();
    assert_eq!(
        response.result,
        Some(wire::PublishResult {
            offset: 4,
            epoch: "ep".into()
        })
    );
    assert_eq!(response.error, None);

    // An empty result is present, not absent: the call succeeded.
    let bytes = Method::Unsubscribe.response(Ok(&raw("{}")), false);
    let response = wire::Response::<wire::Empty>::decode(&bytes[..]).unwrap();
    assert_eq!(response.result, Some(wire::Empty {}));

    let presence = r#"{"presence":{"c1":{"user":"u","client":"c1","conn_info":{"n":1}}}}"#;
    let bytes = Method::Presence.response(Ok(&raw(presence)), false);
    let result = wire::Response::<wire::PresenceResult>::decode(&bytes[..])
        .unwrap()
        .result
        .unwrap();
    assert_eq!(result.presence["c1"].conn_info, br#"{"n":1}"#);
    assert!(result.presence["c1"].chan_info.is_empty());

    let broadcast = r#"{"responses":[{"result":{"offset":1,"epoch":"e"}},{"error":{"code":102,"message":"unknown channel"}}]}"#;
    let bytes = Method::Broadcast.response(Ok(&raw(broadcast)), false);
    let result = wire::Response::<wire::BroadcastResult>::decode(&bytes[..])
        .unwrap()
        .result
        .unwrap();
    assert_eq!(result.responses[0].result.as_ref().unwrap().offset, 1);
    assert_eq!(result.responses[1].error.as_ref().unwrap().code, 102);

    let info = r#"{"nodes":[{"uid":"n","name":"a","version":"1","num_clients":5000000000,"num_users":1,"num_channels":2,"num_subs":3,"uptime":9}]}"#;
    let bytes = Method::Info.response(Ok(&raw(info)), false);
    let node = &wire::Response::<wire::InfoResult>::decode(&bytes[..])
        .unwrap()
        .result
        .unwrap()
        .nodes[0];
    assert_eq!(node.num_clients, u32::MAX, "saturated, not wrapped");
    assert_eq!((node.num_subs, node.uptime), (3, 9));
}

#[test]
fn history_data_is_json_text_or_a_binary_channel_bytes() {
    let history =
        r#"{"publications":[{"data":"AP8=","offset":1,"tags":{"k":"v"}}],"epoch":"e","offset":1}"#;
    let decode = |binary| {
        let bytes = Method::History.response(Ok(&raw(history)), binary);
        wire::Response::<wire::HistoryResult>::decode(&bytes[..])
            .unwrap()
            .result
            .unwrap()
    };
    let json = decode(false);
    assert_eq!(json.publications[0].data, br#""AP8=""#);
    assert_eq!(json.publications[0].tags["k"], "v");
    assert_eq!(decode(true).publications[0].data, [0x00, 0xff]);
}

#[test]
fn a_result_of_the_wrong_shape_is_an_internal_error() {
    let bytes = Method::PresenceStats.response(Ok(&raw(r#"{"num_clients":"many"}"#)), false);
    let response = wire::Response::<wire::PresenceStatsResult>::decode(&bytes[..]).unwrap();
    assert_eq!(response.error.unwrap().code, ErrorCode::Internal.code());
    assert_eq!(response.result, None);
}

#[test]
fn batch_commands_hold_exactly_one_method() {
    let empty = command(wire::Command::default()).unwrap_err();
    assert_eq!(empty.code, ErrorCode::MethodNotFound.code());
    let two = command(wire::Command {
        info: Some(wire::Empty {}),
        channels: Some(wire::ChannelsRequest::default()),
        ..Default::default()
    })
    .unwrap_err();
    assert_eq!(two.code, ErrorCode::BadRequest.code());
    let (method, params) = command(wire::Command {
        presence_stats: Some(wire::ChannelRequest {
            channel: "chat:x".into(),
        }),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(method, Method::PresenceStats);
    assert_eq!(params.unwrap().get(), r#"{"channel":"chat:x"}"#);
    // A method herald does not serve (Centrifugo's `connections`, field 17) is skipped on decode.
    let connections = [0x8a, 0x01, 0x00];
    let decoded = wire::Command::decode(&connections[..]).unwrap();
    assert_eq!(
        command(decoded).unwrap_err().code,
        ErrorCode::MethodNotFound.code()
    );
}

#[test]
fn batch_replies_carry_the_method_field() {
    let reply = Method::PresenceStats.reply(Ok(&raw(r#"{"num_clients":2,"num_users":1}"#)), false);
    assert_eq!(
        reply.presence_stats,
        Some(wire::PresenceStatsResult {
            num_clients: 2,
            num_users: 1
        })
    );
    assert_eq!(reply.error, None);
    let bytes = batch_response(vec![
        reply.clone(),
        Method::Info.reply(Err(&ErrorCode::Internal.into()), false),
    ]);
    let response = wire::BatchResponse::decode(&bytes[..]).unwrap();
    assert_eq!(response.replies.len(), 2);
    assert_eq!(response.replies[0], reply);
    assert_eq!(response.replies[1].error.as_ref().unwrap().code, 100);
}
