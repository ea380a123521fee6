// Package auth authenticates every connection between two linked sites with a mutual
// challenge-response over the link's shared secret.
//
// Both sides prove knowledge of the secret with an HMAC-SHA256 over a transcript that holds a
// fresh nonce from each side, so the secret never crosses the wire and a recorded exchange
// cannot be replayed. The dialing side checks the accepting side's proof before it sends its
// own. The exchange authenticates; it does not encrypt what follows.
package auth

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
)

// Purpose says what an authenticated connection will carry.
type Purpose uint8

const (
	// Control carries link state, heartbeats and pool requests.
	Control Purpose = 1
	// TunnelOut is a tunnel on which the dialing side sends a connection request.
	TunnelOut Purpose = 2
	// TunnelIn is a tunnel on which the accepting side sends a connection request, so the
	// accepting side never has to dial back (the dialing side may sit behind NAT).
	TunnelIn Purpose = 3
	// Streams is one more link connection of a link that is up: it carries streams beside the
	// control connection, so one connection's reader is not the link's limit and its loss
	// leaves the others.
	Streams Purpose = 4
)

func (p Purpose) String() string {
	switch p {
	case Control:
		return "control"
	case TunnelOut:
		return "tunnel-out"
	case TunnelIn:
		return "tunnel-in"
	case Streams:
		return "streams"
	}
	return fmt.Sprintf("purpose-%d", uint8(p))
}

// Errors callers branch on.
var (
	ErrUnknownCredential = errors.New("unknown link credential")
	ErrBadProof          = errors.New("proof of the link secret does not match")
	ErrMalformed         = errors.New("malformed link handshake")
)

const (
	version   = 1
	nonceSize = 32
	macSize   = sha256.Size
	maxName   = 255

	statusOK                = 0
	statusUnknownCredential = 1
	statusBadProof          = 2
)

var magic = [4]byte{'S', 'K', 'F', 'L'}

// Peer is what the accepting side learns about an authenticated dialer.
type Peer struct {
	Site       string
	Credential string
	Purpose    Purpose
}

// Lookup returns the secret for a credential name, or false when the site never issued it.
type Lookup func(credential string) (secret []byte, ok bool)

// Dial runs the dialing side of the handshake on rw and returns the accepting site's name.
// The caller sets deadlines on the underlying connection.
func Dial(rw io.ReadWriter, self, credential string, secret []byte, purpose Purpose) (string, error) {
	if len(self) == 0 || len(self) > maxName || len(credential) == 0 || len(credential) > maxName {
		return "", fmt.Errorf("site name %q or credential %q: %w", self, credential, ErrMalformed)
	}
	var nonceD [nonceSize]byte
	if _, err := rand.Read(nonceD[:]); err != nil {
		return "", fmt.Errorf("make nonce: %w", err)
	}
	hello := append([]byte{}, magic[:]...)
	hello = append(hello, version, byte(purpose))
	hello = appendString(hello, credential)
	hello = appendString(hello, self)
	hello = append(hello, nonceD[:]...)
	if _, err := rw.Write(hello); err != nil {
		return "", fmt.Errorf("send hello: %w", err)
	}

	status, err := readByte(rw)
	if err != nil {
		return "", fmt.Errorf("read challenge: %w", err)
	}
	switch status {
	case statusOK:
	case statusUnknownCredential:
		return "", fmt.Errorf("peer does not know credential %q: %w", credential, ErrUnknownCredential)
	default:
		return "", fmt.Errorf("challenge status %d: %w", status, ErrMalformed)
	}
	peer, err := readString(rw)
	if err != nil {
		return "", fmt.Errorf("read challenge: %w", err)
	}
	var nonceA [nonceSize]byte
	var macA [macSize]byte
	if _, err := io.ReadFull(rw, nonceA[:]); err != nil {
		return "", fmt.Errorf("read challenge: %w", err)
	}
	if _, err := io.ReadFull(rw, macA[:]); err != nil {
		return "", fmt.Errorf("read challenge: %w", err)
	}
	t := transcript{purpose, credential, self, peer, nonceD, nonceA}
	if !hmac.Equal(macA[:], t.mac(secret, "acceptor")) {
		return "", fmt.Errorf("site %q failed to prove credential %q: %w", peer, credential, ErrBadProof)
	}
	if _, err := rw.Write(t.mac(secret, "dialer")); err != nil {
		return "", fmt.Errorf("send proof: %w", err)
	}
	verdict, err := readByte(rw)
	if err != nil {
		return "", fmt.Errorf("read verdict: %w", err)
	}
	if verdict != statusOK {
		return "", fmt.Errorf("site %q rejected our proof for credential %q: %w", peer, credential, ErrBadProof)
	}
	return peer, nil
}

