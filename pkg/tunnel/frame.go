package tunnel

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
)

// Stream frames: what a link connection carries once authenticated. Every frame has a fixed
// 10-byte header, big endian:
//
//	0: frame type (1 byte)
//	1: flags (1 byte)
//	2: stream id (uint32; 0 is the link connection itself: pings and control messages)
//	6: payload length (uint32, at most MaxPayload)
//	10: payload
//
// The version is not repeated per frame: the link connection's preface names it once
// (LinkPreface), and the request inside an OPEN carries the request codec's own.
const (
	FrameHeaderLen = 10
	// MaxPayload bounds what a peer can make us buffer for one frame. Data frames are far
	// smaller (the multiplexer cuts them at its frame size); control messages (link state)
	// are the largest.
	MaxPayload = 1 << 20
)

// FrameType says what a stream frame does.
type FrameType uint8

// Frame types. Values are stable once released; new ones are appended.
const (
	FrameData   FrameType = 1 // stream bytes; FlagFIN: the sender's direction ends after them
	FrameWindow FrameType = 2 // payload: uint32 bytes of credit the receiver grants
	FrameOpen   FrameType = 3 // payload: an encoded Request, then the client's first bytes
	FrameAnswer FrameType = 4 // payload: an encoded Answer
	FrameReset  FrameType = 5 // the stream is aborted both ways; payload: optional text
	FramePing   FrameType = 6 // stream 0; payload: 8 opaque bytes; FlagAck: the answer to one
	FrameLink   FrameType = 7 // stream 0; payload: a link-level control message (links package)
	FrameMove   FrameType = 8 // payload: uint64 offset, uint64 tunnel token: the direction continues there
)

// Frame flags.
const (
	FlagFIN = 1 << 0 // on Data: no more bytes in this direction
	FlagAck = 1 << 1 // on Ping: this is the answer
)

// FrameHeader is a decoded frame header.
type FrameHeader struct {
	Type   FrameType
	Flags  uint8
	Stream uint32
	Length uint32
}

// AppendFrameHeader appends h's encoding to b.
func AppendFrameHeader(b []byte, h FrameHeader) []byte {
	b = append(b, byte(h.Type), h.Flags)
	b = binary.BigEndian.AppendUint32(b, h.Stream)
	return binary.BigEndian.AppendUint32(b, h.Length)
}

// ParseFrameHeader decodes a header from the first FrameHeaderLen bytes of b. It checks what
// a header alone can show: a known type, known flags, the length bound, and stream 0 for
// exactly the link-level types. It never reads the payload.
func ParseFrameHeader(b []byte) (FrameHeader, error) {
	if len(b) < FrameHeaderLen {
		return FrameHeader{}, fmt.Errorf("frame header of %d bytes, want %d: %w", len(b), FrameHeaderLen, ErrMalformed)
	}
	h := FrameHeader{
		Type:   FrameType(b[0]),
		Flags:  b[1],
		Stream: binary.BigEndian.Uint32(b[2:]),
		Length: binary.BigEndian.Uint32(b[6:]),
	}
	if h.Type < FrameData || h.Type > FrameMove {
		return h, fmt.Errorf("frame type %d: %w", h.Type, ErrMalformed)
	}
	if h.Length > MaxPayload {
		return h, fmt.Errorf("frame payload length %d, limit %d: %w", h.Length, MaxPayload, ErrTooLarge)
	}
	linkLevel := h.Type == FramePing || h.Type == FrameLink
	if linkLevel != (h.Stream == 0) {
		return h, fmt.Errorf("frame type %d on stream %d: %w", h.Type, h.Stream, ErrMalformed)
	}
	allowed := uint8(0)
	switch h.Type {
	case FrameData:
		allowed = FlagFIN
	case FramePing:
		allowed = FlagAck
	}
	if h.Flags&^allowed != 0 {
		return h, fmt.Errorf("frame type %d with flags %#02x: %w", h.Type, h.Flags, ErrMalformed)
	}
	if err := checkFixedLength(h); err != nil {
		return h, err
	}
	return h, nil
}

func checkFixedLength(h FrameHeader) error {
	want := -1
	switch h.Type {
	case FrameWindow:
		want = 4
	case FramePing:
		want = 8
	case FrameMove:
		want = 16
	}
	if want >= 0 && int(h.Length) != want {
		return fmt.Errorf("frame type %d with payload of %d bytes, want %d: %w", h.Type, h.Length, want, ErrMalformed)
	}
	return nil
}

// AppendWindow appends a window frame granting credit bytes on stream id.
func AppendWindow(b []byte, id uint32, credit uint32) []byte {
	b = AppendFrameHeader(b, FrameHeader{Type: FrameWindow, Stream: id, Length: 4})
	return binary.BigEndian.AppendUint32(b, credit)
}

// ParseWindow decodes a window frame's payload (already length-checked by ParseFrameHeader).
func ParseWindow(p []byte) (uint32, error) {
	if len(p) != 4 {
		return 0, fmt.Errorf("window payload of %d bytes: %w", len(p), ErrMalformed)
	}
	c := binary.BigEndian.Uint32(p)
	if c == 0 {
		return 0, fmt.Errorf("window of 0 bytes: %w", ErrMalformed)
	}
	return c, nil
}

