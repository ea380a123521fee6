package tunnel

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

var (
	goldenRequest      = Request{FlowID: 0x0102030405060708, RoutingKey: "db", DestSite: "east", SourceSite: "west"}
	goldenRequestBytes = []byte{
		'S', 'K', 1, 1, 0, 21, // magic, version, type request, body length 21
		1, 2, 3, 4, 5, 6, 7, 8, // flow id
		2, 'd', 'b',
		4, 'e', 'a', 's', 't',
		4, 'w', 'e', 's', 't',
	}
	goldenAnswer      = Answer{Status: StatusRefused, Reason: ReasonBackendTimeout, Message: "timeout"}
	goldenAnswerBytes = []byte{
		'S', 'K', 1, 2, 0, 10, // magic, version, type answer, body length 10
		1, 3, // refused, backend-timeout
		7, 't', 'i', 'm', 'e', 'o', 'u', 't',
	}
)

func TestGoldenBytes(t *testing.T) {
	got, err := goldenRequest.Append(nil)
	if err != nil {
		t.Fatalf("Request.Append: %v", err)
	}
	if !bytes.Equal(got, goldenRequestBytes) {
		t.Errorf("Request.Append =\n%v, want\n%v", got, goldenRequestBytes)
	}
	if got := goldenAnswer.Append(nil); !bytes.Equal(got, goldenAnswerBytes) {
		t.Errorf("Answer.Append =\n%v, want\n%v", got, goldenAnswerBytes)
	}

	req, err := ReadRequest(bytes.NewReader(goldenRequestBytes))
	if err != nil || req != goldenRequest {
		t.Errorf("ReadRequest(golden) = %+v, %v; want %+v", req, err, goldenRequest)
	}
	ans, err := ReadAnswer(bytes.NewReader(goldenAnswerBytes))
	if err != nil || ans != goldenAnswer {
		t.Errorf("ReadAnswer(golden) = %+v, %v; want %+v", ans, err, goldenAnswer)
	}
}

func TestAppendKeepsPrefix(t *testing.T) {
	prefix := []byte("prefix")
	got, err := goldenRequest.Append(bytes.Clone(prefix))
	if err != nil {
		t.Fatal(err)
	}
	if want := append(bytes.Clone(prefix), goldenRequestBytes...); !bytes.Equal(got, want) {
		t.Errorf("Request.Append(prefix) = %q, want %q", got, want)
	}
	got = goldenAnswer.Append(bytes.Clone(prefix))
	if want := append(bytes.Clone(prefix), goldenAnswerBytes...); !bytes.Equal(got, want) {
		t.Errorf("Answer.Append(prefix) = %q, want %q", got, want)
	}
}

func TestRequestRoundTrip(t *testing.T) {
	tests := []Request{
		goldenRequest,
		{FlowID: 0, RoutingKey: "k", DestSite: "a", SourceSite: "b"},
		{FlowID: ^uint64(0), RoutingKey: strings.Repeat("~", 200), DestSite: strings.Repeat("d", 63), SourceSite: strings.Repeat("s", 63)},
		{FlowID: 42, RoutingKey: "backend:8080/v1?x=y", DestSite: "site-ü", SourceSite: "west.example"},
	}
	for _, want := range tests {
		b, err := want.Append(nil)
		if err != nil {
			t.Fatalf("Append(%+v): %v", want, err)
		}
		got, err := ReadRequest(iotest.OneByteReader(bytes.NewReader(b)))
		if err != nil {
			t.Fatalf("ReadRequest(%+v): %v", want, err)
		}
		if got != want {
			t.Errorf("round trip = %+v, want %+v", got, want)
		}
	}
}