// Accept runs the accepting side of the handshake on rw.
func Accept(rw io.ReadWriter, self string, lookup Lookup) (Peer, error) {
	var head [6]byte
	if _, err := io.ReadFull(rw, head[:]); err != nil {
		return Peer{}, fmt.Errorf("read hello: %w", err)
	}
	if [4]byte(head[:4]) != magic || head[4] != version {
		return Peer{}, fmt.Errorf("hello does not start with skfwd link magic and version %d: %w", version, ErrMalformed)
	}
	purpose := Purpose(head[5])
	if purpose < Control || purpose > Streams {
		return Peer{}, fmt.Errorf("hello purpose %d: %w", head[5], ErrMalformed)
	}
	credential, err := readString(rw)
	if err != nil {
		return Peer{}, fmt.Errorf("read hello: %w", err)
	}
	site, err := readString(rw)
	if err != nil {
		return Peer{}, fmt.Errorf("read hello: %w", err)
	}
	var nonceD [nonceSize]byte
	if _, err := io.ReadFull(rw, nonceD[:]); err != nil {
		return Peer{}, fmt.Errorf("read hello: %w", err)
	}
	peer := Peer{Site: site, Credential: credential, Purpose: purpose}
	secret, ok := lookup(credential)
	if !ok {
		_, _ = rw.Write([]byte{statusUnknownCredential})
		return peer, fmt.Errorf("site %q presented credential %q: %w", site, credential, ErrUnknownCredential)
	}
	var nonceA [nonceSize]byte
	if _, err := rand.Read(nonceA[:]); err != nil {
		return peer, fmt.Errorf("make nonce: %w", err)
	}
	t := transcript{purpose, credential, site, self, nonceD, nonceA}
	challenge := appendString([]byte{statusOK}, self)
	challenge = append(challenge, nonceA[:]...)
	challenge = append(challenge, t.mac(secret, "acceptor")...)
	if _, err := rw.Write(challenge); err != nil {
		return peer, fmt.Errorf("send challenge: %w", err)
	}
	var proof [macSize]byte
	if _, err := io.ReadFull(rw, proof[:]); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			// A dialer checks our proof first and hangs up, without a proof of its own, when
			// it does not verify under its secret: the secrets differ.
			return peer, fmt.Errorf("site %q with credential %q closed instead of sending a proof: %w", site, credential, ErrBadProof)
		}
		return peer, fmt.Errorf("read proof: %w", err)
	}
	if !hmac.Equal(proof[:], t.mac(secret, "dialer")) {
		_, _ = rw.Write([]byte{statusBadProof})
		return peer, fmt.Errorf("site %q with credential %q: %w", site, credential, ErrBadProof)
	}
	if _, err := rw.Write([]byte{statusOK}); err != nil {
		return peer, fmt.Errorf("send verdict: %w", err)
	}
	return peer, nil
}

// transcript is everything both sides saw; each proof covers all of it, so no field can be
// swapped by someone in the middle.
type transcript struct {
	purpose              Purpose
	credential           string
	dialer, acceptor     string
	nonceDial, nonceAcpt [nonceSize]byte
}

func (t transcript) mac(secret []byte, role string) []byte {
	h := hmac.New(sha256.New, secret)
	b := appendString([]byte("skfwd-link-v1"), role)
	b = append(b, byte(t.purpose))
	b = appendString(b, t.credential)
	b = appendString(b, t.dialer)
	b = appendString(b, t.acceptor)
	b = append(b, t.nonceDial[:]...)
	b = append(b, t.nonceAcpt[:]...)
	h.Write(b)
	return h.Sum(nil)
}

func appendString(b []byte, s string) []byte {
	return append(append(b, byte(len(s))), s...)
}

func readByte(r io.Reader) (byte, error) {
	var b [1]byte
	_, err := io.ReadFull(r, b[:])
	return b[0], err
}

func readString(r io.Reader) (string, error) {
	n, err := readByte(r)
	if err != nil {
		return "", err
	}
	if n == 0 {
		return "", fmt.Errorf("empty name: %w", ErrMalformed)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return "", err
	}
	return string(b), nil
}
