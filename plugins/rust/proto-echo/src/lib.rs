//! The echo plugin in the protocol world: one instance serves every
//! connection and sends back exactly the bytes each one sends
//! (binary-safe), until the client closes its side.
//!
//! A client that sends faster than it reads is paused, as a blocking
//! `sendall` would pause it: when an echo cannot go out at once, reading
//! from that client stops until its output has drained.

use plughost_protocol::{Protocol, Transport};

/// Echoes every byte back.
pub struct Echo;

impl Protocol for Echo {
    fn init() -> Result<Self, String> {
        Ok(Echo)
    }

    fn data_received(&mut self, t: Transport, data: &[u8]) {
        match t.write(data) {
            Ok(()) if t.buffered() > 0 => t.pause_reading(),
            Ok(()) => {}
            // Paused at the first buffered byte, a client cannot fill its
            // buffer; a closed one needs nothing more.
            Err(_) => {}
        }
    }

    fn write_drained(&mut self, t: Transport) {
        t.resume_reading();
    }
}

plughost_protocol::export!(Echo);

#[cfg(test)]
mod tests {
    use super::*;
    use plughost_protocol::testing::Harness;

    #[test]
    fn every_client_gets_its_own_bytes_back() {
        let mut echo = Harness::<Echo>::start().unwrap();
        let (a, b) = (echo.connect(), echo.connect());
        echo.receive(a, b"\0\xffone");
        echo.receive(b, b"two");
        assert_eq!(echo.take_output(a), b"\0\xffone");
        assert_eq!(echo.take_output(b), b"two");
    }
}
