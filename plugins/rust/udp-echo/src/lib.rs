//! The UDP echo plugin (world `datagram-handler`, like socketserver's
//! `UDPServer` echo example): every datagram goes back to its sender.
//!
//! It uses wit-bindgen directly: the SDK covers the stream world.

#![cfg(target_arch = "wasm32")]

wit_bindgen::generate!({ world: "datagram-handler", path: "../../../wit", generate_all });

struct UdpEcho;

impl Guest for UdpEcho {
    fn handle(data: Vec<u8>, _sender: Peer) -> Result<Vec<Vec<u8>>, String> {
        Ok(vec![data])
    }
}

export!(UdpEcho);
