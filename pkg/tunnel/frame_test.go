package tunnel

import (
	"bytes"
	"errors"
	"testing"
)

var streamRequest = Request{FlowID: 7, RoutingKey: "db", DestSite: "east", SourceSite: "west"}

func TestStreamFramesRoundTrip(t *testing.T) {
	open, err := AppendOpen(nil, 3, streamRequest, []byte("first"))
	if err != nil {
		t.Fatal(err)
	}
	h, err := ParseFrameHeader(open)
	if err != nil || h.Type != FrameOpen || h.Stream != 3 || int(h.Length) != len(open)-FrameHeaderLen {
		t.Fatalf("open header %+v, %v", h, err)
	}
	req, first, err := ParseOpen(open[FrameHeaderLen:])
	if err != nil || req != streamRequest || string(first) != "first" {
		t.Fatalf("open %+v %q %v", req, first, err)
	}

	ans := Answer{Status: StatusRefused, Reason: ReasonBackendTimeout, Message: "slow"}
	b := AppendAnswerFrame(nil, 4, ans)
	if h, err := ParseFrameHeader(b); err != nil || h.Type != FrameAnswer || h.Stream != 4 {
		t.Fatalf("answer header %+v, %v", h, err)
	}
	if got, err := ParseAnswerFrame(b[FrameHeaderLen:]); err != nil || got != ans {
		t.Fatalf("answer %+v, %v", got, err)
	}

	w := AppendWindow(nil, 5, 65536)
	if got, err := ParseWindow(w[FrameHeaderLen:]); err != nil || got != 65536 {
		t.Fatalf("window %d, %v", got, err)
	}

	m := AppendMove(nil, 6, 1<<40, 0xfeedface)
	if h, err := ParseFrameHeader(m); err != nil || h.Type != FrameMove {
		t.Fatalf("move header %+v, %v", h, err)
	}
	if off, tok, err := ParseMove(m[FrameHeaderLen:]); err != nil || off != 1<<40 || tok != 0xfeedface {
		t.Fatalf("move %d %#x %v", off, tok, err)
	}

	p := AppendPreface(nil, 256<<10)
	if w, err := ParsePreface(p); err != nil || w != 256<<10 {
		t.Fatalf("preface %d, %v", w, err)
	}
}

func TestFrameHeaderRejects(t *testing.T) {
	hdr := func(typ FrameType, flags uint8, stream, length uint32) []byte {
		return AppendFrameHeader(nil, FrameHeader{Type: typ, Flags: flags, Stream: stream, Length: length})
	}
	for name, tc := range map[string]struct {
		b    []byte
		want error
	}{
		"short":                  {[]byte{1, 0, 0}, ErrMalformed},
		"type 0":                 {hdr(0, 0, 1, 0), ErrMalformed},
		"unknown type":           {hdr(FrameMove+1, 0, 1, 0), ErrMalformed},
		"too long":               {hdr(FrameData, 0, 1, MaxPayload+1), ErrTooLarge},
		"data on stream 0":       {hdr(FrameData, 0, 0, 1), ErrMalformed},
		"ping on a stream":       {hdr(FramePing, 0, 1, 8), ErrMalformed},
		"link on a stream":       {hdr(FrameLink, 0, 9, 8), ErrMalformed},
		"fin on a window":        {hdr(FrameWindow, FlagFIN, 1, 4), ErrMalformed},
		"unknown data flag":      {hdr(FrameData, 0x80, 1, 0), ErrMalformed},
		"ack on data":            {hdr(FrameData, FlagAck, 1, 0), ErrMalformed},
		"window of 3 bytes":      {hdr(FrameWindow, 0, 1, 3), ErrMalformed},
		"ping of 9 bytes":        {hdr(FramePing, 0, 0, 9), ErrMalformed},
		"move without an offset": {hdr(FrameMove, 0, 1, 7), ErrMalformed},
		"move with a long token": {hdr(FrameMove, 0, 1, 20), ErrMalformed},
	} {
		if _, err := ParseFrameHeader(tc.b); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", name, err, tc.want)
		}
	}
	if _, err := ParseWindow([]byte{0, 0, 0, 0}); !errors.Is(err, ErrMalformed) {
		t.Errorf("window of 0: %v", err)
	}
	if _, _, err := ParseOpen(nil); !errors.Is(err, ErrMalformed) {
		t.Errorf("empty open: %v", err)
	}
	if _, err := ParseAnswerFrame(append(Answer{}.Append(nil), 'x')); !errors.Is(err, ErrMalformed) {
		t.Errorf("answer with trailing bytes: %v", err)
	}
	if _, err := ParsePreface([]byte("SKMX\x02\x00\x04\x00\x00")); !errors.Is(err, ErrVersion) {
		t.Errorf("preface of version 2: %v", err)
	}
	if _, err := ParsePreface([]byte("HTTP/1.1 ")); !errors.Is(err, ErrMalformed) {
		t.Errorf("foreign preface: %v", err)
	}
	if _, err := ParsePreface(AppendPreface(nil, 1)); !errors.Is(err, ErrMalformed) {
		t.Errorf("window of 1 byte: %v", err)
	}
}

