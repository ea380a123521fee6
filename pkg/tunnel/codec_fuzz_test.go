package tunnel

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

// knownError reports whether err is one of the outcomes the decoders promise; anything else would leave callers
// unable to branch on it.
func knownError(err error) bool {
	for _, want := range []error{io.EOF, io.ErrUnexpectedEOF, ErrMalformed, ErrTooLarge, ErrVersion, ErrUnexpectedFrame} {
		if errors.Is(err, want) {
			return true
		}
	}
	return false
}

func FuzzReadRequest(f *testing.F) {
	f.Add(goldenRequestBytes)
	f.Add(append(bytes.Clone(goldenRequestBytes), "client bytes"...))
	f.Add(goldenAnswerBytes)
	f.Add([]byte{})
	f.Add([]byte{'S', 'K', 1, 1, 0xff, 0xff})
	f.Add(frame(1, frameRequest, 9, []byte{0, 0, 0, 0, 0, 0, 0, 0, 0}))
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bytes.NewReader(data)
		req, err := ReadRequest(r)
		if err != nil {
			if !knownError(err) {
				t.Fatalf("unexpected error kind: %v", err)
			}
			return
		}
		consumed := data[:len(data)-r.Len()]
		enc, err := req.Append(nil)
		if err != nil {
			t.Fatalf("decoded %+v does not encode: %v", req, err)
		}
		if !bytes.Equal(enc, consumed) {
			t.Fatalf("re-encoded %v, consumed %v", enc, consumed)
		}
	})
}

func FuzzReadAnswer(f *testing.F) {
	f.Add(goldenAnswerBytes)
	f.Add(append(bytes.Clone(goldenAnswerBytes), "client bytes"...))
	f.Add(Answer{}.Append(nil))
	f.Add(goldenRequestBytes)
	f.Add([]byte{})
	f.Add([]byte{'S', 'K', 1, 2, 0x04, 0x01})
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bytes.NewReader(data)
		a, err := ReadAnswer(r)
		if err != nil {
			if !knownError(err) {
				t.Fatalf("unexpected error kind: %v", err)
			}
			return
		}
		consumed := data[:len(data)-r.Len()]
		if enc := a.Append(nil); !bytes.Equal(enc, consumed) {
			t.Fatalf("re-encoded %v, consumed %v", enc, consumed)
		}
	})
}

func FuzzReadAttach(f *testing.F) {
	f.Add(Attach{Token: 7}.Append(nil))
	f.Add(append(Attach{Token: 1 << 63}.Append(nil), "moved bytes"...))
	f.Add(goldenRequestBytes)
	f.Add([]byte{'S', 'K', 1, 3, 0, 7, 1, 2, 3, 4, 5, 6, 7})
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bytes.NewReader(data)
		a, err := ReadAttach(r)
		if err != nil {
			if !knownError(err) {
				t.Fatalf("unexpected error kind: %v", err)
			}
			return
		}
		consumed := data[:len(data)-r.Len()]
		if enc := a.Append(nil); !bytes.Equal(enc, consumed) {
			t.Fatalf("re-encoded %v, consumed %v", enc, consumed)
		}
	})
}
