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
		checkDecoder(t, data, func(r io.Reader) ([]byte, error) {
			req, err := ReadRequest(r)
			if err != nil {
				return nil, err
			}
			enc, err := req.Append(nil)
			if err != nil {
				t.Fatalf("decoded %+v does not encode: %v", req, err)
			}
			return enc, nil
		})
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
		checkDecoder(t, data, func(r io.Reader) ([]byte, error) {
			a, err := ReadAnswer(r)
			return a.Append(nil), err
		})
	})
}

func FuzzReadAttach(f *testing.F) {
	f.Add(Attach{Token: 7}.Append(nil))
	f.Add(append(Attach{Token: 1 << 63}.Append(nil), "moved bytes"...))
	f.Add(goldenRequestBytes)
	f.Add([]byte{'S', 'K', 1, 3, 0, 7, 1, 2, 3, 4, 5, 6, 7})
	f.Fuzz(func(t *testing.T, data []byte) {
		checkDecoder(t, data, func(r io.Reader) ([]byte, error) {
			a, err := ReadAttach(r)
			return a.Append(nil), err
		})
	})
}

// checkDecoder runs decode (which returns the re-encoding of what it decoded) on data: it
// must fail with one of the promised errors, or consume exactly the bytes it re-encodes to.
func checkDecoder(t *testing.T, data []byte, decode func(io.Reader) ([]byte, error)) {
	t.Helper()
	r := bytes.NewReader(data)
	enc, err := decode(r)
	if err != nil {
		if !knownError(err) {
			t.Fatalf("unexpected error kind: %v", err)
		}
		return
	}
	if consumed := data[:len(data)-r.Len()]; !bytes.Equal(enc, consumed) {
		t.Fatalf("re-encoded %v, consumed %v", enc, consumed)
	}
}
