package tunnel

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strconv"
	"unicode/utf8"
)

// Version is the tunnel frame version this package speaks. A peer sending another version is refused outright
// rather than guessed at: the frames are tiny, so a new version costs a new number, not compatibility logic.
const Version = 1

// Wire layout, big endian:
//
//	0: magic 'S' 'K'
//	2: version (1 byte)
//	3: frame type (1 byte)
//	4: body length (uint16, at most maxBody)
//	6: body
const (
	headerLen = 6
	magic0    = 'S'
	magic1    = 'K'

	// maxBody bounds what a peer can make us allocate before it has proved anything. The largest valid body is
	// far smaller (a request is at most 8+1+200+1+63+1+63 = 337 bytes), which leaves room for later fields.
	maxBody = 1024

	frameRequest = 1
	frameAnswer  = 2
	frameAttach  = 3

	maxRoutingKey = 200
	maxSiteName   = 63
	maxMessage    = 255
)

// Errors callers branch on; each is wrapped with detail, so test with errors.Is.
var (
	// ErrMalformed: the bytes are not a valid frame (bad magic, bad field, trailing bytes in the body).
	ErrMalformed = errors.New("malformed tunnel frame")
	// ErrTooLarge: the declared body length exceeds the limit; the body was not read.
	ErrTooLarge = errors.New("tunnel frame too large")
	// ErrVersion: the peer speaks another frame version; the body was not read.
	ErrVersion = errors.New("unsupported tunnel frame version")
	// ErrUnexpectedFrame: a well-formed header of a frame type other than the one expected here.
	ErrUnexpectedFrame = errors.New("unexpected tunnel frame type")
)

// Request asks the far end to take one client connection: carried in a stream's open frame (AppendOpen), sent by
// the side that carries the client.
type Request struct {
	FlowID     uint64
	RoutingKey string // 1..200 bytes of printable ASCII, no spaces
	DestSite   string // 1..63 bytes
	SourceSite string // 1..63 bytes
}

// Append validates r and appends its encoded frame to b. On error b is returned unchanged.
func (r Request) Append(b []byte) ([]byte, error) {
	if err := r.validate(); err != nil {
		return b, fmt.Errorf("encode request: %w", err)
	}
	start := len(b)
	b = appendHeader(b, frameRequest)
	b = binary.BigEndian.AppendUint64(b, r.FlowID)
	b = appendString(b, r.RoutingKey)
	b = appendString(b, r.DestSite)
	b = appendString(b, r.SourceSite)
	return finishFrame(b, start), nil
}

func (r Request) validate() error {
	if err := checkRoutingKey(r.RoutingKey); err != nil {
		return err
	}
	if err := checkSite("destination site", r.DestSite); err != nil {
		return err
	}
	return checkSite("source site", r.SourceSite)
}

// ReadRequest reads exactly one request frame from r and nothing after it. It returns io.EOF if r ends before the
// first byte and an error wrapping io.ErrUnexpectedEOF if it ends inside the frame.
func ReadRequest(r io.Reader) (Request, error) {
	body, err := readFrame(r, frameRequest)
	if err == io.EOF {
		return Request{}, io.EOF
	}
	if err != nil {
		return Request{}, fmt.Errorf("read request: %w", err)
	}
	d := decoder{b: body}
	req := Request{
		FlowID:     d.uint64(),
		RoutingKey: d.string(),
		DestSite:   d.string(),
		SourceSite: d.string(),
	}
	if err := d.finish(); err != nil {
		return Request{}, fmt.Errorf("read request: %w", err)
	}
	if err := req.validate(); err != nil {
		return Request{}, fmt.Errorf("read request: %w", err)
	}
	return req, nil
}

// Status says whether the far end accepted the tunnel.
type Status uint8

const (
	StatusOK      Status = 0
	StatusRefused Status = 1
)

func (s Status) String() string {
	switch s {
	case StatusOK:
		return "ok"
	case StatusRefused:
		return "refused"
	}
	return "status-" + strconv.Itoa(int(s))
}

