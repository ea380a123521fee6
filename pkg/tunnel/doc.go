// Package tunnel owns the wire formats between gateways, in two files:
//
//   - frame.go: the stream frames a link connection carries once authenticated (FrameHeader,
//     data, window, open, answer, reset, ping, link and move frames) and the link preface that
//     names their version and each stream's window.
//   - codec.go: the small versioned frames of the connection protocol: the Request a stream's
//     open carries (flow, routing key, destination and source sites), the Answer (ok, or
//     refused with a Reason), and the Attach that is the first and only frame on a tunnel
//     taking over a stream moved off its link connection.
//
// The decoders read exactly one frame and never a byte more, so after an Attach the caller
// can hand the socket to the data path (splice or sockmap) with nothing left stranded in a
// buffer. The pools of tunnel connections are pkg/links' (pool.go there).
//
// The codecs are pure: they read from an io.Reader or a byte slice and append to a byte
// slice, and know nothing of sockets or time.
package tunnel
