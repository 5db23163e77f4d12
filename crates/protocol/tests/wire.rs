//! Wire tests of the JSON protocol (docs/protocol.md): round-trip
//! properties over every type, the exact encodings clients depend on, and
//! what the decoder does with odd or hostile input.

use std::collections::BTreeMap;
use std::fmt::Debug;

use herald_protocol::{
    decode_frame, encode_frame, ClientInfo, Command, CommandResult, ConnectRequest, ConnectResult,
    ErrorCode, ErrorReply, FilterNode, FrameError, FrameWriter, HistoryRequest, HistoryResult,
    JoinPush, LeavePush, MessagePush, Method, PresenceRequest, PresenceResult,
    PresenceStatsRequest, PresenceStatsResult, Publication, PublishRequest, Push, PushBody,
    RawJson, RefreshRequest, RefreshResult, Reply, RpcRequest, RpcResult, SendRequest,
    StreamPosition, SubRefreshRequest, SubRefreshResult, SubscribePush, SubscribeRequest,
    SubscribeResult, UnsubscribeCode, UnsubscribePush, UnsubscribeRequest,
};
use proptest::prelude::*;
use serde_json::Value;

#[path = "wire/protobuf.rs"]
mod protobuf;

// ---------------------------------------------------------------------------
// Round-trip properties
// ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn command_round_trips((cmd, payload_nulls) in either_payloads(command)) {
        let line = cmd.encode();
        check_line(&line, payload_nulls)?;
        let decoded = Command::decode(&line)?;
        prop_assert_eq!(&decoded, &cmd);
        // Decoding then encoding again gives the same bytes: nothing drifts
        // when a line is relayed.
        prop_assert_eq!(decoded.encode(), line);
    }

    #[test]
    fn reply_round_trips((reply, payload_nulls) in either_payloads(reply)) {
        let line = reply.encode();
        check_line(&line, payload_nulls)?;
        let decoded = Reply::decode(&line)?;
        prop_assert_eq!(&decoded, &reply);
        prop_assert_eq!(decoded.encode(), line);
    }

    #[test]
    fn reply_frame_splits_back_into_its_replies(
        (replies, payload_nulls) in either_payloads(|p| prop::collection::vec(reply(p), 0..6).boxed()),
    ) {
        let frame = encode_frame(&replies);
        if replies.is_empty() {
            prop_assert!(frame.is_empty());
            return Ok(());
        }
        // What the SDKs do: split on `\n`, parse each line.
        let lines: Vec<&[u8]> = frame.split(|b| *b == b'\n').collect();
        prop_assert_eq!(lines.len(), replies.len());
        for (line, reply) in lines.iter().zip(&replies) {
            check_line(line, payload_nulls)?;
            prop_assert_eq!(&Reply::decode(line)?, reply);
        }
    }

    #[test]
    fn command_frame_decodes_to_its_commands(
        (cmds, payload_nulls) in either_payloads(|p| prop::collection::vec(command(p), 1..6).boxed()),
        trailing_separator in any::<bool>(),
    ) {
        let mut frame = cmds.iter().map(Command::encode).collect::<Vec<_>>().join(&b'\n');
        for line in frame.split(|b| *b == b'\n') {
            check_line(line, payload_nulls)?;
        }
        if trailing_separator {
            frame.push(b'\n');
        }
        prop_assert_eq!(decode_frame(&frame), Ok(cmds));
    }

    #[test]
    fn push_shortcuts_encode_like_reply_push(
        (channel, publication, info) in (text(), publication(&payload(true)), client_info(&payload(true))),
    ) {
        let via_reply = |body| Reply::Push(Push { channel: channel.clone(), body }).encode();
        prop_assert_eq!(
            Push::encode_publication(&channel, &publication),
            via_reply(PushBody::Publication(publication.clone()))
        );
        prop_assert_eq!(
            Push::encode_join(&channel, &info),
            via_reply(PushBody::Join(JoinPush { info: info.clone() }))
        );
        prop_assert_eq!(
            Push::encode_leave(&channel, &info),
            via_reply(PushBody::Leave(LeavePush { info: info.clone() }))
        );
    }

    #[test]
    fn frame_writer_mixes_pre_encoded_pushes_and_replies(
        (first, publication, last) in (reply(&payload(true)), publication(&payload(true)), reply(&payload(true))),
    ) {
        let mut writer = FrameWriter::default();
        prop_assert!(writer.is_empty());
        writer.push(&first);
        writer.push_encoded(&Push::encode_publication("ch", &publication));
        writer.push(&last);
        let expected = [
            first,
            Reply::Push(Push { channel: "ch".into(), body: PushBody::Publication(publication) }),
            last,
        ];
        prop_assert_eq!(writer.finish(), encode_frame(&expected));
    }

    /// Pretty-printed payload text (what a backend or config file hands us)
    /// loses its `\n` bytes and nothing else, and then is stable.
    #[test]
    fn pretty_payload_loses_only_newlines(value in json(true)) {
        let pretty = serde_json::to_string_pretty(&value)?;
        let raw = RawJson::from_str(&pretty)?;
        prop_assert_eq!(raw.get(), pretty.replace('\n', ""));
        prop_assert_eq!(
            serde_json::from_str::<Value>(raw.get())?,
            serde_json::from_str::<Value>(&pretty)?
        );

        let cmd = Command {
            id: 1,
            method: Method::Publish(PublishRequest { channel: "ch".into(), data: Some(raw.clone()) }),
        };
        let once = Command::decode(&cmd.encode())?;
        prop_assert_eq!(&once, &cmd);
        prop_assert_eq!(Command::decode(&once.encode())?, once);

        // A client that sends the pretty text as is, inside one line.
        let line = format!(r#"{{"id":1,"publish":{{"channel":"ch","data":{pretty}}}}}"#);
        prop_assert_eq!(Command::decode(line.as_bytes())?, cmd);

        let reply = Reply::Push(Push {
            channel: "ch".into(),
            body: PushBody::Message(MessagePush { data: raw }),
        });
        let once = Reply::decode(&reply.encode())?;
        prop_assert_eq!(&once, &reply);
        prop_assert_eq!(Reply::decode(&once.encode())?, once);
    }
}