// FuzzStreamFrame feeds arbitrary bytes to the header and payload decoders the multiplexer
// uses: they must never panic, fail only with the errors callers branch on, and whatever
// they accept must encode back to the same bytes.
func FuzzStreamFrame(f *testing.F) {
	open, _ := AppendOpen(nil, 3, streamRequest, []byte("first"))
	f.Add(open)
	f.Add(AppendAnswerFrame(nil, 4, Answer{Status: StatusOK}))
	f.Add(AppendWindow(nil, 5, 1))
	f.Add(AppendMove(nil, 6, 9, 42))
	f.Add(AppendFrameHeader(nil, FrameHeader{Type: FramePing, Length: 8}))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		h, err := ParseFrameHeader(data)
		if err != nil {
			if !knownError(err) {
				t.Fatalf("unexpected error kind: %v", err)
			}
			return
		}
		if enc := AppendFrameHeader(nil, h); !bytes.Equal(enc, data[:FrameHeaderLen]) {
			t.Fatalf("header re-encoded %v, was %v", enc, data[:FrameHeaderLen])
		}
		p := data[FrameHeaderLen:]
		if len(p) > int(h.Length) {
			p = p[:h.Length]
		}
		var reenc []byte
		switch h.Type {
		case FrameOpen:
			req, first, err := ParseOpen(p)
			if err == nil {
				reenc, err = AppendOpen(nil, h.Stream, req, first)
				if err != nil {
					t.Fatalf("decoded open %+v does not encode: %v", req, err)
				}
			} else if !knownError(err) {
				t.Fatalf("open: unexpected error kind: %v", err)
			}
		case FrameAnswer:
			a, err := ParseAnswerFrame(p)
			if err == nil {
				reenc = AppendAnswerFrame(nil, h.Stream, a)
			} else if !knownError(err) {
				t.Fatalf("answer: unexpected error kind: %v", err)
			}
		case FrameWindow:
			c, err := ParseWindow(p)
			if err == nil {
				reenc = AppendWindow(nil, h.Stream, c)
			} else if !knownError(err) {
				t.Fatalf("window: unexpected error kind: %v", err)
			}
		case FrameMove:
			off, tok, err := ParseMove(p)
			if err == nil {
				reenc = AppendMove(nil, h.Stream, off, tok)
			} else if !knownError(err) {
				t.Fatalf("move: unexpected error kind: %v", err)
			}
		}
		if reenc != nil && !bytes.Equal(reenc, data[:FrameHeaderLen+len(p)]) && len(p) == int(h.Length) {
			t.Fatalf("type %d re-encoded %v, was %v", h.Type, reenc, data[:FrameHeaderLen+len(p)])
		}
	})
}
