package netns

import (
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/skfwd/skfwd/internal/netlab"
)

var secretLine = regexp.MustCompile(`(?m)^(  secret: )(\S+)$`)

// tamperSecret replaces the secret of every Link Secret in dir with another valid one.
func tamperSecret(dir string) error {
	files, err := filepath.Glob(filepath.Join(dir, "link-*.yaml"))
	if err != nil {
		return err
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		other := base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef"))
		b = secretLine.ReplaceAll(b, []byte("${1}"+other))
		if err := os.WriteFile(f, b, 0o600); err != nil {
			return err
		}
	}
	return nil
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }

func logContains(path, sub string) bool {
	b, _ := os.ReadFile(path)
	return strings.Contains(string(b), sub)
}

func isReset(err error) bool { return errors.Is(err, syscall.ECONNRESET) }

// scrape returns the site's /metrics page.
func scrape(t *testing.T, s *netlab.Site) string {
	t.Helper()
	body, err := scrapeSite(s)
	check(t, err)
	return body
}

func scrapeSite(s *netlab.Site) (string, error) {
	resp, err := s.AdminGet("/metrics")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// sampleValue returns the value of series (name and labels, as Prometheus writes them:
// labels sorted by name) in the exposition body.
func sampleValue(body, series string) (float64, error) {
	for _, line := range strings.Split(body, "\n") {
		v, ok := strings.CutPrefix(line, series+" ")
		if !ok {
			continue
		}
		return strconv.ParseFloat(v, 64)
	}
	return 0, fmt.Errorf("%s is not exported", series)
}

// sampleIs checks that the exposition body has series with value want.
func sampleIs(body, series string, want float64) error {
	got, err := sampleValue(body, series)
	if err != nil {
		return err
	}
	if got != want {
		return fmt.Errorf("%s = %v, want %v", series, got, want)
	}
	return nil
}

func checkSample(t *testing.T, body, series string, want float64) {
	t.Helper()
	if err := sampleIs(body, series, want); err != nil {
		t.Error(err)
	}
}

// waitSamples scrapes s until cond holds, for up to converged.
func waitSamples(s *netlab.Site, cond func(body string) error) error {
	deadline := time.Now().Add(converged)
	for {
		body, err := scrapeSite(s)
		if err == nil {
			err = cond(body)
		}
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
}