// ---------------------------------------------------------------------------
// Golden encodings
// ---------------------------------------------------------------------------

#[test]
fn replies_encode_exactly() {
    let anonymous = ClientInfo::default();
    let named = ClientInfo {
        user: "42".into(),
        client: "9f".into(),
        conn_info: Some(raw(r#"{"name":"A"}"#)),
        chan_info: None,
    };
    let publication = Publication {
        data: raw(r#"{"x":1}"#),
        info: None,
        offset: 12,
        tags: BTreeMap::new(),
        delta: false,
    };
    let result = |id, result| Reply::Result { id, result };
    let push = |body| {
        Reply::Push(Push {
            channel: "ch".into(),
            body,
        })
    };

    let cases: Vec<(Reply, &str)> = vec![
        (Reply::Ping, r#"{}"#),
        (
            result(3, CommandResult::Publish),
            r#"{"id":3,"publish":{}}"#,
        ),
        (
            result(4, CommandResult::Unsubscribe),
            r#"{"id":4,"unsubscribe":{}}"#,
        ),
        (result(8, CommandResult::Ping), r#"{"id":8,"ping":{}}"#),
        (
            result(2, CommandResult::Subscribe(SubscribeResult::default())),
            r#"{"id":2,"subscribe":{}}"#,
        ),
        (
            result(
                2,
                CommandResult::Subscribe(SubscribeResult {
                    recoverable: true,
                    epoch: "e".into(),
                    publications: vec![publication.clone()],
                    recovered: true,
                    offset: 11,
                    positioned: true,
                    was_recovering: true,
                    ..Default::default()
                }),
            ),
            r#"{"id":2,"subscribe":{"recoverable":true,"epoch":"e","publications":[{"data":{"x":1},"offset":12}],"recovered":true,"offset":11,"positioned":true,"was_recovering":true}}"#,
        ),
        (
            result(1, CommandResult::Connect(ConnectResult::default())),
            r#"{"id":1,"connect":{}}"#,
        ),
        (
            result(
                1,
                CommandResult::Connect(ConnectResult {
                    client: "c".into(),
                    version: "0.1.0".into(),
                    ping: 25,
                    pong: true,
                    session: String::new(),
                    node: String::new(),
                    ..Default::default()
                }),
            ),
            r#"{"id":1,"connect":{"client":"c","version":"0.1.0","ping":25,"pong":true}}"#,
        ),
        (
            result(
                1,
                CommandResult::Connect(ConnectResult {
                    client: "c".into(),
                    time: 1_700_000_000_123,
                    ..Default::default()
                }),
            ),
            r#"{"id":1,"connect":{"client":"c","time":1700000000123}}"#,
        ),
        (
            result(5, CommandResult::Presence(PresenceResult::default())),
            r#"{"id":5,"presence":{"presence":{}}}"#,
        ),
        (
            result(
                5,
                CommandResult::Presence(PresenceResult {
                    presence: BTreeMap::from([("c1".into(), anonymous.clone())]),
                }),
            ),
            r#"{"id":5,"presence":{"presence":{"c1":{"user":"","client":""}}}}"#,
        ),
        (
            result(
                6,
                CommandResult::PresenceStats(PresenceStatsResult::default()),
            ),
            r#"{"id":6,"presence_stats":{"num_clients":0,"num_users":0}}"#,
        ),
        (
            result(7, CommandResult::History(HistoryResult::default())),
            r#"{"id":7,"history":{"publications":[],"epoch":"","offset":0}}"#,
        ),
        (
            result(
                7,
                CommandResult::History(HistoryResult {
                    publications: vec![publication.clone()],
                    epoch: "abc".into(),
                    offset: 12,
                }),
            ),
            r#"{"id":7,"history":{"publications":[{"data":{"x":1},"offset":12}],"epoch":"abc","offset":12}}"#,
        ),
        (
            result(9, CommandResult::Rpc(RpcResult::default())),
            r#"{"id":9,"rpc":{}}"#,
        ),
        (
            result(
                9,
                CommandResult::Rpc(RpcResult {
                    data: Some(raw(r#"["r"]"#)),
                }),
            ),
            r#"{"id":9,"rpc":{"data":["r"]}}"#,
        ),
        (
            result(
                10,
                CommandResult::Refresh(RefreshResult {
                    expires: true,
                    ttl: 60,
                    ..Default::default()
                }),
            ),
            r#"{"id":10,"refresh":{"expires":true,"ttl":60}}"#,
        ),
        (
            result(
                11,
                CommandResult::SubRefresh(SubRefreshResult {
                    expires: true,
                    ttl: 60,
                }),
            ),
            r#"{"id":11,"sub_refresh":{"expires":true,"ttl":60}}"#,
        ),
        (
            Reply::Error {
                id: 1,
                error: ErrorCode::Internal.into(),
            },
            r#"{"id":1,"error":{"code":100,"message":"internal server error","temporary":true}}"#,
        ),
        (
            Reply::Error {
                id: 2,
                error: ErrorCode::UnknownChannel.into(),
            },
            r#"{"id":2,"error":{"code":102,"message":"unknown channel"}}"#,
        ),
        (
            Reply::Error {
                id: 3,
                error: ErrorReply {
                    code: 400,
                    message: String::new(),
                    temporary: false,
                },
            },
            r#"{"id":3,"error":{"code":400,"message":""}}"#,
        ),
        (
            push(PushBody::Publication(publication.clone())),
            r#"{"push":{"channel":"ch","pub":{"data":{"x":1},"offset":12}}}"#,
        ),
        (
            push(PushBody::Publication(Publication {
                data: raw("1"),
                info: Some(anonymous.clone()),
                offset: 0,
                tags: BTreeMap::from([("k".into(), "v".into())]),
                delta: true,
            })),
            r#"{"push":{"channel":"ch","pub":{"data":1,"info":{"user":"","client":""},"tags":{"k":"v"},"delta":true}}}"#,
        ),
        (
            Reply::Push(Push {
                channel: "chat:1".into(),
                body: PushBody::Join(JoinPush {
                    info: named.clone(),
                }),
            }),
            r#"{"push":{"channel":"chat:1","join":{"info":{"user":"42","client":"9f","conn_info":{"name":"A"}}}}}"#,
        ),
        (
            push(PushBody::Join(JoinPush {
                info: anonymous.clone(),
            })),
            r#"{"push":{"channel":"ch","join":{"info":{"user":"","client":""}}}}"#,
        ),
        (
            push(PushBody::Leave(LeavePush {
                info: named.clone(),
            })),
            r#"{"push":{"channel":"ch","leave":{"info":{"user":"42","client":"9f","conn_info":{"name":"A"}}}}}"#,
        ),
        (
            push(PushBody::Unsubscribe(UnsubscribePush {
                code: UnsubscribeCode::InsufficientState.code(),
                reason: UnsubscribeCode::InsufficientState.reason().into(),
            })),
            r#"{"push":{"channel":"ch","unsubscribe":{"code":2500,"reason":"insufficient state"}}}"#,
        ),
        (
            push(PushBody::Subscribe(SubscribePush {
                recoverable: true,
                epoch: "e".into(),
                offset: 5,
                positioned: true,
                data: None,
            })),
            r#"{"push":{"channel":"ch","subscribe":{"recoverable":true,"epoch":"e","offset":5,"positioned":true}}}"#,
        ),
        (
            push(PushBody::Message(MessagePush {
                data: raw(r#""hi""#),
            })),
            r#"{"push":{"channel":"ch","message":{"data":"hi"}}}"#,
        ),
        // A payload that is itself JSON null is the only null on the wire.
        (
            push(PushBody::Publication(Publication {
                data: raw("null"),
                info: None,
                offset: 0,
                tags: BTreeMap::new(),
                delta: false,
            })),
            r#"{"push":{"channel":"ch","pub":{"data":null}}}"#,
        ),
        (
            result(
                9,
                CommandResult::Rpc(RpcResult {
                    data: Some(raw("null")),
                }),
            ),
            r#"{"id":9,"rpc":{"data":null}}"#,
        ),
    ];

    for (reply, expected) in cases {
        let line = reply.encode();
        assert_eq!(std::str::from_utf8(&line).unwrap(), expected);
        assert_eq!(
            Reply::decode(expected.as_bytes()).unwrap(),
            reply,
            "{expected}"
        );
    }
}

#[test]
fn commands_encode_exactly() {
    let cases: Vec<(Command, &str)> = vec![
        (
            Command {
                id: 0,
                method: Method::Pong,
            },
            r#"{}"#,
        ),
        (
            Command {
                id: 0,
                method: Method::Send(SendRequest {
                    data: Some(raw(r#"{"a":1}"#)),
                }),
            },
            r#"{"send":{"data":{"a":1}}}"#,
        ),
        (
            Command {
                id: 1,
                method: Method::Connect(ConnectRequest {
                    token: "t".into(),
                    ..Default::default()
                }),
            },
            r#"{"id":1,"connect":{"token":"t"}}"#,
        ),
        (
            Command {
                id: 2,
                method: Method::Subscribe(SubscribeRequest {
                    channel: "ch".into(),
                    recover: true,
                    epoch: "e".into(),
                    offset: 4,
                    flag: 3,
                    ..Default::default()
                }),
            },
            r#"{"id":2,"subscribe":{"channel":"ch","recover":true,"epoch":"e","offset":4,"flag":3}}"#,
        ),
        (
            Command {
                id: 3,
                method: Method::History(HistoryRequest {
                    channel: "ch".into(),
                    limit: -1,
                    since: Some(StreamPosition {
                        offset: 0,
                        epoch: "e".into(),
                    }),
                    reverse: false,
                }),
            },
            r#"{"id":3,"history":{"channel":"ch","limit":-1,"since":{"epoch":"e"}}}"#,
        ),
        (
            Command {
                id: 4,
                method: Method::Ping,
            },
            r#"{"id":4,"ping":{}}"#,
        ),
    ];
    for (cmd, expected) in cases {
        assert_eq!(std::str::from_utf8(&cmd.encode()).unwrap(), expected);
        assert_eq!(
            Command::decode(expected.as_bytes()).unwrap(),
            cmd,
            "{expected}"
        );
    }
}

#[test]
fn push_shortcuts_encode_exactly() {
    let publication = Publication {
        data: raw(r#"{"x":1}"#),
        info: None,
        offset: 12,
        tags: BTreeMap::new(),
        delta: false,
    };
    let info = ClientInfo::default();
    let cases = [
        (
            Push::encode_publication("ch", &publication),
            r#"{"push":{"channel":"ch","pub":{"data":{"x":1},"offset":12}}}"#,
        ),
        (
            Push::encode_join("ch", &info),
            r#"{"push":{"channel":"ch","join":{"info":{"user":"","client":""}}}}"#,
        ),
        (
            Push::encode_leave("ch", &info),
            r#"{"push":{"channel":"ch","leave":{"info":{"user":"","client":""}}}}"#,
        ),
    ];
    for (line, expected) in cases {
        assert_eq!(std::str::from_utf8(&line).unwrap(), expected);
    }
}

#[test]
fn encode_frame_joins_with_single_newlines() {
    let frame = encode_frame(&[
        Reply::Result {
            id: 1,
            result: CommandResult::Publish,
        },
        Reply::Ping,
        Reply::Error {
            id: 2,
            error: ErrorCode::BadRequest.into(),
        },
    ]);
    assert_eq!(
        std::str::from_utf8(&frame).unwrap(),
        "{\"id\":1,\"publish\":{}}\n{}\n{\"id\":2,\"error\":{\"code\":107,\"message\":\"bad request\"}}"
    );
}

/// The null check used by the properties must be able to fail.
#[test]
fn null_check_sees_protocol_nulls_and_spares_payloads() {
    let strict = |s: &str| nulls(&serde_json::from_str(s).unwrap(), false);
    let lenient = |s: &str| nulls(&serde_json::from_str(s).unwrap(), true);
    assert_eq!(strict(r#"{"id":1,"rpc":{"data":null}}"#), 1);
    assert_eq!(lenient(r#"{"id":1,"rpc":{"data":[null,{"a":null}]}}"#), 0);
    assert_eq!(lenient(r#"{"id":1,"history":{"publications":null}}"#), 1);
    assert_eq!(
        lenient(r#"{"push":{"channel":"ch","join":{"info":{"user":null}}}}"#),
        1
    );
    // The text "null" inside a string is not a null.
    assert_eq!(
        strict(r#"{"push":{"channel":"null","message":{"data":"null"}}}"#),
        0
    );
}

// ---------------------------------------------------------------------------
// Decoder edge cases
// ---------------------------------------------------------------------------

#[test]
fn commands_decode_as_centrifugo_classifies_them() {
    let cmd = |id, method| Command { id, method };
    let subscribe = |channel: &str| {
        Method::Subscribe(SubscribeRequest {
            channel: channel.into(),
            ..Default::default()
        })
    };
    let cases: Vec<(&str, &str, Command)> = vec![
        ("empty command is a pong", r#"{}"#, cmd(0, Method::Pong)),
        (
            "explicit id 0 is a pong",
            r#"{"id":0}"#,
            cmd(0, Method::Pong),
        ),
        (
            "id-less send",
            r#"{"send":{"data":{"a":1}}}"#,
            cmd(
                0,
                Method::Send(SendRequest {
                    data: Some(raw(r#"{"a":1}"#)),
                }),
            ),
        ),
        (
            "id 0 send",
            r#"{"id":0,"send":{}}"#,
            cmd(0, Method::Send(SendRequest::default())),
        ),
        (
            "id-less publish is still a pong",
            r#"{"publish":{"channel":"ch","data":1}}"#,
            cmd(0, Method::Pong),
        ),
        (
            "id-less connect is a pong",
            r#"{"connect":{"token":"t"}}"#,
            cmd(0, Method::Pong),
        ),
        (
            "id-less send wins over other methods",
            r#"{"connect":{},"send":{}}"#,
            cmd(0, Method::Send(SendRequest::default())),
        ),
        ("id without method", r#"{"id":7}"#, cmd(7, Method::Unknown)),
        (
            "id with unknown method",
            r#"{"id":7,"frobnicate":{}}"#,
            cmd(7, Method::Unknown),
        ),
        (
            "id with null method",
            r#"{"id":7,"publish":null}"#,
            cmd(7, Method::Unknown),
        ),
        (
            "ping with id",
            r#"{"id":1,"ping":{}}"#,
            cmd(1, Method::Ping),
        ),
        (
            "largest id",
            r#"{"id":4294967295,"ping":{}}"#,
            cmd(u32::MAX, Method::Ping),
        ),
        (
            "reference order, not text order",
            r#"{"id":1,"history":{"channel":"h"},"connect":{"token":"t"}}"#,
            cmd(
                1,
                Method::Connect(ConnectRequest {
                    token: "t".into(),
                    ..Default::default()
                }),
            ),
        ),
        (
            "null methods are skipped",
            r#"{"id":1,"connect":null,"subscribe":{"channel":"a"},"publish":{}}"#,
            cmd(1, subscribe("a")),
        ),
        (
            "ping before send",
            r#"{"id":1,"send":{},"ping":{}}"#,
            cmd(1, Method::Ping),
        ),
        (
            "send before rpc",
            r#"{"id":1,"rpc":{"method":"m"},"send":{}}"#,
            cmd(1, Method::Send(SendRequest::default())),
        ),
        (
            "refresh before sub_refresh",
            r#"{"id":1,"sub_refresh":{"channel":"a"},"refresh":{"token":"t"}}"#,
            cmd(1, Method::Refresh(RefreshRequest { token: "t".into() })),
        ),
        (
            "unknown fields ignored, known extras kept",
            r#"{"id":2,"subscribe":{"channel":"a","flag":3,"delta":"fossil","tf":{"op":"and","future":1},"type":1,"future":[1,{"x":null}]},"extra":true}"#,
            cmd(
                2,
                Method::Subscribe(SubscribeRequest {
                    channel: "a".into(),
                    flag: 3,
                    delta: "fossil".into(),
                    tf: Some(FilterNode {
                        op: "and".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
            ),
        ),
        (
            "publish map fields ignored",
            r#"{"id":3,"publish":{"channel":"a","data":{"x":1},"type":0,"key":"k","removed":false}}"#,
            cmd(
                3,
                Method::Publish(PublishRequest {
                    channel: "a".into(),
                    data: Some(raw(r#"{"x":1}"#)),
                }),
            ),
        ),
        (
            "connect with recoverable subs",
            r#"{"id":1,"connect":{"token":"t","subs":{"ch":{"recover":true,"offset":5,"epoch":"e"}},"name":"js","version":"5","headers":{"h":"v"}}}"#,
            cmd(
                1,
                Method::Connect(ConnectRequest {
                    token: "t".into(),
                    subs: BTreeMap::from([(
                        "ch".into(),
                        SubscribeRequest {
                            recover: true,
                            offset: 5,
                            epoch: "e".into(),
                            ..Default::default()
                        },
                    )]),
                    name: "js".into(),
                    version: "5".into(),
                    headers: BTreeMap::from([("h".into(), "v".into())]),
                    ..Default::default()
                }),
            ),
        ),
        (
            "surrounding whitespace and CR",
            " \t{\"id\":1,\"unsubscribe\":{\"channel\":\"a\"}}\r",
            cmd(
                1,
                Method::Unsubscribe(UnsubscribeRequest {
                    channel: "a".into(),
                }),
            ),
        ),
        (
            "escaped unicode in strings",
            r#"{"id":1,"presence":{"channel":"\u00e9\ud83d\ude00\n"}}"#,
            cmd(
                1,
                Method::Presence(PresenceRequest {
                    channel: "é😀\n".into(),
                }),
            ),
        ),
        (
            "raw newlines inside data are stripped",
            "{\"id\":1,\"publish\":{\"channel\":\"a\",\"data\":{\n  \"x\": [1,\n 2]\n}}}",
            cmd(
                1,
                Method::Publish(PublishRequest {
                    channel: "a".into(),
                    data: Some(raw(r#"{  "x": [1, 2]}"#)),
                }),
            ),
        ),
        (
            "escaped newlines inside data strings are kept",
            r#"{"id":1,"rpc":{"method":"m","data":"a\nb"}}"#,
            cmd(
                1,
                Method::Rpc(RpcRequest {
                    method: "m".into(),
                    data: Some(raw(r#""a\nb""#)),
                }),
            ),
        ),
        (
            "data bytes kept exact",
            r#"{"id":1,"publish":{"channel":"a","data": { "b" : 1.50 , "a":[ ] } }}"#,
            cmd(
                1,
                Method::Publish(PublishRequest {
                    channel: "a".into(),
                    data: Some(raw(r#"{ "b" : 1.50 , "a":[ ] }"#)),
                }),
            ),
        ),
        (
            "null data is a null payload, not an absent one",
            r#"{"id":1,"publish":{"channel":"a","data":null}}"#,
            cmd(
                1,
                Method::Publish(PublishRequest {
                    channel: "a".into(),
                    data: Some(raw("null")),
                }),
            ),
        ),
        (
            "history since and negative limit",
            r#"{"id":1,"history":{"channel":"a","limit":-1,"since":{"offset":3,"epoch":"e"},"reverse":true}}"#,
            cmd(
                1,
                Method::History(HistoryRequest {
                    channel: "a".into(),
                    limit: -1,
                    since: Some(StreamPosition {
                        offset: 3,
                        epoch: "e".into(),
                    }),
                    reverse: true,
                }),
            ),
        ),
        (
            "presence_stats and sub_refresh",
            r#"{"id":9,"presence_stats":{"channel":"a"},"sub_refresh":{"channel":"a","token":"t"}}"#,
            cmd(
                9,
                Method::PresenceStats(PresenceStatsRequest {
                    channel: "a".into(),
                }),
            ),
        ),
        (
            "sub_refresh alone",
            r#"{"id":9,"sub_refresh":{"channel":"a","token":"t","type":1,"track":[]}}"#,
            cmd(
                9,
                Method::SubRefresh(SubRefreshRequest {
                    channel: "a".into(),
                    token: "t".into(),
                }),
            ),
        ),
    ];

    for (name, line, expected) in cases {
        assert_eq!(
            Command::decode(line.as_bytes()).unwrap(),
            expected,
            "{name}"
        );
        // Same through the frame decoder (none of these lines holds a raw `\n`
        // except the one that tests stripping).
        if !line.contains('\n') {
            assert_eq!(decode_frame(line.as_bytes()), Ok(vec![expected]), "{name}");
        }
    }
}

#[test]
fn bad_lines_are_errors_not_panics() {
    let deep_open = "[".repeat(10_000);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty line", b"".to_vec()),
        ("null", b"null".to_vec()),
        (
            "truncated",
            br#"{"id":1,"publish":{"data":{"a":1}"#.to_vec(),
        ),
        ("missing value", br#"{"id":1,"publish":{"data":}}"#.to_vec()),
        ("two objects on one line", br#"{"id":1}{"id":2}"#.to_vec()),
        (
            "method not an object",
            br#"{"id":1,"publish":"x"}"#.to_vec(),
        ),
        (
            "field of wrong type",
            br#"{"id":1,"subscribe":{"channel":5}}"#.to_vec(),
        ),
        ("id above u32", br#"{"id":4294967296,"ping":{}}"#.to_vec()),
        (
            "id above u64",
            br#"{"id":18446744073709551616,"ping":{}}"#.to_vec(),
        ),
        ("negative id", br#"{"id":-1,"ping":{}}"#.to_vec()),
        ("fractional id", br#"{"id":1.5,"ping":{}}"#.to_vec()),
        ("exponent id", br#"{"id":1e2,"ping":{}}"#.to_vec()),
        ("string id", br#"{"id":"1","ping":{}}"#.to_vec()),
        (
            "limit above i32",
            br#"{"id":1,"history":{"channel":"a","limit":2147483648}}"#.to_vec(),
        ),
        (
            "raw control char in string",
            b"{\"id\":1,\"presence\":{\"channel\":\"a\x01\"}}".to_vec(),
        ),
        (
            "lone surrogate escape",
            br#"{"id":1,"presence":{"channel":"\ud800"}}"#.to_vec(),
        ),
        ("invalid UTF-8 alone", b"\xff".to_vec()),
        (
            "invalid UTF-8 in channel",
            b"{\"id\":1,\"subscribe\":{\"channel\":\"\xff\"}}".to_vec(),
        ),
        (
            "truncated UTF-8 in data",
            b"{\"id\":1,\"publish\":{\"channel\":\"a\",\"data\":\"\xc3\"}}".to_vec(),
        ),
        (
            "encoded surrogate in nested data",
            b"{\"id\":1,\"publish\":{\"channel\":\"a\",\"data\":{\"k\":[\"\xed\xa0\x80\"]}}}"
                .to_vec(),
        ),
        (
            "invalid JSON in data",
            br#"{"id":1,"publish":{"channel":"a","data":[1 2]}}"#.to_vec(),
        ),
        ("10 000 open brackets", deep_open.clone().into_bytes()),
        (
            "10 000 open brackets in data",
            format!(r#"{{"id":1,"publish":{{"channel":"a","data":{deep_open}}}}}"#).into_bytes(),
        ),
        (
            "10 000 nested arrays",
            format!("{deep_open}{}", "]".repeat(10_000)).into_bytes(),
        ),
    ];

    for (name, line) in cases {
        assert!(Command::decode(&line).is_err(), "{name}");
        // Replies come from the server, but a client-side decoder must not panic either.
        let _ = Reply::decode(&line);
        if !line.contains(&b'\n') {
            assert!(
                matches!(
                    decode_frame(&line),
                    Err(FrameError::Empty | FrameError::Malformed { index: 0, .. })
                ),
                "{name}"
            );
        }
    }
}

/// serde_json's recursion limit (128) guards typed values, but payloads and
/// ignored fields are skipped with a heap stack: deep nesting there is
/// accepted, kept byte-exact and never overflows the stack.
#[test]
fn deep_nesting_in_payloads_and_ignored_fields_does_not_overflow() {
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));

    let line = format!(r#"{{"id":1,"publish":{{"channel":"a","data":{deep}}}}}"#);
    let cmd = Command::decode(line.as_bytes()).unwrap();
    assert_eq!(
        cmd,
        Command {
            id: 1,
            method: Method::Publish(PublishRequest {
                channel: "a".into(),
                data: Some(raw(&deep))
            }),
        }
    );
    assert_eq!(cmd.encode(), line.into_bytes());

    let line = format!(r#"{{"id":1,"future":{deep},"ping":{{}}}}"#);
    assert_eq!(
        Command::decode(line.as_bytes()).unwrap(),
        Command {
            id: 1,
            method: Method::Ping
        }
    );

    // Where a typed value is expected the limit applies.
    let nested_objects = format!("{}1{}", r#"{"a":"#.repeat(200), "}".repeat(200));
    assert!(serde_json::from_str::<Value>(&nested_objects).is_err());
    let line = format!(r#"{{"id":1,"connect":{{"headers":{nested_objects}}}}}"#);
    assert!(Command::decode(line.as_bytes()).is_err());
}

/// Bytes that are not UTF-8 inside a field the server ignores are not
/// validated by serde_json; whatever it decides, nothing of them is kept.
#[test]
fn invalid_utf8_in_ignored_field_is_never_carried() {
    for line in [
        &b"{\"id\":1,\"x\":\"\xff\",\"ping\":{}}"[..],
        &b"{\"id\":1,\"subscribe\":{\"channel\":\"a\",\"tf\":\"\xff\xfe\"}}"[..],
        &b"{\"id\":1,\"\xff\":1,\"ping\":{}}"[..],
    ] {
        match Command::decode(line) {
            Err(_) => {}
            Ok(Command {
                id: 1,
                method: Method::Ping,
            }) => {}
            Ok(Command {
                id: 1,
                method: Method::Subscribe(req),
            }) => {
                assert_eq!(
                    req,
                    SubscribeRequest {
                        channel: "a".into(),
                        ..Default::default()
                    }
                );
            }
            Ok(other) => panic!("{other:?}"),
        }
    }
}

#[test]
fn frames_decode_line_by_line() {
    let ping = |id| Command {
        id,
        method: Method::Ping,
    };
    let ok: Vec<(&str, &[u8], Vec<Command>)> = vec![
        ("one command", br#"{"id":1,"ping":{}}"#, vec![ping(1)]),
        (
            "trailing separator",
            b"{\"id\":1,\"ping\":{}}\n",
            vec![ping(1)],
        ),
        (
            "three commands",
            b"{\"id\":1,\"ping\":{}}\n{}\n{\"id\":3,\"ping\":{}}",
            vec![
                ping(1),
                Command {
                    id: 0,
                    method: Method::Pong,
                },
                ping(3),
            ],
        ),
        (
            "CRLF separators",
            b"{\"id\":1,\"ping\":{}}\r\n{\"id\":2,\"ping\":{}}\r\n",
            vec![ping(1), ping(2)],
        ),
    ];
    for (name, frame, expected) in ok {
        assert_eq!(decode_frame(frame), Ok(expected), "{name}");
    }

    let empty: [&[u8]; 6] = [b"", b"\n", b" ", b"  \t\r\n", b"\r\n", b" \n"];
    for frame in empty {
        assert_eq!(decode_frame(frame), Err(FrameError::Empty), "{frame:?}");
    }

    let malformed: Vec<(&str, &[u8], usize)> = vec![
        ("bad first line", b"nope\n{\"id\":1,\"ping\":{}}", 0),
        (
            "bad third line",
            b"{\"id\":1,\"connect\":{}}\n{\"id\":2,\"subscribe\":{\"channel\":\"a\"}}\n{\"id\":3",
            2,
        ),
        ("blank line in the middle", b"{}\n\n{}", 1),
        ("two trailing separators", b"{}\n\n", 1),
        ("leading separator", b"\n{}", 0),
        ("invalid UTF-8 on second line", b"{}\n\xff", 1),
        (
            "newline splits a pretty payload",
            b"{\"id\":1,\"publish\":{\"channel\":\"a\",\"data\":{\n\"x\":1}}}",
            0,
        ),
    ];
    for (name, frame, index) in malformed {
        match decode_frame(frame) {
            Err(FrameError::Malformed { index: got, reason }) => {
                assert_eq!(got, index, "{name}");
                assert!(!reason.is_empty(), "{name}");
            }
            other => panic!("{name}: {other:?}"),
        }
    }
}

#[test]
fn raw_json_validates_before_stripping_newlines() {
    // Removing the newline would join two tokens into a valid one.
    for text in [
        "[1\n2]",
        "tru\ne",
        "\"a\"\n\"b\"",
        "{\"a\":1\n\"b\":2}",
        "-\n1",
    ] {
        assert!(RawJson::from_str(text).is_err(), "{text:?}");
    }
    assert_eq!(RawJson::from_str("[1,\n2]\n").unwrap().get(), "[1,2]");
    assert_eq!(RawJson::from_str("\"a\\nb\"").unwrap().get(), "\"a\\nb\"");
}

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

fn raw(text: &str) -> RawJson {
    RawJson::from_str(text).unwrap()
}

/// Object keys whose values are application payloads, relayed as they came.
const PAYLOAD_KEYS: [&str; 3] = ["data", "conn_info", "chan_info"];

/// JSON nulls in `v`; with `skip_payloads`, those inside payloads are not
/// counted. Conservative: a map key spelled like a payload key (a channel
/// named `data` in `subs`) hides its subtree, never the reverse.
fn nulls(v: &Value, skip_payloads: bool) -> usize {
    match v {
        Value::Null => 1,
        Value::Array(items) => items.iter().map(|x| nulls(x, skip_payloads)).sum(),
        Value::Object(fields) => fields
            .iter()
            .filter(|(k, _)| !(skip_payloads && PAYLOAD_KEYS.contains(&k.as_str())))
            .map(|(_, x)| nulls(x, skip_payloads))
            .sum(),
        _ => 0,
    }
}

/// One encoded line: no raw `\n`, valid JSON, and no `null` except inside a
/// payload, and none at all when no payload held one.
fn check_line(line: &[u8], payload_nulls: bool) -> Result<(), TestCaseError> {
    prop_assert!(!line.contains(&b'\n'));
    let value: Value = serde_json::from_slice(line)?;
    prop_assert!(value.is_object());
    prop_assert_eq!(
        nulls(&value, true),
        0,
        "protocol null in {}",
        String::from_utf8_lossy(line)
    );
    if !payload_nulls {
        prop_assert_eq!(
            nulls(&value, false),
            0,
            "null in {}",
            String::from_utf8_lossy(line)
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Strategies
// ---------------------------------------------------------------------------

type Payloads = BoxedStrategy<RawJson>;

/// Builds `make` over payloads that may hold JSON null (`true`) or never do.
fn either_payloads<T: Debug + 'static>(
    make: fn(&Payloads) -> BoxedStrategy<T>,
) -> BoxedStrategy<(T, bool)> {
    prop_oneof![
        make(&payload(true)).prop_map(|x| (x, true)),
        make(&payload(false)).prop_map(|x| (x, false)),
    ]
    .boxed()
}

/// Arbitrary unicode, weighted towards what JSON must escape.
fn text() -> BoxedStrategy<String> {
    let special = prop::sample::select(vec![
        '"', '\\', '/', '\n', '\r', '\t', '\u{0}', '\u{1f}', '\u{7f}', '\u{2028}', '\u{feff}', 'é',
        '😀',
    ]);
    let ch = prop_oneof![3 => any::<char>(), 1 => special];
    prop_oneof![
        1 => Just(String::new()),
        4 => prop::collection::vec(ch, 0..10).prop_map(String::from_iter),
    ]
    .boxed()
}

fn edge<T: Arbitrary + Clone + Debug + 'static>(edges: &[T]) -> BoxedStrategy<T> {
    prop_oneof![1 => prop::sample::select(edges.to_vec()), 2 => any::<T>()].boxed()
}

fn u32e() -> BoxedStrategy<u32> {
    edge(&[0, 1, u32::MAX])
}

fn u64e() -> BoxedStrategy<u64> {
    edge(&[0, 1, u64::MAX])
}

fn i32e() -> BoxedStrategy<i32> {
    edge(&[0, -1, i32::MIN, i32::MAX])
}

fn i64e() -> BoxedStrategy<i64> {
    edge(&[0, 1, 2, 3, i64::MIN, i64::MAX])
}

fn json(nulls: bool) -> BoxedStrategy<Value> {
    let number = prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("JSON has no NaN or infinity", |f| {
            serde_json::Number::from_f64(f).map(Value::Number)
        }),
    ];
    let scalar = prop_oneof![
        any::<bool>().prop_map(Value::Bool),
        number,
        text().prop_map(Value::String)
    ];
    let leaf = if nulls {
        prop_oneof![1 => Just(Value::Null), 5 => scalar].boxed()
    } else {
        scalar.boxed()
    };
    leaf.prop_recursive(4, 24, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec((text(), inner), 0..5)
                .prop_map(|fields| Value::Object(fields.into_iter().collect())),
        ]
    })
    .boxed()
}

/// Payloads built from values, or parsed from pretty-printed text with newlines.
fn payload(nulls: bool) -> Payloads {
    let value = json(nulls);
    prop_oneof![
        value.clone().prop_map(|v| RawJson::from_value(&v).unwrap()),
        value.prop_map(|v| RawJson::from_str(&serde_json::to_string_pretty(&v).unwrap()).unwrap()),
    ]
    .boxed()
}

fn opt(p: &Payloads) -> BoxedStrategy<Option<RawJson>> {
    prop::option::of(p.clone()).boxed()
}

fn map_of<T: Debug + 'static>(values: BoxedStrategy<T>) -> BoxedStrategy<BTreeMap<String, T>> {
    prop::collection::btree_map(text(), values, 0..3).boxed()
}

fn client_info(p: &Payloads) -> BoxedStrategy<ClientInfo> {
    (text(), text(), opt(p), opt(p))
        .prop_map(|(user, client, conn_info, chan_info)| ClientInfo {
            user,
            client,
            conn_info,
            chan_info,
        })
        .boxed()
}

fn publication(p: &Payloads) -> BoxedStrategy<Publication> {
    (
        p.clone(),
        prop::option::of(client_info(p)),
        u64e(),
        map_of(text()),
        any::<bool>(),
    )
        .prop_map(|(data, info, offset, tags, delta)| Publication {
            data,
            info,
            offset,
            tags,
            delta,
        })
        .boxed()
}

fn stream_position() -> BoxedStrategy<StreamPosition> {
    (u64e(), text())
        .prop_map(|(offset, epoch)| StreamPosition { offset, epoch })
        .boxed()
}

fn subscribe_request(p: &Payloads) -> BoxedStrategy<SubscribeRequest> {
    (
        text(),
        text(),
        any::<bool>(),
        text(),
        u64e(),
        opt(p),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        text(),
        prop::option::of(filter_node()),
        i64e(),
    )
        .prop_map(
            |(
                channel,
                token,
                recover,
                epoch,
                offset,
                data,
                positioned,
                recoverable,
                join_leave,
                delta,
                tf,
                flag,
            )| {
                SubscribeRequest {
                    channel,
                    token,
                    recover,
                    epoch,
                    offset,
                    data,
                    positioned,
                    recoverable,
                    join_leave,
                    delta,
                    tf,
                    flag,
                }
            },
        )
        .boxed()
}

/// Any tags-filter tree, valid or not: the wire carries both.
fn filter_node() -> BoxedStrategy<FilterNode> {
    let leaf = (
        text(),
        text(),
        text(),
        text(),
        prop::collection::vec(text(), 0..3),
    )
        .prop_map(|(op, key, cmp, val, vals)| FilterNode {
            op,
            key,
            cmp,
            val,
            vals,
            nodes: Vec::new(),
        });
    leaf.prop_recursive(3, 12, 3, |inner| {
        (text(), text(), prop::collection::vec(inner, 0..3)).prop_map(|(op, key, nodes)| {
            FilterNode {
                op,
                key,
                nodes,
                ..Default::default()
            }
        })
    })
    .boxed()
}

fn method(p: &Payloads) -> BoxedStrategy<Method> {
    let connect = (
        text(),
        opt(p),
        map_of(subscribe_request(p)),
        text(),
        text(),
        map_of(text()),
        i64e(),
    )
        .prop_map(|(token, data, subs, name, version, headers, flag)| {
            Method::Connect(ConnectRequest {
                token,
                data,
                subs,
                name,
                version,
                headers,
                flag,
            })
        });
    let history = (
        text(),
        i32e(),
        prop::option::of(stream_position()),
        any::<bool>(),
    )
        .prop_map(|(channel, limit, since, reverse)| {
            Method::History(HistoryRequest {
                channel,
                limit,
                since,
                reverse,
            })
        });
    prop_oneof![
        connect,
        subscribe_request(p).prop_map(Method::Subscribe),
        text().prop_map(|channel| Method::Unsubscribe(UnsubscribeRequest { channel })),
        (text(), opt(p))
            .prop_map(|(channel, data)| Method::Publish(PublishRequest { channel, data })),
        text().prop_map(|channel| Method::Presence(PresenceRequest { channel })),
        text().prop_map(|channel| Method::PresenceStats(PresenceStatsRequest { channel })),
        history,
        Just(Method::Ping),
        opt(p).prop_map(|data| Method::Send(SendRequest { data })),
        (opt(p), text()).prop_map(|(data, method)| Method::Rpc(RpcRequest { data, method })),
        text().prop_map(|token| Method::Refresh(RefreshRequest { token })),
        (text(), text())
            .prop_map(|(channel, token)| Method::SubRefresh(SubRefreshRequest { channel, token })),
        Just(Method::Pong),
        Just(Method::Unknown),
    ]
    .boxed()
}

/// A command as a client may send it: a pong has no id, a send may have none,
/// everything else (including a method the server does not know) has one.
fn command(p: &Payloads) -> BoxedStrategy<Command> {
    (
        method(p),
        edge(&[1, u32::MAX]).prop_filter("ids start at 1", |id| *id > 0),
        any::<bool>(),
    )
        .prop_map(|(method, id, idless_send)| {
            let id = match method {
                Method::Pong => 0,
                Method::Send(_) if idless_send => 0,
                _ => id,
            };
            Command { id, method }
        })
        .boxed()
}

fn subscribe_result(p: &Payloads) -> BoxedStrategy<SubscribeResult> {
    (
        any::<bool>(),
        u32e(),
        any::<bool>(),
        text(),
        prop::collection::vec(publication(p), 0..3),
        any::<bool>(),
        u64e(),
        any::<bool>(),
        opt(p),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |(
                expires,
                ttl,
                recoverable,
                epoch,
                publications,
                recovered,
                offset,
                positioned,
                data,
                was_recovering,
                delta,
            )| {
                SubscribeResult {
                    expires,
                    ttl,
                    recoverable,
                    epoch,
                    publications,
                    recovered,
                    offset,
                    positioned,
                    data,
                    was_recovering,
                    delta,
                }
            },
        )
        .boxed()
}

fn command_result(p: &Payloads) -> BoxedStrategy<CommandResult> {
    let connect = (
        text(),
        text(),
        any::<bool>(),
        u32e(),
        opt(p),
        map_of(subscribe_result(p)),
        u32e(),
        any::<bool>(),
        any::<i64>(),
    )
        .prop_map(
            |(client, version, expires, ttl, data, subs, ping, pong, time)| {
                CommandResult::Connect(ConnectResult {
                    client,
                    version,
                    expires,
                    ttl,
                    data,
                    subs,
                    ping,
                    pong,
                    session: String::new(),
                    node: String::new(),
                    time,
                })
            },
        );
    prop_oneof![
        connect,
        subscribe_result(p).prop_map(CommandResult::Subscribe),
        Just(CommandResult::Unsubscribe),
        Just(CommandResult::Publish),
        map_of(client_info(p))
            .prop_map(|presence| CommandResult::Presence(PresenceResult { presence })),
        (u32e(), u32e()).prop_map(|(num_clients, num_users)| {
            CommandResult::PresenceStats(PresenceStatsResult {
                num_clients,
                num_users,
            })
        }),
        (prop::collection::vec(publication(p), 0..3), text(), u64e()).prop_map(
            |(publications, epoch, offset)| {
                CommandResult::History(HistoryResult {
                    publications,
                    epoch,
                    offset,
                })
            }
        ),
        Just(CommandResult::Ping),
        opt(p).prop_map(|data| CommandResult::Rpc(RpcResult { data })),
        (text(), text(), any::<bool>(), u32e()).prop_map(|(client, version, expires, ttl)| {
            CommandResult::Refresh(RefreshResult {
                client,
                version,
                expires,
                ttl,
            })
        }),
        (any::<bool>(), u32e()).prop_map(|(expires, ttl)| CommandResult::SubRefresh(
            SubRefreshResult { expires, ttl }
        )),
    ]
    .boxed()
}

fn push_body(p: &Payloads) -> BoxedStrategy<PushBody> {
    prop_oneof![
        publication(p).prop_map(PushBody::Publication),
        client_info(p).prop_map(|info| PushBody::Join(JoinPush { info })),
        client_info(p).prop_map(|info| PushBody::Leave(LeavePush { info })),
        (u32e(), text())
            .prop_map(|(code, reason)| PushBody::Unsubscribe(UnsubscribePush { code, reason })),
        (any::<bool>(), text(), u64e(), any::<bool>(), opt(p)).prop_map(
            |(recoverable, epoch, offset, positioned, data)| {
                PushBody::Subscribe(SubscribePush {
                    recoverable,
                    epoch,
                    offset,
                    positioned,
                    data,
                })
            }
        ),
        p.clone()
            .prop_map(|data| PushBody::Message(MessagePush { data })),
    ]
    .boxed()
}

fn error_reply() -> BoxedStrategy<ErrorReply> {
    prop_oneof![
        prop::sample::select(ErrorCode::ALL.to_vec()).prop_map(ErrorReply::from),
        (u32e(), text(), any::<bool>()).prop_map(|(code, message, temporary)| ErrorReply {
            code,
            message,
            temporary
        }),
    ]
    .boxed()
}

fn reply(p: &Payloads) -> BoxedStrategy<Reply> {
    prop_oneof![
        4 => (u32e(), command_result(p)).prop_map(|(id, result)| Reply::Result { id, result }),
        1 => (u32e(), error_reply()).prop_map(|(id, error)| Reply::Error { id, error }),
        3 => (text(), push_body(p)).prop_map(|(channel, body)| Reply::Push(Push { channel, body })),
        1 => Just(Reply::Ping),
    ]
    .boxed()
}
