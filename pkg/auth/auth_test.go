package auth

import (
	"errors"
	"net"
	"testing"
)

func lookupOf(creds map[string][]byte) Lookup {
	return func(c string) ([]byte, bool) { s, ok := creds[c]; return s, ok }
}

type outcome struct {
	peerSite string
	dialErr  error
	peer     Peer
	acptErr  error
}

func handshake(t *testing.T, cred string, dialSecret []byte, creds map[string][]byte) outcome {
	t.Helper()
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	done := make(chan outcome, 1)
	go func() {
		p, err := Accept(b, "east", lookupOf(creds))
		// Closing unblocks a dialer still waiting for a message the acceptor will not send.
		b.Close()
		done <- outcome{peer: p, acptErr: err}
	}()
	site, err := Dial(a, "west", cred, dialSecret, TunnelIn)
	a.Close()
	o := <-done
	o.peerSite, o.dialErr = site, err
	return o
}

func TestHandshake(t *testing.T) {
	secret := []byte("0123456789abcdef0123456789abcdef")
	creds := map[string][]byte{"west-to-east": secret}

	t.Run("right secret", func(t *testing.T) {
		o := handshake(t, "west-to-east", secret, creds)
		if o.dialErr != nil || o.acptErr != nil {
			t.Fatalf("dial err %v, accept err %v", o.dialErr, o.acptErr)
		}
		if o.peerSite != "east" {
			t.Errorf("dialer learned peer %q, want east", o.peerSite)
		}
		want := Peer{Site: "west", Credential: "west-to-east", Purpose: TunnelIn}
		if o.peer != want {
			t.Errorf("acceptor learned %+v, want %+v", o.peer, want)
		}
	})
	t.Run("unknown credential", func(t *testing.T) {
		o := handshake(t, "someone-else", secret, creds)
		if !errors.Is(o.dialErr, ErrUnknownCredential) || !errors.Is(o.acptErr, ErrUnknownCredential) {
			t.Fatalf("dial err %v, accept err %v; want ErrUnknownCredential on both", o.dialErr, o.acptErr)
		}
	})
	t.Run("wrong secret", func(t *testing.T) {
		o := handshake(t, "west-to-east", []byte("not the secret"), creds)
		// The dialer detects first: the acceptor's proof does not verify under its secret,
		// and the dialer never sends a proof of its own.
		if !errors.Is(o.dialErr, ErrBadProof) {
			t.Fatalf("dial err %v, want ErrBadProof", o.dialErr)
		}
		// The acceptor sees the dialer hang up where its proof was due: a bad proof too.
		if !errors.Is(o.acptErr, ErrBadProof) {
			t.Fatalf("accept err %v, want ErrBadProof", o.acptErr)
		}
	})
}

func TestAcceptRejectsGarbage(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	go func() {
		_, _ = a.Write([]byte("GET / HTTP/1.1\r\n\r\n"))
	}()
	_, err := Accept(b, "east", lookupOf(nil))
	if !errors.Is(err, ErrMalformed) {
		t.Fatalf("err %v, want ErrMalformed", err)
	}
}

func TestProofCoversTranscript(t *testing.T) {
	secret := []byte("s")
	base := transcript{purpose: Control, credential: "c", dialer: "a", acceptor: "b"}
	changed := []transcript{base, base, base, base}
	changed[0].purpose = TunnelOut
	changed[1].credential = "d"
	changed[2].dialer, changed[2].acceptor = "b", "a"
	changed[3].nonceAcpt[0] = 1
	want := string(base.mac(secret, "dialer"))
	for i, c := range changed {
		if string(c.mac(secret, "dialer")) == want {
			t.Errorf("variant %d has the same proof as the original transcript", i)
		}
	}
	if string(base.mac(secret, "acceptor")) == want {
		t.Error("dialer and acceptor proofs are the same: one side could reflect the other's proof")
	}
}
