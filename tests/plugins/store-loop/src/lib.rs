//! Bench plugin (the `store` workload of `host/benches/loopback.rs`): for
//! every request line `N` it increments the key `n` of the store's bucket
//! `bench` N times, one store call each, and answers `done V` (the key's
//! value after the last). So the client times store calls made from a
//! plugin in a loop, on one connection. A store error is answered
//! `error: …` and ends the connection.

use plughost_sdk::{Conn, Handler, store};

/// The plugin.
pub struct StoreLoop;

impl Handler for StoreLoop {
    fn handle(conn: &mut Conn) -> Result<(), String> {
        let bucket = store::open("bench").map_err(|e| e.to_string());
        while let Some(line) = conn.read_line(64)? {
            let reply = match (
                &bucket,
                String::from_utf8_lossy(&line).trim().parse::<u64>(),
            ) {
                (Err(err), _) => Err(err.clone()),
                (_, Err(err)) => Err(format!("not a count: {err}")),
                (Ok(bucket), Ok(n)) => (0..n)
                    .try_fold(0, |_, _| bucket.increment("n", 1))
                    .map_err(|e| e.to_string()),
            };
            match reply {
                Ok(value) => conn.write_all(format!("done {value}\n").as_bytes())?,
                Err(err) => {
                    conn.write_all(format!("error: {err}\n").as_bytes())?;
                    return Err(err);
                }
            }
        }
        Ok(())
    }
}

plughost_sdk::export!(StoreLoop);
