//! The `guests` workload: the Python and JavaScript `proto-echo` guests
//! (one instance of CPython or SpiderMonkey serving every connection)
//! against the seeds' CPython `socketserver.ThreadingTCPServer` echo
//! (`socketserver_echo.py`), which is this workload's reference (1.00):
//! connection churn, and many idle connections (RSS above start-up, i.e.
//! after the first connection started the instance). Beside them, for
//! comparison, the same languages' and Go's `handler`-world echo (an
//! instance per connection), whose idle connections are held in a smaller number
//! (`BENCH_GUEST_HANDLER_IDLE`: each holds a whole runtime), and the Rust
//! `proto-echo`. The guests are `target/guests/<language>-<plugin>.wasm`,
//! built by `scripts/build-guests.sh`; a row whose file is missing is
//! left out with a note.

use std::path::PathBuf;

use crate::Settings;
use crate::idle::{self, Idle};
use crate::load;
use crate::report::Table;
use crate::targets::{Server, guest, which};
use crate::workloads::{
    CHURN_CLIENTS, PYTHON_ROW, SPREAD, Target, churn_extras, churn_with_cpu, measure_all,
    start_host,
};

/// The idle target for a protocol-world guest: MiB above start-up with
/// 10,000 connections held.
const IDLE_TARGET_MIB: f64 = 64.0;

/// One guest under test.
struct Guest {
    /// The row's name.
    name: String,
    /// Its component.
    path: PathBuf,
    /// Whether it is a protocol-world guest (else handler world).
    protocol: bool,
}

/// The guests that exist, and notes on those that do not.
fn guests() -> (Vec<Guest>, Vec<String>) {
    let mut found = Vec::new();
    let mut notes = Vec::new();
    for (file, name, protocol) in [
        (
            "python-proto-echo.wasm",
            "host, python proto-echo (protocol world)",
            true,
        ),
        (
            "js-proto-echo.wasm",
            "host, js proto-echo (protocol world)",
            true,
        ),
        (
            "python-echo.wasm",
            "host, python echo (handler world)",
            false,
        ),
        ("js-echo.wasm", "host, js echo (handler world)", false),
        ("go-echo.wasm", "host, go echo (handler world)", false),
    ] {
        match guest(file) {
            Ok(path) => found.push(Guest {
                name: name.to_string(),
                path,
                protocol,
            }),
            Err(why) => notes.push(format!("{name}: skipped, {why}")),
        }
    }
    (found, notes)
}

fn start_guest(guest: &Guest, settings: &Settings) -> Target {
    let path = guest.path.to_string_lossy();
    start_host(&guest.name, &["--plugin", &path], settings)
}

fn start_python(settings: &Settings) -> Target {
    let server = match which("python3") {
        Some(python) => Server::python_echo(&python, &settings.placement),
        None => Err(anyhow::anyhow!("python3 is not installed")),
    };
    (PYTHON_ROW.to_string(), server)
}

/// Churn and idle connections for the Python and JavaScript guests.
pub fn guests_workload(settings: &Settings) {
    let (guests, notes) = guests();
    eprintln!("guests: churn");
    let mut churn = Table::new(
        &format!(
            "guests, connection churn: connect, {} B echo, close; {CHURN_CLIENTS} client threads",
            load::MESSAGE
        ),
        "connections/s, higher is better; ratio to the Python socketserver echo",
        &["errors", "µs CPU/conn", "srv CPU", SPREAD],
    );
    for note in &notes {
        churn.note(note.clone());
    }
    let mut targets = vec![start_python(settings)];
    targets.extend(guests.iter().map(|g| start_guest(g, settings)));
    targets.push(start_host(
        "host, wasm proto-echo (Rust, protocol world)",
        &["--plugin", "proto-echo"],
        settings,
    ));
    measure_all(
        &mut churn,
        &targets,
        settings.rounds,
        |server| churn_with_cpu(server, settings.duration),
        |(figure, _)| figure.rate,
        |table, name, (figure, cpu), spread| {
            table.row(name, figure.rate, churn_extras(&figure, cpu, spread));
        },
    );
    drop(targets);
    churn.print();

    let count = settings.idle_conns;
    let handler_count = settings.guest_handler_idle;
    eprintln!("guests: idle");
    let mut table = idle::held_table(&format!(
        "guests, idle connections: {count} held (socketserver, protocol world), \
         {handler_count} (handler world)"
    ));
    table.note(idle::raise_fd_limit(count as u64 + 1024));
    table.note(idle::held_note());
    for note in &notes {
        table.note(note.clone());
    }
    let mut starts: Vec<Box<dyn Fn() -> Target + '_>> = vec![Box::new(|| start_python(settings))];
    for guest in guests.iter().filter(|g| g.protocol) {
        starts.push(Box::new(move || start_guest(guest, settings)));
    }
    let held = idle::hold_each(&mut table, starts, count);
    for (name, figures) in &held {
        if name == PYTHON_ROW {
            continue;
        }
        table.note(match figures {
            Some(idle) => target_note(name, idle, count),
            None => format!("{name}: target of ≤ {IDLE_TARGET_MIB:.0} MiB NOT met: it failed"),
        });
    }
    if handler_count > 0 {
        let starts: Vec<Box<dyn Fn() -> Target + '_>> = guests
            .iter()
            .filter(|g| !g.protocol)
            .map(|guest| -> Box<dyn Fn() -> Target + '_> {
                Box::new(move || start_guest(guest, settings))
            })
            .collect();
        idle::hold_each(&mut table, starts, handler_count);
    } else {
        table.note("handler-world guests: not held (BENCH_GUEST_HANDLER_IDLE=0)");
    }
    table.print();
}

/// Whether a protocol-world guest met the idle target.
fn target_note(name: &str, idle: &Idle, count: usize) -> String {
    let growth = idle.growth_mib();
    let verdict = if !idle.all_answered(count) {
        "NOT met: not every connection was answered"
    } else if growth <= IDLE_TARGET_MIB {
        "met"
    } else {
        "NOT met"
    };
    format!(
        "{name}: {growth:.1} MiB above start-up with {count} held: target of ≤ \
         {IDLE_TARGET_MIB:.0} MiB {verdict}"
    )
}
