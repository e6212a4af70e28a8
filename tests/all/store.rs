//! The shared store (`--store`): the built-in `counter` (handler world)
//! and `chat` (protocol world) against the memory backend and a real
//! Redis — atomic increments under concurrent connections, one counter
//! and one chat room across two host processes, Redis killed and
//! restarted under traffic, a reload that keeps the old instance's
//! subscription, and no store without the grant; and `handler-chat`, the
//! room in the handler world (`read-or-message`), held to the protocol
//! world chat's checks.

use std::collections::BTreeSet;
use std::fs;
use std::io::Read;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::thread;

use crate::support::admin::{admin_addr, wait_for_metric};
use crate::support::protocol::{
    LineClient, check_chat, check_chat_cuts_a_client_that_never_reads,
    check_chat_cuts_an_endless_line,
};
use crate::support::redis::Redis;
use crate::support::{Host, Mode, SOON, connect, rebuilt, temp_dir};

/// One `counter` visit: the whole reply.
fn visit(addr: SocketAddr) -> String {
    let mut stream = connect(addr);
    let mut reply = String::new();
    stream.read_to_string(&mut reply).expect("read the reply");
    reply
}

/// The number of a `visit N\n` reply.
fn visit_number(reply: &str) -> u64 {
    reply
        .strip_prefix("visit ")
        .and_then(|n| n.trim_end().parse().ok())
        .unwrap_or_else(|| panic!("not a visit: {reply:?}"))
}

fn counter(mode: Mode, store: &str) -> Host {
    Host::builder()
        .plugin("counter")
        .mode(mode)
        .args(&["--store", store, "--admin", "127.0.0.1:0"])
        .start()
}