// AppendOpen validates req and appends an open frame for stream id carrying req and, behind
// it, first (the client's first bytes, which the caller has bounded).
func AppendOpen(b []byte, id uint32, req Request, first []byte) ([]byte, error) {
	start := len(b)
	b = AppendFrameHeader(b, FrameHeader{Type: FrameOpen, Stream: id})
	b, err := req.Append(b)
	if err != nil {
		return b[:start], err
	}
	b = append(b, first...)
	return finishPayload(b, start)
}

// ParseOpen decodes an open frame's payload into its request and the first bytes behind it
// (a subslice of p).
func ParseOpen(p []byte) (Request, []byte, error) {
	r := bytes.NewReader(p)
	req, err := ReadRequest(r)
	if err == io.EOF {
		return Request{}, nil, fmt.Errorf("open frame without a request: %w", ErrMalformed)
	}
	if err != nil {
		return Request{}, nil, err
	}
	return req, p[len(p)-r.Len():], nil
}

// AppendAnswerFrame appends an answer frame for stream id.
func AppendAnswerFrame(b []byte, id uint32, a Answer) []byte {
	start := len(b)
	b = AppendFrameHeader(b, FrameHeader{Type: FrameAnswer, Stream: id})
	b = a.Append(b)
	b, _ = finishPayload(b, start) // an answer is far below MaxPayload
	return b
}

// ParseAnswerFrame decodes an answer frame's payload.
func ParseAnswerFrame(p []byte) (Answer, error) {
	r := bytes.NewReader(p)
	a, err := ReadAnswer(r)
	if err == io.EOF {
		return Answer{}, fmt.Errorf("answer frame without an answer: %w", ErrMalformed)
	}
	if err != nil {
		return Answer{}, err
	}
	if r.Len() != 0 {
		return Answer{}, fmt.Errorf("%d bytes after the answer: %w", r.Len(), ErrMalformed)
	}
	return a, nil
}

// AppendMove appends a move frame: the sender's direction of stream id continues, after
// offset bytes on the stream, on the tunnel attached with token. Sent after the direction
// ended (offset is then where it ended), it asks the receiver to move its own direction.
func AppendMove(b []byte, id uint32, offset, token uint64) []byte {
	b = AppendFrameHeader(b, FrameHeader{Type: FrameMove, Stream: id, Length: 16})
	b = binary.BigEndian.AppendUint64(b, offset)
	return binary.BigEndian.AppendUint64(b, token)
}

// ParseMove decodes a move frame's payload.
func ParseMove(p []byte) (offset, token uint64, err error) {
	if len(p) != 16 {
		return 0, 0, fmt.Errorf("move payload of %d bytes, want 16: %w", len(p), ErrMalformed)
	}
	return binary.BigEndian.Uint64(p), binary.BigEndian.Uint64(p[8:]), nil
}

// finishPayload fills in the payload length of the frame that starts at b[start].
func finishPayload(b []byte, start int) ([]byte, error) {
	n := len(b) - start - FrameHeaderLen
	if n > MaxPayload {
		return b[:start], fmt.Errorf("frame payload of %d bytes, limit %d: %w", n, MaxPayload, ErrTooLarge)
	}
	binary.BigEndian.PutUint32(b[start+6:], uint32(n))
	return b, nil
}

// Link preface: the first bytes each side writes on a link connection after authentication,
// so a peer speaking another frame version is refused at once rather than misparsed. It also
// tells the receive window each of the sender's streams grants: the other side's initial
// credit per stream.
const (
	prefaceMagic   = "SKMX"
	StreamsVersion = 1
	PrefaceLen     = len(prefaceMagic) + 1 + 4
	// MinWindow keeps a peer from announcing a window so small that every frame needs a
	// window update.
	MinWindow = 4 << 10
)

// AppendPreface appends this version's link preface announcing window.
func AppendPreface(b []byte, window uint32) []byte {
	b = append(append(b, prefaceMagic...), StreamsVersion)
	return binary.BigEndian.AppendUint32(b, window)
}

// ParsePreface checks a peer's preface and returns the window it announces.
func ParsePreface(p []byte) (uint32, error) {
	n := len(prefaceMagic)
	if len(p) != PrefaceLen || string(p[:n]) != prefaceMagic {
		return 0, fmt.Errorf("link preface %q: %w", p, ErrMalformed)
	}
	if p[n] != StreamsVersion {
		return 0, fmt.Errorf("stream frame version %d, want %d: %w", p[n], StreamsVersion, ErrVersion)
	}
	w := binary.BigEndian.Uint32(p[n+1:])
	if w < MinWindow || w > MaxPayload*64 {
		return 0, fmt.Errorf("stream window %d, want %d..%d: %w", w, MinWindow, MaxPayload*64, ErrMalformed)
	}
	return w, nil
}
