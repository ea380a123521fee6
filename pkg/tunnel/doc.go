// Package tunnel owns the tunnels between gateways: the small versioned frames that open each tunnel connection
// (codec.go) and the pools of idle, authenticated tunnel connections kept per link (pool.go).
//
// A tunnel carries exactly one client connection. Its first bytes are a Request naming the flow, routing key and
// the destination and source sites; the far end replies with an Answer, ok or refused with a Reason. After the
// Answer the connection carries raw client bytes both ways. The decoders read exactly one frame and never a byte
// more, so the caller can hand the socket to the data path (splice or sockmap) with nothing left stranded in a
// buffer.
//
// The codec is pure: it reads from an io.Reader and appends to a byte slice, and knows nothing of sockets or time.
package tunnel
