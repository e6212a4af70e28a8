//! The example plugins that ship inside the `host` binary, so `--plugin echo`
//! works without a file. `build.rs` compiles them from `plugins/` to
//! lean components (`wasm32-unknown-unknown`) and leaves copies in
//! `target/plugins/`.

/// A plugin compiled into the binary.
#[derive(Debug, Clone, Copy)]
pub struct Builtin {
    /// The name users pass to `--plugin`.
    pub name: &'static str,
    /// One line describing what it does.
    pub summary: &'static str,
    /// The component's bytes.
    pub bytes: &'static [u8],
}

/// Every built-in plugin.
pub const BUILTINS: &[Builtin] = &[
    Builtin {
        name: "echo",
        summary: "returns exactly the bytes it receives",
        bytes: include_bytes!(concat!(env!("OUT_DIR"), "/echo.wasm")),
    },
    Builtin {
        name: "bot10086",
        summary: "the 10086 customer-service bot (0 = human, exit = hang up)",
        bytes: include_bytes!(concat!(env!("OUT_DIR"), "/bot10086.wasm")),
    },
    Builtin {
        name: "http-hello",
        summary: "HTTP/1.1 \"Hello, World!\" with keep-alive and pipelining",
        bytes: include_bytes!(concat!(env!("OUT_DIR"), "/http-hello.wasm")),
    },
    Builtin {
        name: "chat",
        summary: "a chat room: /nick NAME, each line goes to everyone else (protocol world)",
        bytes: include_bytes!(concat!(env!("OUT_DIR"), "/chat.wasm")),
    },
    Builtin {
        name: "counter",
        summary: "answers `visit N` from a counter in the shared store (needs --store)",
        bytes: include_bytes!(concat!(env!("OUT_DIR"), "/counter.wasm")),
    },
    Builtin {
        name: "handler-chat",
        summary: "the chat room with a handler per client, through a store topic (needs --store)",
        bytes: include_bytes!(concat!(env!("OUT_DIR"), "/handler-chat.wasm")),
    },
    Builtin {
        name: "proto-echo",
        summary: "echo from one instance serving every connection (protocol world)",
        bytes: include_bytes!(concat!(env!("OUT_DIR"), "/proto-echo.wasm")),
    },
    Builtin {
        name: "proto-http-hello",
        summary: "http-hello from one instance serving every connection (protocol world)",
        bytes: include_bytes!(concat!(env!("OUT_DIR"), "/proto-http-hello.wasm")),
    },
    Builtin {
        name: "udp-echo",
        summary: "UDP: sends every datagram back (datagram-handler world; use with --udp)",
        bytes: include_bytes!(concat!(env!("OUT_DIR"), "/udp-echo.wasm")),
    },
];

/// Looks up a built-in plugin by name.
pub fn find(name: &str) -> Option<&'static Builtin> {
    BUILTINS.iter().find(|b| b.name == name)
}

/// The names of all built-ins, for messages.
pub fn names() -> String {
    BUILTINS
        .iter()
        .map(|b| b.name)
        .collect::<Vec<_>>()
        .join(", ")
}