// Reason says why a tunnel was refused. The ingress branches on it (retry the next candidate or give up) and it
// labels failure metrics, so values are stable once released; new ones are appended.
type Reason uint8

const (
	ReasonNone Reason = iota
	ReasonNoConnector
	ReasonBackendRefused
	ReasonBackendTimeout
	ReasonNoRoute
	ReasonNoTunnel
	ReasonShuttingDown
	ReasonBadRequest
	ReasonOverLimit // the destination holds its max-connections already
)

var reasonNames = [...]string{
	ReasonNone:           "none",
	ReasonNoConnector:    "no-connector",
	ReasonBackendRefused: "backend-refused",
	ReasonBackendTimeout: "backend-timeout",
	ReasonNoRoute:        "no-route",
	ReasonNoTunnel:       "no-tunnel",
	ReasonShuttingDown:   "shutting-down",
	ReasonBadRequest:     "bad-request",
	ReasonOverLimit:      "over-limit",
}

// String returns the reason's metric-label form. Values this version does not know (a newer peer's) print as
// "reason-<n>" rather than failing, so an old gateway can still log and count them.
func (r Reason) String() string {
	if int(r) < len(reasonNames) {
		return reasonNames[r]
	}
	return "reason-" + strconv.Itoa(int(r))
}

// Answer is the far end's reply to a Request. Message is free text for logs, at most 255 bytes.
type Answer struct {
	Status  Status
	Reason  Reason
	Message string
}

// Append appends a's encoded frame to b. A Message longer than 255 bytes is truncated (at a UTF-8 boundary where
// possible): the message is for humans and must never be why a refusal fails to reach the ingress. Status should be
// StatusOK or StatusRefused; the decoder rejects anything else.
func (a Answer) Append(b []byte) []byte {
	start := len(b)
	b = appendHeader(b, frameAnswer)
	b = append(b, byte(a.Status), byte(a.Reason))
	b = appendString(b, truncate(a.Message, maxMessage))
	return finishFrame(b, start)
}

// ReadAnswer reads exactly one answer frame from r and nothing after it. Unknown reasons are accepted (see
// Reason.String); unknown statuses are not, since the caller could not tell whether to proceed. EOF handling is as
// for ReadRequest.
func ReadAnswer(r io.Reader) (Answer, error) {
	body, err := readFrame(r, frameAnswer)
	if err == io.EOF {
		return Answer{}, io.EOF
	}
	if err != nil {
		return Answer{}, fmt.Errorf("read answer: %w", err)
	}
	d := decoder{b: body}
	a := Answer{
		Status:  Status(d.uint8()),
		Reason:  Reason(d.uint8()),
		Message: d.string(),
	}
	if err := d.finish(); err != nil {
		return Answer{}, fmt.Errorf("read answer: %w", err)
	}
	if a.Status != StatusOK && a.Status != StatusRefused {
		return Answer{}, fmt.Errorf("read answer: status %d: %w", a.Status, ErrMalformed)
	}
	return a, nil
}

// Attach is the first and only frame on a tunnel that takes over a stream moved off a link
// connection: Token is the one the stream's move frame carries, which pairs the two up.
type Attach struct {
	Token uint64
}

// Append appends a's encoded frame to b.
func (a Attach) Append(b []byte) []byte {
	start := len(b)
	b = appendHeader(b, frameAttach)
	b = binary.BigEndian.AppendUint64(b, a.Token)
	return finishFrame(b, start)
}

// ReadAttach reads exactly one attach frame from r and nothing after it; whatever follows is
// the moved connection's bytes. A request frame (a peer carrying connections on tunnels, as
// versions before streams did) is ErrUnexpectedFrame. EOF handling is as for ReadRequest.
func ReadAttach(r io.Reader) (Attach, error) {
	body, err := readFrame(r, frameAttach)
	if err == io.EOF {
		return Attach{}, io.EOF
	}
	if err != nil {
		return Attach{}, fmt.Errorf("read attach: %w", err)
	}
	d := decoder{b: body}
	a := Attach{Token: d.uint64()}
	if err := d.finish(); err != nil {
		return Attach{}, fmt.Errorf("read attach: %w", err)
	}
	return a, nil
}