func TestAnswerRoundTrip(t *testing.T) {
	long := strings.Repeat("m", 255)
	tests := []struct {
		in, want Answer
	}{
		{Answer{}, Answer{}},
		{goldenAnswer, goldenAnswer},
		{Answer{Status: StatusRefused, Reason: ReasonBadRequest, Message: long}, Answer{Status: StatusRefused, Reason: ReasonBadRequest, Message: long}},
		// A newer peer's reason survives decoding.
		{Answer{Status: StatusRefused, Reason: 200}, Answer{Status: StatusRefused, Reason: 200}},
		// Messages are truncated to 255 bytes ...
		{Answer{Status: StatusRefused, Message: strings.Repeat("x", 300)}, Answer{Status: StatusRefused, Message: strings.Repeat("x", 255)}},
		// ... without splitting a rune: "é" would straddle bytes 254 and 255.
		{Answer{Message: strings.Repeat("a", 254) + "é"}, Answer{Message: strings.Repeat("a", 254)}},
		// Not UTF-8 at all: cut at 255 regardless.
		{Answer{Message: strings.Repeat("\x80", 300)}, Answer{Message: strings.Repeat("\x80", 255)}},
	}
	for _, tt := range tests {
		b := tt.in.Append(nil)
		got, err := ReadAnswer(iotest.OneByteReader(bytes.NewReader(b)))
		if err != nil {
			t.Fatalf("ReadAnswer(%+v): %v", tt.in, err)
		}
		if got != tt.want {
			t.Errorf("round trip of %q = %q, want %q", tt.in.Message, got.Message, tt.want.Message)
			t.Errorf("round trip = %+v, want %+v", got, tt.want)
		}
	}
}

// The decoders must leave everything after the frame in the reader: it is client data.
func TestReadsExactlyOneFrame(t *testing.T) {
	trailer := []byte("GET / HTTP/1.1\r\n")
	for _, oneByte := range []bool{false, true} {
		stream := append(append(bytes.Clone(goldenRequestBytes), goldenAnswerBytes...), trailer...)
		br := bytes.NewReader(stream)
		var r io.Reader = br
		if oneByte {
			r = iotest.OneByteReader(br)
		}
		req, err := ReadRequest(r)
		if err != nil || req != goldenRequest {
			t.Fatalf("ReadRequest = %+v, %v", req, err)
		}
		if want := len(goldenAnswerBytes) + len(trailer); br.Len() != want {
			t.Fatalf("after ReadRequest %d bytes left, want %d", br.Len(), want)
		}
		ans, err := ReadAnswer(r)
		if err != nil || ans != goldenAnswer {
			t.Fatalf("ReadAnswer = %+v, %v", ans, err)
		}
		rest, _ := io.ReadAll(br)
		if !bytes.Equal(rest, trailer) {
			t.Errorf("left after frames = %q, want %q", rest, trailer)
		}
	}
}

// frame builds a raw frame with the given header fields around body.
func frame(version, typ byte, declared int, body []byte) []byte {
	return append([]byte{'S', 'K', version, typ, byte(declared >> 8), byte(declared)}, body...)
}

func reqBody(key, dst, src string) []byte {
	b := []byte{0, 0, 0, 0, 0, 0, 0, 9}
	for _, s := range []string{key, dst, src} {
		b = append(b, byte(len(s)))
		b = append(b, s...)
	}
	return b
}

