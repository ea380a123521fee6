// Package statedir owns a site's persistent state: its identity and the link credentials
// (grants) it has issued to dialing sites.
//
// Layout, one directory per site so several sites can share a machine:
//
//	<state-dir>/<site>/            mode 0700
//	<state-dir>/<site>/identity.json
//	<state-dir>/<site>/grants/<link name>.json   mode 0600, one per issued credential
package statedir

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sync"
	"time"
)

// ErrGrantExists is returned when a credential name is issued twice.
var ErrGrantExists = errors.New("a link credential with this name already exists")

// SecretSize is the length in bytes of a link secret.
const SecretSize = 32

// Identity is who this site is across restarts.
type Identity struct {
	Site    string    `json:"site"`
	ID      string    `json:"id"`
	Created time.Time `json:"created"`
}

// Grant is a link credential this site issued; a dialing site presents its name and proves
// it holds the secret.
type Grant struct {
	Name    string    `json:"name"`
	Secret  []byte    `json:"secret"`
	Cost    int       `json:"cost"`
	Created time.Time `json:"created"`
}

// Dir is one site's state directory.
type Dir struct {
	path     string
	identity Identity

	mu     sync.Mutex
	grants map[string]Grant
}

var grantName = regexp.MustCompile(`^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$`)

// Open opens (creating on first use) the state of site under root.
func Open(root, site string) (*Dir, error) {
	if !grantName.MatchString(site) {
		return nil, fmt.Errorf("site name %q cannot name a state directory", site)
	}
	path := filepath.Join(root, site)
	if err := os.MkdirAll(filepath.Join(path, "grants"), 0o700); err != nil {
		return nil, fmt.Errorf("create state directory %s (set Site spec.settings state-dir or --state-dir to a writable path): %w", path, err)
	}
	// MkdirAll leaves an existing directory's mode alone; state holds secrets.
	if err := os.Chmod(path, 0o700); err != nil {
		return nil, fmt.Errorf("restrict state directory %s: %w", path, err)
	}
	d := &Dir{path: path, grants: map[string]Grant{}}
	idPath := filepath.Join(path, "identity.json")
	switch data, err := os.ReadFile(idPath); {
	case err == nil:
		if err := json.Unmarshal(data, &d.identity); err != nil {
			return nil, fmt.Errorf("read %s (remove it to start this site afresh): %w", idPath, err)
		}
		if d.identity.Site != site {
			return nil, fmt.Errorf("%s belongs to site %q, not %q: use another state-dir", idPath, d.identity.Site, site)
		}
	case errors.Is(err, os.ErrNotExist):
		id := make([]byte, 16)
		if _, err := rand.Read(id); err != nil {
			return nil, err
		}
		d.identity = Identity{Site: site, ID: hex.EncodeToString(id), Created: time.Now().UTC()}
		if err := writeJSON(idPath, d.identity); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("read %s: %w", idPath, err)
	}
	return d, nil
}

// Path returns the site's state directory.
func (d *Dir) Path() string { return d.path }

// Identity returns the site's persistent identity.
func (d *Dir) Identity() Identity { return d.identity }

// Issue creates a new credential for a dialing site.
func (d *Dir) Issue(name string, cost int) (Grant, error) {
	if !grantName.MatchString(name) || len(name) > 63 {
		return Grant{}, fmt.Errorf("link name %q: use lowercase letters, digits, '-' and '.', at most 63", name)
	}
	if cost < 1 {
		return Grant{}, fmt.Errorf("link cost %d: use an integer of 1 or more", cost)
	}
	g := Grant{Name: name, Secret: make([]byte, SecretSize), Cost: cost, Created: time.Now().UTC()}
	if _, err := rand.Read(g.Secret); err != nil {
		return Grant{}, err
	}
	p := d.grantPath(name)
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, os.ErrExist) {
		return Grant{}, fmt.Errorf("link %q (%s; pick another --name): %w", name, p, ErrGrantExists)
	}
	if err != nil {
		return Grant{}, fmt.Errorf("write %s: %w", p, err)
	}
	defer f.Close()
	if err := json.NewEncoder(f).Encode(g); err != nil {
		return Grant{}, fmt.Errorf("write %s: %w", p, err)
	}
	return g, f.Close()
}

// Grant returns the credential called name. A name not seen before is looked up on disk, so a
// credential issued by `skfwd link generate` while the gateway runs is accepted at once.
func (d *Dir) Grant(name string) (Grant, bool) {
	if !grantName.MatchString(name) {
		return Grant{}, false
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if g, ok := d.grants[name]; ok {
		return g, true
	}
	data, err := os.ReadFile(d.grantPath(name))
	if err != nil {
		return Grant{}, false
	}
	var g Grant
	if err := json.Unmarshal(data, &g); err != nil || g.Name != name || len(g.Secret) == 0 {
		return Grant{}, false
	}
	d.grants[name] = g
	return g, true
}

func (d *Dir) grantPath(name string) string {
	return filepath.Join(d.path, "grants", name+".json")
}

func writeJSON(path string, v any) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(path, append(data, '\n'), 0o600); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
