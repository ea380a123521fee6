package statedir

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestOpenCreatesPrivateDirAndKeepsIdentity(t *testing.T) {
	root := t.TempDir()
	d, err := Open(root, "west")
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(filepath.Join(root, "west"))
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o700 {
		t.Errorf("state dir mode %v, want 0700", st.Mode().Perm())
	}
	again, err := Open(root, "west")
	if err != nil {
		t.Fatal(err)
	}
	if again.Identity().ID != d.Identity().ID || d.Identity().ID == "" {
		t.Errorf("identity changed across opens: %q then %q", d.Identity().ID, again.Identity().ID)
	}
	other, err := Open(root, "east")
	if err != nil {
		t.Fatal(err)
	}
	if other.Identity().ID == d.Identity().ID {
		t.Error("two sites share one identity")
	}
}

func TestIssueAndLookupGrant(t *testing.T) {
	root := t.TempDir()
	d, err := Open(root, "east")
	if err != nil {
		t.Fatal(err)
	}
	g, err := d.Issue("west-link", 3)
	if err != nil {
		t.Fatal(err)
	}
	if len(g.Secret) != SecretSize || g.Cost != 3 {
		t.Fatalf("grant %+v", g)
	}
	if _, err := d.Issue("west-link", 1); !errors.Is(err, ErrGrantExists) {
		t.Errorf("second issue of the same name: err %v, want ErrGrantExists", err)
	}
	// A running gateway (another Dir on the same path) sees a grant issued after it started.
	running, err := Open(root, "east")
	if err != nil {
		t.Fatal(err)
	}
	got, ok := running.Grant("west-link")
	if !ok || !bytes.Equal(got.Secret, g.Secret) || got.Cost != 3 {
		t.Fatalf("lookup: %+v %v", got, ok)
	}
	for _, bad := range []string{"nope", "../identity", ""} {
		if _, ok := running.Grant(bad); ok {
			t.Errorf("grant %q found", bad)
		}
	}
	st, err := os.Stat(filepath.Join(root, "east", "grants", "west-link.json"))
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("grant file mode %v, want 0600", st.Mode().Perm())
	}
}

func TestOpenRejectsForeignIdentity(t *testing.T) {
	root := t.TempDir()
	if _, err := Open(root, "west"); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(root, "west"), filepath.Join(root, "east")); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(root, "east"); err == nil {
		t.Fatal("opened a state directory that belongs to another site")
	}
}
