package netns

import (
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
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
