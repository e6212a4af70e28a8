//! The counter plugin (the `handler` world, with a shared store): each
//! connection increments the key `visits` of the store's `default` bucket
//! and is answered `visit N\n`, then closed. N is unique and increasing
//! across every connection of every host process sharing the store
//! (`--store memory` within one process, `--store redis://…` across
//! processes and machines).
//!
//! Without a store (`host run --plugin counter` alone) the client is told
//! `error: this listener has no store (host run --store)` and the
//! connection ends with that error in the host's log.

use plughost_sdk::{Conn, Handler, store};

/// The bucket and key counted.
pub const BUCKET: &str = "default";
/// The key counted.
pub const KEY: &str = "visits";

/// Counts one visit per connection.
pub struct Counter;

impl Handler for Counter {
    fn handle(conn: &mut Conn) -> Result<(), String> {
        let counted = store::open(BUCKET).and_then(|bucket| bucket.increment(KEY, 1));
        match counted {
            Ok(n) => Ok(conn.write_all(format!("visit {n}\n").as_bytes())?),
            Err(err) => {
                conn.write_all(format!("error: {err}\n").as_bytes())?;
                Err(err.to_string())
            }
        }
    }
}

plughost_sdk::export!(Counter);

#[cfg(test)]
mod tests {
    use super::*;
    use plughost_sdk::testing::Script;

    #[test]
    fn each_connection_is_the_next_visit() {
        store::testing::set_available(true);
        for n in 1..=3 {
            let mut client = Script::new([&b""[..]]);
            client.run::<Counter>().unwrap();
            assert_eq!(client.written(), format!("visit {n}\n").as_bytes());
        }
    }

    #[test]
    fn without_a_store_the_client_is_told() {
        store::testing::set_available(false);
        let mut client = Script::new([&b""[..]]);
        let err = client.run::<Counter>().unwrap_err();
        assert!(err.contains("no store"), "{err}");
        assert!(String::from_utf8_lossy(client.written()).starts_with("error: "));
    }
}
