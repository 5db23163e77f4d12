//! Wire types of the Centrifugo client protocol, its two frame codecs (JSON
//! in `frame`, protobuf in `protobuf`), and the server HTTP API (`api`).
//!
//! Pure: no I/O, no clocks, no async. Every type here round-trips
//! (`decode(encode(x)) == x`), raw JSON payloads are kept byte-exact (less any
//! `\n`, which the frame separator forbids), unknown fields are ignored, and
//! empty fields are omitted except the few the protocol says are always present.

pub mod api;
mod code;
mod command;
pub mod filter;
mod frame;
pub mod protobuf;
mod raw;
mod reply;

pub use code::{Disconnect, ErrorCode, ErrorReply, UnsubscribeCode};
pub use command::{
    Command, ConnectRequest, FilterNode, HistoryRequest, Method, PresenceRequest,
    PresenceStatsRequest, PublishRequest, RefreshRequest, RpcRequest, SendRequest,
    SubRefreshRequest, SubscribeRequest, UnsubscribeRequest, SUBSCRIBE_FLAG_REJECT_UNRECOVERED,
};
pub use filter::{FilterError, TagsFilter};
pub use frame::{decode_frame, encode_frame, FrameError, FrameWriter};
pub use raw::RawJson;

/// The two formats of the client protocol (docs/protocol.md, "Protobuf").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Format {
    /// Newline-separated JSON in WebSocket text messages.
    #[default]
    Json,
    /// Varint-delimited protobuf in WebSocket binary messages.
    Protobuf,
}

impl Format {
    /// The metric label value.
    pub fn label(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Protobuf => "protobuf",
        }
    }
}
pub use reply::{
    ClientInfo, CommandResult, ConnectResult, DisconnectPush, HistoryResult, JoinPush, LeavePush,
    MessagePush, PresenceResult, PresenceStatsResult, Publication, Push, PushBody, RefreshPush,
    RefreshResult, Reply, RpcResult, StreamPosition, SubRefreshResult, SubscribePush,
    SubscribeResult, UnsubscribePush,
};
