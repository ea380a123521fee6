package ratelog

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// TestLimitPerKey: one line per key per interval; the next line after a burst counts what the
// burst dropped; keys do not share a budget.
func TestLimitPerKey(t *testing.T) {
	var buf bytes.Buffer
	now := time.Unix(1000, 0)
	l := NewWithClock(slog.New(slog.NewTextHandler(&buf, nil)), time.Second, func() time.Time { return now })
	for range 1000 {
		l.Warn("bad-proof", "link connection rejected", "reason", "bad-proof")
	}
	l.Warn("malformed", "link connection rejected", "reason", "malformed")
	now = now.Add(999 * time.Millisecond)
	l.Warn("bad-proof", "link connection rejected", "reason", "bad-proof")
	now = now.Add(time.Millisecond)
	l.Error("bad-proof", "link connection rejected", "reason", "bad-proof")

	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 3 {
		t.Fatalf("got %d lines, want 3:\n%s", len(lines), buf.String())
	}
	for i, want := range []string{"reason=bad-proof", "reason=malformed", "level=ERROR"} {
		if !strings.Contains(lines[i], want) {
			t.Errorf("line %d %q does not contain %q", i+1, lines[i], want)
		}
	}
	if strings.Contains(lines[0], "suppressed") || !strings.Contains(lines[2], "suppressed=1000") {
		t.Errorf("suppressed counts wrong:\n%s", buf.String())
	}
}
