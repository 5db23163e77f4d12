//! One request of the HTTP and gRPC transports through its parser: an
//! `/emulation` body (JSON or protobuf) and the commands it carries, a
//! unidirectional ConnectRequest (JSON or protobuf), a server batch through
//! every response framing, protobuf replies through the gRPC push
//! extraction; see `herald_gateway::fuzzing::transport_request`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = herald_gateway::fuzzing::transport_request(data);
});