/// `clients` threads making `each` visits to the hosts at `addrs` (in
/// turn); every number seen.
fn visits(addrs: &[SocketAddr], clients: usize, each: usize) -> Vec<u64> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let threads: Vec<_> = (0..clients)
        .map(|c| {
            let addrs = addrs.to_vec();
            let seen = Arc::clone(&seen);
            thread::spawn(move || {
                for i in 0..each {
                    let n = visit_number(&visit(addrs[(c + i) % addrs.len()]));
                    seen.lock().unwrap().push(n);
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("a client thread");
    }
    let mut seen = Arc::try_unwrap(seen).unwrap().into_inner().unwrap();
    seen.sort_unstable();
    seen
}

in_every_mode! {
    fn a_thousand_visits_from_fifty_clients_count_exactly_a_thousand(mode: Mode) {
        let host = counter(mode, "memory");
        let seen = visits(&[host.addr()], 50, 20);
        assert_eq!(seen, (1..=1000).collect::<Vec<u64>>());
        let admin = admin_addr(&host);
        wait_for_metric(
            admin,
            "plughost_store_operations_total{namespace=\"counter\",op=\"increment\",result=\"ok\"} 1000",
        );
    }
}

#[test]
fn without_a_store_grant_a_plugin_gets_none() {
    let host = Host::serving("counter", Mode::EventLoop);
    assert_eq!(
        visit(host.addr()),
        "error: this listener has no store (host run --store)\n"
    );
    host.expect_log("outcome=error", SOON);
    // The chat, which would share its room through the store, serves its
    // own members alone.
    let chat = Host::serving("chat", Mode::Shared);
    check_chat(&chat);
}

#[test]
fn the_chat_room_works_through_an_in_process_topic() {
    // Guest numbers come from the store and keep counting, so each check
    // (which expects guest1 first) gets a fresh host.
    let chat = || {
        Host::builder()
            .plugin("chat")
            .mode(Mode::Shared)
            .args(&["--store", "memory"])
            .start()
    };
    check_chat(&chat());
    let host = chat();
    check_chat_cuts_a_client_that_never_reads(&host);
    host.expect_log("grant: store memory", SOON);
}

#[test]
fn one_counter_across_two_processes_on_one_redis() {
    let Some(redis) = Redis::start() else {
        return;
    };
    let a = counter(Mode::EventLoop, &redis.url());
    let b = counter(Mode::Threads, &redis.url());
    let seen = visits(&[a.addr(), b.addr()], 10, 20);
    assert_eq!(seen, (1..=200).collect::<Vec<u64>>());
}

#[test]
fn one_chat_room_across_two_processes_on_one_redis() {
    let Some(redis) = Redis::start() else {
        return;
    };
    let chat = |_| {
        Host::builder()
            .plugin("chat")
            .mode(Mode::Shared)
            .args(&["--store", &redis.url()])
            .start()
    };
    let (host_a, host_b) = (chat(0), chat(1));
    let (mut a, b) = talk_across(&host_a, &host_b);
    drop(b);
    a.expect("* bob left");
}

/// Two hosts of one room on one Redis: a member of each joins (guest
/// numbers come from the store, unique across the hosts), they talk both
/// ways and B's member renames itself to `bob`. Returns the two members.
fn talk_across(host_a: &Host, host_b: &Host) -> (LineClient, LineClient) {
    let mut a = LineClient::connect(host_a.addr());
    a.expect("* welcome, guest1 (/nick NAME to rename)");
    let mut b = LineClient::connect(host_b.addr());
    b.expect("* welcome, guest2 (/nick NAME to rename)");
    a.expect("* guest2 joined");
    a.say("hello from A");
    b.expect("guest1: hello from A");
    b.say("/nick bob");
    b.expect("* you are now bob");
    a.expect("* guest2 is now bob");
    b.say("hi from B");
    a.expect("bob: hi from B");
    (a, b)
}

#[test]
fn redis_killed_mid_run_fails_calls_clearly_and_serving_recovers() {
    let Some(mut redis) = Redis::start() else {
        return;
    };
    let host = counter(Mode::EventLoop, &redis.url());
    assert_eq!(visit(host.addr()), "visit 1\n");
    let chat = Host::builder()
        .plugin("chat")
        .mode(Mode::Shared)
        .args(&["--store", &redis.url()])
        .start();
    let mut member = LineClient::connect(chat.addr());
    member.expect("* welcome, guest1 (/nick NAME to rename)");

    redis.kill();
    // Every visit fails at once with the reason; none hangs, none is
    // counted as a success.
    for _ in 0..5 {
        let reply = visit(host.addr());
        assert!(reply.starts_with("error: store unavailable: "), "{reply}");
    }
    host.expect_log_count("store unreachable", 1, SOON);
    // A chat line is not reported as sent to the room: the sender is told.
    member.say("anyone?");
    let notice = member.line();
    assert!(
        notice.starts_with("* only this host hears you: store unavailable"),
        "{notice}"
    );

    redis.restart();
    // The host tries again with backoff: visits succeed again (Redis came
    // back empty), and the recovery is logged once.
    let deadline = std::time::Instant::now() + SOON;
    loop {
        let reply = visit(host.addr());
        if reply.starts_with("visit ") {
            break;
        }
        assert!(reply.starts_with("error: store unavailable: "), "{reply}");
        assert!(
            std::time::Instant::now() < deadline,
            "the store never came back"
        );
        thread::sleep(std::time::Duration::from_millis(50));
    }
    host.expect_log("store reachable again", SOON);
    // Logged once for the whole outage (the log is read in order, so
    // every line before the recovery's is in).
    assert_eq!(host.log_count("store unreachable"), 1, "{}", host.logs());
    host.assert_no_host_panic("Redis outage");
    chat.assert_no_host_panic("Redis outage");
}

#[test]
fn a_reload_keeps_the_old_instances_subscription() {
    let dir = temp_dir("store-reload");
    let plugin = dir.join("chat.wasm");
    let original = fs::read(crate::support::example_plugin("chat.wasm")).expect("read chat");
    fs::write(&plugin, &original).expect("copy chat");
    let host = Host::builder()
        .plugin(&plugin)
        .mode(Mode::Shared)
        .args(&["--store", "memory"])
        .start();
    let mut old = LineClient::connect(host.addr());
    old.expect("* welcome, guest1 (/nick NAME to rename)");

    // A new build (a custom section appended), swapped in with SIGHUP.
    fs::write(&plugin, rebuilt(&original, "build-2")).expect("write the new build");
    host.signal(libc::SIGHUP);
    host.expect_log("swapped", SOON);

    // The new version's instance joins the same room through the topic;
    // the old one, still serving its client, still hears it.
    let mut new = LineClient::connect(host.addr());
    new.expect("* welcome, guest2 (/nick NAME to rename)");
    host.expect_log_count("protocol instance started", 2, SOON);
    old.expect("* guest2 joined");
    old.say("from the old version");
    new.expect("guest1: from the old version");
    new.say("from the new version");
    old.expect("guest2: from the new version");
}

#[test]
fn store_namespaces_keep_listeners_apart_unless_shared() {
    let dir = temp_dir("store-namespaces");
    let config = dir.join("host.toml");
    let write = |shared: bool| {
        let namespace = if shared {
            "store_namespace = \"visits\""
        } else {
            ""
        };
        fs::write(
            &config,
            format!(
                "store = \"memory\"\n\
                 [[listener]]\nname = \"a\"\naddress = \"127.0.0.1:0\"\nplugin = \"counter\"\n{namespace}\n\
                 [[listener]]\nname = \"b\"\naddress = \"127.0.0.1:0\"\nplugin = \"counter\"\n{namespace}\n"
            ),
        )
        .expect("write host.toml");
    };
    write(false);
    let apart = Host::builder()
        .config(&config)
        .mode(Mode::EventLoop)
        .start();
    let (a, b) = (apart.listener_addr("a"), apart.listener_addr("b"));
    assert_eq!(visit(a), "visit 1\n");
    assert_eq!(visit(b), "visit 1\n");
    drop(apart);
    write(true);
    let shared = Host::builder()
        .config(&config)
        .mode(Mode::EventLoop)
        .start();
    let (a, b) = (shared.listener_addr("a"), shared.listener_addr("b"));
    let seen: BTreeSet<String> = [visit(a), visit(b)].into_iter().collect();
    assert_eq!(seen, ["visit 1\n", "visit 2\n"].map(String::from).into());
}

fn handler_chat(mode: Mode, store: &str) -> Host {
    Host::builder()
        .plugin("handler-chat")
        .mode(mode)
        .args(&["--store", store])
        .start()
}

in_every_mode! {
    fn the_handler_world_chat_is_the_same_room(mode: Mode) {
        check_chat(&handler_chat(mode, "memory"));
        check_chat_cuts_an_endless_line(&handler_chat(mode, "memory"));
    }

    fn a_handler_chat_member_that_never_reads_never_slows_the_room(mode: Mode) {
        let host = handler_chat(mode, "memory");
        let addr = host.addr();
        let mut talker = LineClient::connect(addr);
        talker.expect("* welcome, guest1 (/nick NAME to rename)");
        // Reads its greeting, then nothing more.
        let mut lurker = LineClient::connect_with_small_buffer(addr);
        lurker.expect("* welcome, guest2 (/nick NAME to rename)");
        talker.expect("* guest2 joined");
        let mut reader = LineClient::connect(addr);
        reader.expect("* welcome, guest3 (/nick NAME to rename)");
        talker.expect("* guest3 joined");
        // Far more than the lurker's socket buffers and its 1,024 queued
        // messages hold: its handler waits on its writes, its queue drops
        // the oldest, and every line still reaches the reader, in order.
        let line = "x".repeat(4000);
        for round in 0..3000 {
            talker.say(&format!("{round} {line}"));
            assert_eq!(reader.line(), format!("guest1: {round} {line}"));
        }
        host.expect_log("a subscriber fell 1024 messages behind", SOON);
        drop(lurker);
        reader.expect("* guest2 left");
    }
}

#[test]
fn one_handler_world_room_across_two_processes_on_one_redis() {
    let Some(redis) = Redis::start() else {
        return;
    };
    let host_a = handler_chat(Mode::Threads, &redis.url());
    let host_b = handler_chat(Mode::EventLoop, &redis.url());
    let (mut a, mut b) = talk_across(&host_a, &host_b);
    // Names are reserved in the shared store: taken on the other host too.
    b.say("/nick guest1");
    b.expect("* guest1 is taken");
    b.say("/who");
    b.expect("* here: bob, guest1");
    drop(b);
    a.expect("* bob left");
}

#[test]
fn without_a_store_the_handler_chat_says_so() {
    let host = Host::serving("handler-chat", Mode::EventLoop);
    let mut client = LineClient::connect(host.addr());
    client.expect("error: this listener has no store (host run --store)");
    assert!(client.is_closed());
}
