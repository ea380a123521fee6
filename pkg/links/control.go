package links

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
)

// A link's control messages: a 4-byte big-endian length, a 1-byte type, then a JSON payload.
// The hellos cross the link connection as they are, before it becomes a multiplexed session;
// later messages travel inside the session's link frames. The rate is a few messages a second, so clarity wins over
// compactness; the length bound keeps a confused or hostile peer from making us allocate much.
type msgType uint8

const (
	msgHello msgType = 1 // first message each way: the sender's configured cost
	// 2 and 3 were heartbeats; the multiplexer's pings carry them now.
	msgLSA  msgType = 4 // a link-state advertisement being flooded
	msgWant msgType = 5 // the accepting side ran out of tunnels and asks the dialer for more
)

const maxControlMessage = 1 << 20

type helloMsg struct {
	Cost int `json:"cost"`
}

type wantMsg struct {
	N int `json:"n"`
}

func encodeMsg(t msgType, v any) ([]byte, error) {
	payload, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	b := make([]byte, 5, 5+len(payload))
	binary.BigEndian.PutUint32(b, uint32(len(payload)+1))
	b[4] = byte(t)
	return append(b, payload...), nil
}

func readMsg(r io.Reader) (msgType, []byte, error) {
	var head [5]byte
	if _, err := io.ReadFull(r, head[:]); err != nil {
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(head[:4])
	if n < 1 || n > maxControlMessage {
		return 0, nil, fmt.Errorf("control message of %d bytes (limit %d)", n, maxControlMessage)
	}
	payload := make([]byte, n-1)
	if _, err := io.ReadFull(r, payload); err != nil {
		return 0, nil, err
	}
	return msgType(head[4]), payload, nil
}
