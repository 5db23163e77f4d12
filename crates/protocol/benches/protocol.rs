//! Frame codec and push encoding: the per-message CPU cost of the client
//! protocol. Throughput is in bytes of the frame read (decode) or written
//! (encode).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use herald_protocol::{
    decode_frame, encode_frame, ClientInfo, CommandResult, ConnectResult, FrameWriter,
    HistoryResult, Publication, Push, PushBody, RawJson, Reply,
};

const CHANNEL: &str = "chat:room-42";
const CLIENT: &str = "5f0e8d1c-3b7a-4c2e-9f61-2d8a4b7c9e10";
/// A typical HS256 connection token (`sub`, `exp`, `iat`, `info`; 172 bytes).
/// Decoding does not verify it, so the signature is made up.
const TOKEN: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiI0MiIsImV4cCI6MTcwMDAwMzYwMCwiaWF0IjoxNzAwMDAwMDAwLCJpbmZvIjp7Im5hbWUiOiJBZGEifX0.3Qd2nYh8v0dZ6m1kq3hQ2cG0X5o8Yk4R8c1f6m2pW9s";

fn frame_decode(c: &mut Criterion) {
    let connect =
        format!(r#"{{"id":1,"connect":{{"token":"{TOKEN}","name":"js","version":"5.0.0"}}}}"#);
    let publish = publish_command(2);
    let batch = (1..=16).map(publish_command).collect::<Vec<_>>().join("\n");
    let cases = [
        ("connect", connect),
        ("publish_80b", publish),
        ("batch_16_publish_80b", batch),
    ];

    let mut group = c.benchmark_group("frame_decode");
    for (name, frame) in &cases {
        // Benchmarking the error path by mistake would look fast.
        assert!(decode_frame(frame.as_bytes()).is_ok(), "{name} decodes");
        group.throughput(Throughput::Bytes(frame.len() as u64));
        group.bench_function(*name, |b| {
            b.iter(|| decode_frame(black_box(frame.as_bytes())))
        });
    }
    group.finish();
}

fn frame_encode(c: &mut Criterion) {
    let connect = Reply::Result {
        id: 1,
        result: CommandResult::Connect(ConnectResult {
            client: CLIENT.into(),
            version: "0.1.0".into(),
            expires: true,
            ttl: 3600,
            ping: 25,
            pong: true,
            session: String::new(),
            node: String::new(),
            ..Default::default()
        }),
    };
    let publish = Reply::Result {
        id: 2,
        result: CommandResult::Publish,
    };
    let history = Reply::Result {
        id: 3,
        result: CommandResult::History(HistoryResult {
            publications: (1..=10).map(|offset| publication(offset, None)).collect(),
            epoch: "xKq1".into(),
            offset: 10,
        }),
    };
    let batch: Vec<Reply> = (1..=16)
        .map(|id| Reply::Result {
            id,
            result: CommandResult::Publish,
        })
        .collect();

    let mut group = c.benchmark_group("frame_encode");
    for (name, reply) in [
        ("connect_reply", &connect),
        ("publish_reply", &publish),
        ("history_reply_10x80b", &history),
    ] {
        group.throughput(Throughput::Bytes(reply.encode().len() as u64));
        group.bench_function(name, |b| b.iter(|| black_box(reply).encode()));
    }
    group.throughput(Throughput::Bytes(encode_frame(&batch).len() as u64));
    group.bench_function("encode_frame_16_publish_replies", |b| {
        b.iter(|| encode_frame(black_box(&batch)))
    });
    // What the Session does with pushes the Hub already encoded.
    let pushes: Vec<Vec<u8>> = (1..=16)
        .map(|offset| Push::encode_publication(CHANNEL, &publication(offset, None)))
        .collect();
    let joined = {
        let mut writer = FrameWriter::default();
        pushes.iter().for_each(|p| writer.push_encoded(p));
        writer.finish()
    };
    group.throughput(Throughput::Bytes(joined.len() as u64));
    group.bench_function("frame_writer_16_encoded_pushes", |b| {
        b.iter(|| {
            let mut writer = FrameWriter::default();
            for push in black_box(&pushes) {
                writer.push_encoded(push);
            }
            writer.finish()
        })
    });
    group.finish();
}

fn push_encode(c: &mut Criterion) {
    let info = ClientInfo {
        user: "42".into(),
        client: CLIENT.into(),
        conn_info: Some(json(r#"{"name":"Ada"}"#)),
        chan_info: None,
    };
    let bare = publication(7, None);
    let with_info = publication(7, Some(info.clone()));
    let as_reply = Reply::Push(Push {
        channel: CHANNEL.into(),
        body: PushBody::Publication(bare.clone()),
    });

    let mut group = c.benchmark_group("push_encode");
    let len = Push::encode_publication(CHANNEL, &bare).len();
    group.throughput(Throughput::Bytes(len as u64));
    group.bench_function("publication_80b", |b| {
        b.iter(|| Push::encode_publication(black_box(CHANNEL), black_box(&bare)))
    });
    // The same bytes through the owned Reply path, which clones the
    // publication: what `encode_publication` saves.
    group.bench_function("publication_80b_via_reply", |b| {
        b.iter(|| black_box(&as_reply).encode())
    });
    let len = Push::encode_publication(CHANNEL, &with_info).len();
    group.throughput(Throughput::Bytes(len as u64));
    group.bench_function("publication_80b_with_info", |b| {
        b.iter(|| Push::encode_publication(black_box(CHANNEL), black_box(&with_info)))
    });
    let len = Push::encode_join(CHANNEL, &info).len();
    group.throughput(Throughput::Bytes(len as u64));
    group.bench_function("join", |b| {
        b.iter(|| Push::encode_join(black_box(CHANNEL), black_box(&info)))
    });
    group.finish();
}

/// `{"id":N,"publish":{"channel":...,"data":<80 bytes>}}`
fn publish_command(id: u32) -> String {
    format!(
        r#"{{"id":{id},"publish":{{"channel":"{CHANNEL}","data":{}}}}}"#,
        payload()
    )
}

fn publication(offset: u64, info: Option<ClientInfo>) -> Publication {
    Publication {
        data: json(&payload()),
        info,
        offset,
        tags: Default::default(),
        delta: false,
    }
}

/// An 80-byte JSON object, the size of a short chat message.
fn payload() -> String {
    let json = format!(r#"{{"text":"{}","seq":1}}"#, "x".repeat(61));
    assert_eq!(json.len(), 80);
    json
}

fn json(text: &str) -> RawJson {
    RawJson::from_str(text).unwrap()
}

criterion_group!(benches, frame_decode, frame_encode, push_encode);
criterion_main!(benches);
