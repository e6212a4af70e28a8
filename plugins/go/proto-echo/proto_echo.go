// The echo plugin in Go on plughost's protocol world (as
// plugins/rust/proto-echo): one instance serves every connection and sends
// back exactly the bytes each one sends (binary-safe), until the client
// closes its side.
//
// A client that sends faster than it reads is paused, as a blocking
// `sendall` would pause it: when an echo cannot go out at once, reading
// from that client stops until its output has drained.
//
// The exports are the functions of package export_wit_world that
// `host bindgen go --world protocol` expects; a transport is a uint64.
package export_wit_world

import (
	witTypes "go.bytecodealliance.org/pkg/wit/types"
	transports "wit_component/plughost_handler_transports"
)

func Init() witTypes.Result[witTypes.Unit, string] {
	return witTypes.Ok[witTypes.Unit, string](witTypes.Unit{})
}

func ConnectionMade(t uint64) {}

func DataReceived(t uint64, data []uint8) {
	// Refused whole (closed, or buffer-full): paused at the first buffered
	// byte, a client cannot fill its buffer, and a closed one needs
	// nothing more.
	if transports.Write(t, data).IsOk() && transports.Buffered(t) > 0 {
		transports.PauseReading(t)
	}
}

func WriteDrained(t uint64) {
	transports.ResumeReading(t)
}

func ConnectionLost(t uint64, reason transports.LostReason) {}

func TimerFired(timer uint64) {}

// MessageReceived is a message on a subscribed topic
// (plughost:handler/topics); echo subscribes to none, so it never runs.
func MessageReceived(topic string, message []uint8) {}
