package netlab

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"sort"
	"strings"
	"sync"
	"time"
)

func sortedCopy(s []string) []string {
	out := append([]string(nil), s...)
	sort.Strings(out)
	return out
}

// Hello connects from site to addr and returns the name of the backend that answered.
func Hello(site *Site, addr string, timeout time.Duration) (string, error) {
	c, name, err := Hold(site, addr, timeout)
	if err != nil {
		return "", err
	}
	c.Close()
	return name, nil
}

// Hold connects from site to addr, reads the backend's banner, and returns the open
// connection with the backend's name.
func Hold(site *Site, addr string, timeout time.Duration) (*net.TCPConn, string, error) {
	c, err := site.Dial(addr, timeout)
	if err != nil {
		return nil, "", err
	}
	_ = c.SetReadDeadline(time.Now().Add(timeout))
	name, err := readLine(c)
	_ = c.SetReadDeadline(time.Time{})
	if err != nil {
		c.Close()
		return nil, "", fmt.Errorf("read banner: %w", err)
	}
	return c, name, nil
}

// readLine reads up to a newline one byte at a time, so nothing after it is consumed.
func readLine(r io.Reader) (string, error) {
	var b strings.Builder
	var one [1]byte
	for b.Len() < 1024 {
		if _, err := io.ReadFull(r, one[:]); err != nil {
			return b.String(), err
		}
		if one[0] == '\n' {
			return b.String(), nil
		}
		b.WriteByte(one[0])
	}
	return b.String(), errors.New("line too long")
}

// Xfer runs one checksummed transfer on c (after the banner): n bytes up and m bytes down at
// the same time, the client half-closing once its n bytes are out; both directions are
// checked byte for byte.
func Xfer(c *net.TCPConn, n, m int64, seedUp, seedDown uint64) error {
	if _, err := fmt.Fprintf(c, "xfer %d %d %d %d\n", seedUp, n, seedDown, m); err != nil {
		return err
	}
	sendErr := make(chan error, 1)
	go func() {
		_, err := io.Copy(c, io.LimitReader(NewStream(seedUp), n))
		if err == nil {
			err = c.CloseWrite()
		}
		sendErr <- err
	}()
	r := bufio.NewReaderSize(c, 64<<10)
	// The down stream is followed by the verdict; check the stream, then read the verdict.
	if err := VerifyStream(io.LimitReader(r, m), seedDown, m); err != nil {
		return fmt.Errorf("down stream: %w", err)
	}
	if err := <-sendErr; err != nil {
		return fmt.Errorf("up stream: %w", err)
	}
	verdict, err := readLine(r)
	if err != nil {
		return fmt.Errorf("read verdict: %w", err)
	}
	if verdict != "OK" {
		return fmt.Errorf("backend says up stream was %s", verdict)
	}
	if k, err := r.Read(make([]byte, 1)); k != 0 || !errors.Is(err, io.EOF) {
		return fmt.Errorf("no end of stream after the verdict (read %d, %v)", k, err)
	}
	return nil
}

// Event is one client connection of a load run.
type Event struct {
	Start, End time.Time
	Backend    string // who answered; empty on failure
	Err        error
}

// Load runs workers clients in site, each connecting to addr in a loop, reading the banner
// and closing, until stop is closed. Every connection becomes an Event.
func Load(site *Site, addr string, workers int, timeout time.Duration, stop <-chan struct{}) []Event {
	var mu sync.Mutex
	var events []Event
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				ev := Event{Start: time.Now()}
				ev.Backend, ev.Err = Hello(site, addr, timeout)
				ev.End = time.Now()
				mu.Lock()
				events = append(events, ev)
				mu.Unlock()
				if ev.Err != nil {
					time.Sleep(10 * time.Millisecond) // a failing target must not spin
				}
			}
		}()
	}
	wg.Wait()
	sort.Slice(events, func(i, j int) bool { return events[i].Start.Before(events[j].Start) })
	return events
}

// Summary counts a load run's events per backend and its failures.
type Summary struct {
	Total, Failed int
	PerBackend    map[string]int
	MaxLatency    time.Duration
	FirstFailures []error
}

// Summarize summarizes events that started within [from, to) (zero times mean unbounded).
func Summarize(events []Event, from, to time.Time) Summary {
	s := Summary{PerBackend: map[string]int{}}
	for _, ev := range events {
		if (!from.IsZero() && ev.Start.Before(from)) || (!to.IsZero() && !ev.Start.Before(to)) {
			continue
		}
		s.Total++
		if d := ev.End.Sub(ev.Start); d > s.MaxLatency {
			s.MaxLatency = d
		}
		if ev.Err != nil {
			s.Failed++
			if len(s.FirstFailures) < 5 {
				s.FirstFailures = append(s.FirstFailures, ev.Err)
			}
			continue
		}
		s.PerBackend[ev.Backend]++
	}
	return s
}