func appendHeader(b []byte, typ byte) []byte {
	return append(b, magic0, magic1, Version, typ, 0, 0)
}

// finishFrame fills in the body length of the frame that starts at b[start].
func finishFrame(b []byte, start int) []byte {
	binary.BigEndian.PutUint16(b[start+4:], uint16(len(b)-start-headerLen))
	return b
}

// appendString writes s with a one-byte length prefix; callers have already bounded len(s) to 255.
func appendString(b []byte, s string) []byte {
	b = append(b, byte(len(s)))
	return append(b, s...)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	// Back off at most UTFMax-1 bytes: enough to avoid splitting a rune in valid UTF-8, bounded for garbage.
	for cut := n; cut > n-utf8.UTFMax && cut > 0; cut-- {
		if utf8.RuneStart(s[cut]) {
			return s[:cut]
		}
	}
	return s[:n]
}

// readFrame reads one header and, if it announces a frame of type want with an acceptable length, its body. It
// uses io.ReadFull twice and never reads past the frame: whatever follows belongs to the client connection.
func readFrame(r io.Reader, want byte) ([]byte, error) {
	var h [headerLen]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		if err == io.EOF {
			return nil, io.EOF // clean end before a frame: let callers compare with ==
		}
		return nil, fmt.Errorf("header: %w", err)
	}
	if h[0] != magic0 || h[1] != magic1 {
		return nil, fmt.Errorf("bad magic %#02x%02x: %w", h[0], h[1], ErrMalformed)
	}
	if h[2] != Version {
		return nil, fmt.Errorf("version %d, want %d: %w", h[2], Version, ErrVersion)
	}
	if h[3] != want {
		return nil, fmt.Errorf("frame type %d, want %d: %w", h[3], want, ErrUnexpectedFrame)
	}
	n := binary.BigEndian.Uint16(h[4:])
	if n > maxBody {
		return nil, fmt.Errorf("body length %d, limit %d: %w", n, maxBody, ErrTooLarge)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF // the header was read, so this end is mid-frame
		}
		return nil, fmt.Errorf("body: %w", err)
	}
	return body, nil
}

// decoder reads fields from a body. The first short read sets err and every later read returns zero values, so
// a frame is decoded in one straight run and checked once at the end.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) take(n int) []byte {
	if d.err != nil {
		return nil
	}
	if len(d.b) < n {
		d.err = fmt.Errorf("body ends %d bytes short: %w", n-len(d.b), ErrMalformed)
		return nil
	}
	v := d.b[:n]
	d.b = d.b[n:]
	return v
}

func (d *decoder) uint8() uint8 {
	if v := d.take(1); v != nil {
		return v[0]
	}
	return 0
}

func (d *decoder) uint64() uint64 {
	if v := d.take(8); v != nil {
		return binary.BigEndian.Uint64(v)
	}
	return 0
}

func (d *decoder) string() string {
	n := d.uint8()
	return string(d.take(int(n)))
}

func (d *decoder) finish() error {
	if d.err != nil {
		return d.err
	}
	if len(d.b) != 0 {
		return fmt.Errorf("%d trailing bytes in body: %w", len(d.b), ErrMalformed)
	}
	return nil
}

func checkRoutingKey(k string) error {
	if len(k) == 0 || len(k) > maxRoutingKey {
		return fmt.Errorf("routing key length %d, want 1..%d: %w", len(k), maxRoutingKey, ErrMalformed)
	}
	for i := range len(k) {
		// Routing keys become metric labels and log fields; printable ASCII keeps them unambiguous there.
		if c := k[i]; c <= ' ' || c > '~' {
			return fmt.Errorf("routing key byte %d is %#02x, want printable ASCII without spaces: %w", i, c, ErrMalformed)
		}
	}
	return nil
}

func checkSite(field, s string) error {
	if len(s) == 0 || len(s) > maxSiteName {
		return fmt.Errorf("%s length %d, want 1..%d: %w", field, len(s), maxSiteName, ErrMalformed)
	}
	return nil
}