func TestReadErrors(t *testing.T) {
	readReq := func(r io.Reader) error { _, err := ReadRequest(r); return err }
	readAns := func(r io.Reader) error { _, err := ReadAnswer(r); return err }
	body := reqBody("db", "east", "west")
	big := bytes.Repeat([]byte{'z'}, 2000)

	tests := []struct {
		name string
		read func(io.Reader) error
		in   []byte
		want error
		left int // bytes the decoder must not have consumed
	}{
		{"empty request", readReq, nil, io.EOF, 0},
		{"empty answer", readAns, nil, io.EOF, 0},
		{"partial header", readReq, []byte{'S', 'K', 1}, io.ErrUnexpectedEOF, 0},
		{"header only", readReq, goldenRequestBytes[:headerLen], io.ErrUnexpectedEOF, 0},
		{"partial body", readReq, goldenRequestBytes[:len(goldenRequestBytes)-1], io.ErrUnexpectedEOF, 0},
		{"partial answer body", readAns, goldenAnswerBytes[:headerLen+2], io.ErrUnexpectedEOF, 0},
		{"bad magic", readReq, append([]byte{'H', 'T', 'T', 'P', '/', '1'}, body...), ErrMalformed, len(body)},
		{"version 2 body unread", readReq, frame(2, frameRequest, len(body), body), ErrVersion, len(body)},
		{"version 0", readAns, frame(0, frameAnswer, 0, nil), ErrVersion, 0},
		{"answer where request expected", readReq, goldenAnswerBytes, ErrUnexpectedFrame, len(goldenAnswerBytes) - headerLen},
		{"request where answer expected", readAns, goldenRequestBytes, ErrUnexpectedFrame, len(goldenRequestBytes) - headerLen},
		{"unknown frame type", readReq, frame(1, 9, 0, nil), ErrUnexpectedFrame, 0},
		{"too large body unread", readReq, frame(1, frameRequest, 1025, big), ErrTooLarge, len(big)},
		{"max length field", readAns, frame(1, frameAnswer, 0xffff, big), ErrTooLarge, len(big)},
		{"version checked before length", readReq, frame(2, frameRequest, 0xffff, big), ErrVersion, len(big)},
		{"request trailing byte in body", readReq, frame(1, frameRequest, len(body)+1, append(bytes.Clone(body), 0)), ErrMalformed, 0},
		{"request body too short", readReq, frame(1, frameRequest, 8, body[:8]), ErrMalformed, 0},
		{"request string overruns body", readReq, frame(1, frameRequest, len(body)-1, body[:len(body)-1]), ErrMalformed, 0},
		{"empty body", readReq, frame(1, frameRequest, 0, nil), ErrMalformed, 0},
		{"empty routing key", readReq, frame(1, frameRequest, len(reqBody("", "e", "w")), reqBody("", "e", "w")), ErrMalformed, 0},
		{"space in routing key", readReq, frame(1, frameRequest, len(reqBody("a b", "e", "w")), reqBody("a b", "e", "w")), ErrMalformed, 0},
		{"DEL in routing key", readReq, frame(1, frameRequest, len(reqBody("a\x7f", "e", "w")), reqBody("a\x7f", "e", "w")), ErrMalformed, 0},
		{"routing key 201 bytes", readReq, frame(1, frameRequest, len(reqBody(strings.Repeat("k", 201), "e", "w")), reqBody(strings.Repeat("k", 201), "e", "w")), ErrMalformed, 0},
		{"empty destination", readReq, frame(1, frameRequest, len(reqBody("k", "", "w")), reqBody("k", "", "w")), ErrMalformed, 0},
		{"source 64 bytes", readReq, frame(1, frameRequest, len(reqBody("k", "e", strings.Repeat("w", 64))), reqBody("k", "e", strings.Repeat("w", 64))), ErrMalformed, 0},
		{"answer unknown status", readAns, frame(1, frameAnswer, 3, []byte{2, 0, 0}), ErrMalformed, 0},
		{"answer trailing byte in body", readAns, frame(1, frameAnswer, 4, []byte{0, 0, 0, 0}), ErrMalformed, 0},
		{"answer body too short", readAns, frame(1, frameAnswer, 2, []byte{0, 0}), ErrMalformed, 0},
		{"answer message overruns body", readAns, frame(1, frameAnswer, 4, []byte{1, 1, 5, 'x'}), ErrMalformed, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := bytes.NewReader(tt.in)
			err := tt.read(r)
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			if tt.want == io.EOF && err != io.EOF {
				t.Errorf("err = %#v, want io.EOF itself so callers can compare with ==", err)
			}
			if r.Len() != tt.left {
				t.Errorf("%d bytes left unread, want %d", r.Len(), tt.left)
			}
		})
	}
}

