// Helpers over the bindings `host bindgen go` generates for the handler
// world, shared by the Go plugins (and copied by `host new go`). It is
// compiled with the plugin's own files, as package export_wit_world.
//
// Every export must release its borrowed connection before it returns:
// `defer conn.Drop()` first thing, or wasmtime traps ("borrow handles still
// remain at the end of the call").
package export_wit_world

import (
	witTypes "go.bytecodealliance.org/pkg/wit/types"
	conns "wit_component/plughost_handler_connections"
)

// Result is what setup and handle return: ok, or an error message for the
// host's log.
type Result = witTypes.Result[witTypes.Unit, string]

// Ok is the successful Result.
func Ok() Result { return witTypes.Ok[witTypes.Unit, string](witTypes.Unit{}) }

// Err is a failed Result carrying msg.
func Err(msg string) Result { return witTypes.Err[witTypes.Unit, string](msg) }

// ErrorName is the WIT name of an error code.
func ErrorName(code conns.ErrorCode) string {
	switch code {
	case conns.ErrorCode_Closed:
		return "closed"
	case conns.ErrorCode_TimedOut:
		return "timed-out"
	case conns.ErrorCode_Reset:
		return "reset"
	case conns.ErrorCode_BrokenPipe:
		return "broken-pipe"
	case conns.ErrorCode_InvalidArgument:
		return "invalid-argument"
	default:
		return "other"
	}
}

// Read reads up to max bytes; an empty slice means the peer closed.
func Read(conn *conns.Connection, max uint32) ([]byte, *conns.ErrorCode) {
	r := conn.Read(max)
	if r.IsErr() {
		code := r.Err()
		return nil, &code
	}
	return r.Ok(), nil
}

// WriteAll writes all of data (the host loops until everything is sent).
func WriteAll(conn *conns.Connection, data []byte) *conns.ErrorCode {
	r := conn.Write(data)
	if r.IsErr() {
		code := r.Err()
		return &code
	}
	return nil
}
