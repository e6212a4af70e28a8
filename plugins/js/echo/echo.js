// The echo plugin in JavaScript: returns exactly the bytes it receives
// (binary-safe), until the client closes its side.
//
// Exports are the module's named exports. A `result<_, string>` export
// fails by throwing `{ payload: message }` (a plain Error would trap); an
// import that fails throws an error whose `payload` is the WIT error-code
// name ("closed", "reset", ...).

// How much one read asks for.
const CHUNK = 64 * 1024;

function fail(what, e) {
  return { payload: `${what}: ${e?.payload ?? e}` };
}

export function setup(conn) {}

export function handle(conn) {
  for (;;) {
    let data;
    try {
      data = conn.read(CHUNK);
    } catch (e) {
      throw fail("read", e);
    }
    if (data.length === 0) return; // peer closed
    try {
      conn.write(data);
    } catch (e) {
      throw fail("write", e);
    }
  }
}

export function finish(conn) {}
