//! Raw bytes that are not a valid protobuf get an error status; the hub keeps serving.

use std::sync::Arc;

use bauxite_dispatch_api::client::connect;
use bauxite_dispatch_api::client::tls::{PinnedCa, pinned_config};
use bytes::{Buf, BufMut};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::{Code, Status};

use crate::common::HubProc;

#[derive(Default)]
struct Raw;

impl Encoder for Raw {
    type Item = Vec<u8>;
    type Error = Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for Raw {
    type Item = Vec<u8>;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        let bytes = src.copy_to_bytes(src.remaining());
        Ok(Some(bytes.to_vec()))
    }
}

impl Codec for Raw {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = Raw;
    type Decoder = Raw;
    fn encoder(&mut self) -> Raw {
        Raw
    }
    fn decoder(&mut self) -> Raw {
        Raw
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_messages_get_an_error_status_not_a_crash() {
    let tmp = tempfile::tempdir().unwrap();
    let mut hub = HubProc::start(&tmp.path().join("hub"));
    let (token, _) = hub.token(&[]);
    let channel = connect(
        &hub.addr,
        pinned_config(Arc::new(PinnedCa::new(token.ca))).unwrap(),
    )
    .await
    .unwrap();
    let garbage: [&[u8]; 4] = [
        &[0xff; 64],                           // invalid tag / varint
        &[0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f], // length-delimited field far longer than the message
        &[0x12, 0x03, 0x01],                   // truncated bytes field
        &[0x0a, 0x02, 0xc3, 0x28],             // token_id that is not UTF-8
    ];
    for bytes in garbage {
        let mut grpc = tonic::client::Grpc::new(channel.clone());
        grpc.ready().await.unwrap();
        let path = http::uri::PathAndQuery::from_static(
            "/bauxite.dispatch.node.v1.ProvisioningService/ProvisionNode",
        );
        let status = grpc
            .unary(tonic::Request::new(bytes.to_vec()), path, Raw)
            .await
            .unwrap_err();
        assert!(
            matches!(status.code(), Code::Internal | Code::InvalidArgument),
            "{status:?}"
        );
    }
    // A well-formed message with wrong field sizes: INVALID_ARGUMENT naming the field.
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.unwrap();
    let path = http::uri::PathAndQuery::from_static(
        "/bauxite.dispatch.node.v1.ProvisioningService/ProvisionNode",
    );
    let wrong_size =
        prost::Message::encode_to_vec(&bauxite_dispatch_api::proto::node::ProvisionRequest {
            token_id: token.id.to_string(),
            token_secret: vec![1, 2, 3],
            ..Default::default()
        });
    let status = grpc
        .unary(tonic::Request::new(wrong_size), path, Raw)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("token_secret"), "{status:?}");

    assert!(hub.alive(), "the hub survived");
    // And still provisions.
    hub.join(&token, 1).await.unwrap();
}
