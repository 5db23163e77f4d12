use super::*;

fn delimited(body: &[u8]) -> Vec<u8> {
    let mut out = vec![u8::try_from(body.len()).unwrap()];
    out.extend_from_slice(body);
    out
}

fn raw(text: &str) -> RawJson {
    RawJson::from_str(text).unwrap()
}

/// Field numbers and wire types checked byte by byte against client
/// protocol v0.19.2 (docs/protocol.md, "Protobuf").
#[test]
fn golden_bytes_of_a_publication_push() {
    let publication = Publication {
        data: raw("1"),
        info: None,
        offset: 2,
        tags: Default::default(),
        delta: false,
    };
    // Publication{data=4 "1", offset=6 2}.
    let publication_bytes = [0x22, 1, b'1', 0x30, 2];
    // Push{channel=2 "c", pub=4 {...}}.
    let mut push = vec![0x12, 1, b'c', 0x22, publication_bytes.len() as u8];
    push.extend_from_slice(&publication_bytes);
    // Reply{push=4 {...}}.
    let mut reply = vec![0x22, push.len() as u8];
    reply.extend_from_slice(&push);
    assert_eq!(
        encode_publication_protobuf("c", &publication),
        delimited(&reply)
    );
}

#[test]
fn golden_bytes_of_commands() {
    // Command{id=1 1, connect=4 {token=1 "t"}}.
    let connect = decode_frame_protobuf(&delimited(&[0x08, 1, 0x22, 3, 0x0A, 1, b't'])).unwrap();
    assert_eq!(
        connect,
        [Command {
            id: 1,
            method: Method::Connect(ConnectRequest {
                token: "t".into(),
                ..Default::default()
            })
        }]
    );
    // Command{id=2, publish=7 {channel=1 "c", data=2 "{}"}}.
    let publish = [0x08, 2, 0x3A, 7, 0x0A, 1, b'c', 0x12, 2, b'{', b'}'];
    assert_eq!(
        decode_frame_protobuf(&delimited(&publish)).unwrap()[0].method,
        Method::Publish(PublishRequest {
            channel: "c".into(),
            data: Some(raw("{}")),
        })
    );
    // Command{id=3, history=10 {channel=1 "c", limit=7 5, since=8 {offset=1 9, epoch=2 "e"}, reverse=9 true}}.
    let history = [
        0x08, 3, 0x52, 14, 0x0A, 1, b'c', 0x38, 5, 0x42, 5, 0x08, 9, 0x12, 1, b'e', 0x48, 1,
    ];
    assert_eq!(
        decode_frame_protobuf(&delimited(&history)).unwrap()[0].method,
        Method::History(HistoryRequest {
            channel: "c".into(),
            limit: 5,
            since: Some(StreamPosition {
                offset: 9,
                epoch: "e".into()
            }),
            reverse: true,
        })
    );
}

#[test]
fn golden_bytes_of_an_error_reply() {
    let mut out = Vec::new();
    encode_reply_protobuf(
        &Reply::Error {
            id: 7,
            error: ErrorReply {
                code: 107,
                message: "bad request".into(),
                temporary: false,
            },
        },
        &mut out,
    );
    // Reply{id=1 7, error=2 {code=1 107, message=2 "bad request"}}.
    let mut want = vec![0x08, 7, 0x12, 15, 0x08, 107, 0x12, 11];
    want.extend_from_slice(b"bad request");
    assert_eq!(out, delimited(&want));
}

#[test]
fn several_commands_share_one_message() {
    let mut message = delimited(&[0x08, 1, 0x5A, 0]); // ping
    message.extend(delimited(&[])); // pong
    message.extend(delimited(&[0x08, 2, 0x32, 3, 0x0A, 1, b'c'])); // unsubscribe
    let methods: Vec<Method> = decode_frame_protobuf(&message)
        .unwrap()
        .into_iter()
        .map(|c| c.method)
        .collect();
    assert_eq!(
        methods,
        [
            Method::Ping,
            Method::Pong,
            Method::Unsubscribe(UnsubscribeRequest {
                channel: "c".into()
            })
        ]
    );
}

#[test]
fn bad_framing_is_refused_whole() {
    let ping = delimited(&[0x08, 1, 0x5A, 0]);
    let mut cases: Vec<(&str, Vec<u8>, FrameError)> = vec![
        ("empty", vec![], FrameError::Empty),
        (
            "truncated varint",
            vec![0x80],
            FrameError::Protobuf("bad length prefix"),
        ),
        (
            "varint of 11 bytes",
            [vec![0x80; 10], vec![0x01]].concat(),
            FrameError::Protobuf("bad length prefix"),
        ),
        (
            "varint past 64 bits",
            [vec![0xFF; 9], vec![0x02]].concat(),
            FrameError::Protobuf("bad length prefix"),
        ),
        (
            "length beyond the message",
            vec![5, 0x08, 1],
            FrameError::Protobuf("length beyond the message"),
        ),
        (
            "huge length",
            [vec![0xFF; 9], vec![0x01]].concat(),
            FrameError::Protobuf("length beyond the message"),
        ),
        (
            "not a Command (field 1 as a string)",
            delimited(&[0x0A, 1, b'x']),
            FrameError::Protobuf("not a Command"),
        ),
        (
            "invalid UTF-8 in a string field",
            delimited(&[0x08, 1, 0x32, 3, 0x0A, 1, 0xFF]),
            FrameError::Protobuf("not a Command"),
        ),
    ];
    // A good command before the bad part changes nothing: all or nothing.
    let mut tail = ping.clone();
    tail.extend_from_slice(&[3, 0x08]);
    cases.push((
        "good then truncated",
        tail,
        FrameError::Protobuf("length beyond the message"),
    ));
    for (what, message, want) in cases {
        assert_eq!(decode_frame_protobuf(&message), Err(want), "{what}");
    }
    // A non-minimal (overlong but in range) varint is still a length.
    let mut padded = vec![0x84, 0x00];
    padded.extend_from_slice(&ping[1..]);
    assert_eq!(decode_frame_protobuf(&padded).unwrap().len(), 1);
}