func TestReadPassesReaderErrors(t *testing.T) {
	boom := errors.New("boom")
	if _, err := ReadRequest(iotest.ErrReader(boom)); !errors.Is(err, boom) {
		t.Errorf("ReadRequest err = %v, want %v", err, boom)
	}
	r := io.MultiReader(bytes.NewReader(goldenAnswerBytes[:headerLen+1]), iotest.ErrReader(boom))
	if _, err := ReadAnswer(r); !errors.Is(err, boom) {
		t.Errorf("ReadAnswer err = %v, want %v", err, boom)
	}
}

func TestRequestAppendRejectsInvalid(t *testing.T) {
	ok := goldenRequest
	tests := []struct {
		name string
		mut  func(*Request)
	}{
		{"empty routing key", func(r *Request) { r.RoutingKey = "" }},
		{"routing key with space", func(r *Request) { r.RoutingKey = "a b" }},
		{"routing key with tab", func(r *Request) { r.RoutingKey = "a\tb" }},
		{"routing key non-ASCII", func(r *Request) { r.RoutingKey = "clé" }},
		{"routing key 201 bytes", func(r *Request) { r.RoutingKey = strings.Repeat("k", 201) }},
		{"empty destination", func(r *Request) { r.DestSite = "" }},
		{"destination 64 bytes", func(r *Request) { r.DestSite = strings.Repeat("d", 64) }},
		{"empty source", func(r *Request) { r.SourceSite = "" }},
		{"source 64 bytes", func(r *Request) { r.SourceSite = strings.Repeat("s", 64) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := ok
			tt.mut(&r)
			prefix := []byte("keep")
			got, err := r.Append(prefix)
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("err = %v, want ErrMalformed", err)
			}
			if string(got) != "keep" {
				t.Errorf("Append returned %q on error, want the input unchanged", got)
			}
		})
	}
}

func TestReasonString(t *testing.T) {
	tests := []struct {
		r    Reason
		want string
	}{
		{ReasonNone, "none"},
		{ReasonNoConnector, "no-connector"},
		{ReasonBackendRefused, "backend-refused"},
		{ReasonBackendTimeout, "backend-timeout"},
		{ReasonNoRoute, "no-route"},
		{ReasonNoTunnel, "no-tunnel"},
		{ReasonShuttingDown, "shutting-down"},
		{ReasonBadRequest, "bad-request"},
		{ReasonOverLimit, "over-limit"},
		{9, "reason-9"},
		{255, "reason-255"},
	}
	for _, tt := range tests {
		if got := tt.r.String(); got != tt.want {
			t.Errorf("Reason(%d).String() = %q, want %q", uint8(tt.r), got, tt.want)
		}
	}
}

func TestStatusString(t *testing.T) {
	for s, want := range map[Status]string{StatusOK: "ok", StatusRefused: "refused", 7: "status-7"} {
		if got := s.String(); got != want {
			t.Errorf("Status(%d).String() = %q, want %q", uint8(s), got, want)
		}
	}
}

func TestAttachRoundTripLeavesTheMovedBytes(t *testing.T) {
	b := append(Attach{Token: 0x0123456789abcdef}.Append(nil), "moved"...)
	r := bytes.NewReader(b)
	a, err := ReadAttach(r)
	if err != nil || a.Token != 0x0123456789abcdef {
		t.Fatalf("attach %+v, %v", a, err)
	}
	if rest, _ := io.ReadAll(r); string(rest) != "moved" {
		t.Fatalf("after the attach: %q", rest)
	}
	if _, err := ReadAttach(bytes.NewReader(goldenRequestBytes)); !errors.Is(err, ErrUnexpectedFrame) {
		t.Fatalf("a request read as an attach: %v", err)
	}
	short := Attach{Token: 1}.Append(nil)
	short[5] = 7 // body of 7 bytes, one short of the token
	if _, err := ReadAttach(bytes.NewReader(short[:len(short)-1])); !errors.Is(err, ErrMalformed) {
		t.Fatalf("short attach: %v", err)
	}
}
