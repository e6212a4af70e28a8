// The echo plugin in Go: returns exactly the bytes it receives
// (binary-safe), until the client closes its side.
package export_wit_world

import (
	conns "wit_component/plughost_handler_connections"
)

// How much one read asks for.
const chunk = 64 * 1024

func Setup(conn *conns.Connection) Result {
	defer conn.Drop()
	return Ok()
}

func Handle(conn *conns.Connection) Result {
	defer conn.Drop()
	for {
		data, err := Read(conn, chunk)
		if err != nil {
			return Err("read: " + ErrorName(*err))
		}
		if len(data) == 0 {
			return Ok() // peer closed
		}
		if err := WriteAll(conn, data); err != nil {
			return Err("write: " + ErrorName(*err))
		}
	}
}

func Finish(conn *conns.Connection) {
	conn.Drop()
}