#[test]
fn unknown_fields_are_skipped() {
    // Command{id=1, field 99 varint 5, ping=11 {}, field 100 bytes "zz"}.
    let body = [0x08, 1, 0x98, 0x06, 5, 0x5A, 0, 0xA2, 0x06, 2, b'z', b'z'];
    assert_eq!(
        decode_frame_protobuf(&delimited(&body)).unwrap()[0],
        Command {
            id: 1,
            method: Method::Ping
        }
    );
}

#[test]
fn payloads_that_are_not_json_are_named_not_dropped() {
    let cases: [(&str, Vec<u8>); 4] = [
        // connect data "{"
        ("connect", vec![0x08, 1, 0x22, 3, 0x12, 1, b'{']),
        // connect subs {"c": {data "x"}}: map entry key=1 "c", value=2 {data=8 "x"}
        (
            "connect",
            vec![
                0x08, 1, 0x22, 10, 0x1A, 8, 0x0A, 1, b'c', 0x12, 3, 0x42, 1, b'x',
            ],
        ),
        // subscribe data "nope"
        (
            "subscribe",
            vec![
                0x08, 1, 0x2A, 9, 0x0A, 1, b'c', 0x42, 4, b'n', b'o', b'p', b'e',
            ],
        ),
        // rpc data [0xFF]
        ("rpc", vec![0x08, 1, 0x6A, 3, 0x0A, 1, 0xFF]),
    ];
    for (method, body) in cases {
        assert_eq!(
            decode_frame_protobuf(&delimited(&body)).unwrap()[0],
            Command {
                id: 1,
                method: Method::PayloadNotJson { method }
            },
            "{method}"
        );
    }
    // An id-less send: still a send, so the connection can refuse it.
    let send = decode_frame_protobuf(&delimited(&[0x62, 3, 0x0A, 1, b'x'])).unwrap();
    assert_eq!(send[0].method, Method::PayloadNotJson { method: "send" });
    // Publish data may be for a binary channel: bytes that are not plain
    // JSON come marked binary, exactly as sent; the machine decides.
    for (body, bytes) in [
        (vec![0x08, 1, 0x3A, 6, 0x0A, 1, b'c', 0x12, 1, 1], vec![1u8]),
        (
            vec![0x08, 1, 0x3A, 8, 0x0A, 1, b'c', 0x12, 3, b'[', b'\n', b']'],
            b"[\n]".to_vec(),
        ),
    ] {
        let decoded = decode_frame_protobuf(&delimited(&body)).unwrap();
        let Method::Publish(p) = &decoded[0].method else {
            panic!("{decoded:?}");
        };
        let data = p.data.as_ref().unwrap();
        assert!(data.is_binary());
        assert_eq!(data.binary_bytes(), Some(bytes));
    }
    // JSON text is taken as is.
    let ok = decode_frame_protobuf(&delimited(&[
        0x08, 1, 0x3A, 9, 0x0A, 1, b'c', 0x12, 4, b'n', b'u', b'l', b'l',
    ]))
    .unwrap();
    assert!(matches!(&ok[0].method, Method::Publish(p) if p.data == Some(raw("null"))));
}

/// A map entry always carries its value, even an empty message: Go and
/// centrifuge-js write it, and centrifuge-js reads a missing one as null.
#[test]
fn an_empty_server_side_subscribe_result_is_still_written() {
    let mut subs = std::collections::BTreeMap::new();
    subs.insert("a".to_owned(), SubscribeResult::default());
    let mut out = Vec::new();
    encode_reply_protobuf(
        &Reply::Result {
            id: 1,
            result: CommandResult::Connect(ConnectResult {
                client: "c".into(),
                subs,
                ..Default::default()
            }),
        },
        &mut out,
    );
    // Reply{id=1, connect=5 {client=1 "c", subs=6 {key=1 "a", value=2 {}}}}.
    let connect = [0x0A, 1, b'c', 0x32, 5, 0x0A, 1, b'a', 0x12, 0];
    let mut want = vec![0x08, 1, 0x2A, connect.len() as u8];
    want.extend_from_slice(&connect);
    assert_eq!(out, delimited(&want));
}

#[test]
fn connect_time_is_field_11() {
    let mut out = Vec::new();
    encode_reply_protobuf(
        &Reply::Result {
            id: 1,
            result: CommandResult::Connect(ConnectResult {
                client: "c".into(),
                time: 300,
                ..Default::default()
            }),
        },
        &mut out,
    );
    // Reply{id=1, connect=5 {client=1 "c", time=11 varint 300}}.
    let connect = [0x0A, 1, b'c', 0x58, 0xAC, 0x02];
    let mut want = vec![0x08, 1, 0x2A, connect.len() as u8];
    want.extend_from_slice(&connect);
    assert_eq!(out, delimited(&want));
}
