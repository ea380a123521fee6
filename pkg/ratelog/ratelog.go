// Package ratelog keeps a flood of bad input from flooding the log: per key (a reason from a
// fixed list, never a client address), at most one line per interval, and the next line that
// passes says how many were suppressed meanwhile. What is suppressed is still counted in
// metrics by the caller; the log only gives an example.
package ratelog

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// Logger wraps a slog.Logger with a per-key limit. Keys must come from a bounded set: the
// Logger remembers each one.
type Logger struct {
	log   *slog.Logger
	every time.Duration
	now   func() time.Time

	mu   sync.Mutex
	keys map[string]*keyState
}

type keyState struct {
	last       time.Time // when a line for the key was last written
	suppressed int       // lines dropped since
}

// New returns a Logger writing to log at most one line per key every interval.
func New(log *slog.Logger, every time.Duration) *Logger {
	return NewWithClock(log, every, time.Now)
}

// NewWithClock is New with the clock given, for tests.
func NewWithClock(log *slog.Logger, every time.Duration, now func() time.Time) *Logger {
	return &Logger{log: log, every: every, now: now, keys: map[string]*keyState{}}
}

// Allow reports whether a line for key may be written now, and if so how many lines for key
// were suppressed since the last one written.
func (l *Logger) Allow(key string) (ok bool, suppressed int) {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	k := l.keys[key]
	if k == nil {
		l.keys[key] = &keyState{last: now}
		return true, 0
	}
	if now.Sub(k.last) < l.every {
		k.suppressed++
		return false, 0
	}
	suppressed, k.suppressed, k.last = k.suppressed, 0, now
	return true, suppressed
}

// Warn logs msg with args at WARN under key unless the limit for key has been reached; the
// line carries "suppressed", the count of lines for key dropped before it, when there were any.
func (l *Logger) Warn(key, msg string, args ...any) { l.logAt(slog.LevelWarn, key, msg, args) }

// Error is Warn at ERROR.
func (l *Logger) Error(key, msg string, args ...any) { l.logAt(slog.LevelError, key, msg, args) }

func (l *Logger) logAt(level slog.Level, key, msg string, args []any) {
	ok, suppressed := l.Allow(key)
	if !ok {
		return
	}
	if suppressed > 0 {
		args = append(args, "suppressed", suppressed)
	}
	l.log.Log(context.Background(), level, msg, args...)
}
