package config

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestLoadValid(t *testing.T) {
	const f = "testdata/valid.yaml"
	settings := DefaultSettings()
	settings.HeartbeatInterval = 200 * time.Millisecond
	want := &Config{
		Site: Site{Name: "west", Settings: settings, Origin: Origin{File: f, Doc: 1, Line: 1}},
		RouterAccess: []RouterAccess{
			{Name: "skupper-router", BindHost: "10.0.0.1", Port: 55671, Origin: Origin{File: f, Doc: 2, Line: 8}},
		},
		Listeners: []Listener{
			{Name: "backend", RoutingKey: "backend", Host: "0.0.0.0", Port: 8080, Origin: Origin{File: f, Doc: 3, Line: 15}},
		},
		Connectors: []Connector{
			{Name: "backend", RoutingKey: "backend", Host: "127.0.0.1", Port: 9090, Origin: Origin{File: f, Doc: 4, Line: 20}},
		},
		Links: []Link{{
			Name: "west-to-east", Cost: 2, Credentials: "west-to-east",
			Endpoints: []Endpoint{{Name: "inter-router", Host: "10.0.0.2", Port: 55671}},
			Origin:    Origin{File: f, Doc: 5, Line: 25},
		}},
		Secrets: map[string]Secret{
			"west-to-east": {
				Name:   "west-to-east",
				Data:   map[string][]byte{"secret": []byte("secret-secret-secret-secret-123")},
				Origin: Origin{File: f, Doc: 6, Line: 33},
			},
		},
	}
	got, err := Load(f)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Load(%s)\n got %+v\nwant %+v", f, got, want)
	}
	if got, want := got.Listeners[0].Address(), "0.0.0.0:8080"; got != want {
		t.Errorf("Listener.Address() = %q, want %q", got, want)
	}
	if got, want := got.RouterAccess[0].Address(), "10.0.0.1:55671"; got != want {
		t.Errorf("RouterAccess.Address() = %q, want %q", got, want)
	}
}

func TestLoadDirectory(t *testing.T) {
	dir := filepath.Join("testdata", "dir")
	site := filepath.Join(dir, "a-site.yaml")
	links := filepath.Join(dir, "b-links.yml")
	settings := DefaultSettings()
	settings.AdminAddress = ""
	settings.TunnelPoolSize = 0
	want := &Config{
		Site: Site{Name: "west", Settings: settings, Origin: Origin{File: site, Doc: 1, Line: 1}},
		Listeners: []Listener{
			{Name: "db", RoutingKey: "db", Host: "::", Port: 5432, Origin: Origin{File: site, Doc: 2, Line: 10}},
		},
		Links: []Link{{
			Name: "to-east", Cost: 1, Credentials: "to-east",
			Endpoints: []Endpoint{{Name: "inter-router", Host: "east.example.com", Port: 55671}},
			Origin:    Origin{File: links, Doc: 1, Line: 2},
		}},
		Secrets: map[string]Secret{
			"to-east": {
				Name:   "to-east",
				Data:   map[string][]byte{"secret": []byte("plain-key")},
				Origin: Origin{File: links, Doc: 3, Line: 17},
			},
		},
	}
	got, err := Load(dir)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Load(%s)\n got %+v\nwant %+v", dir, got, want)
	}
	if got, want := got.Listeners[0].Address(), "[::]:5432"; got != want {
		t.Errorf("Listener.Address() = %q, want %q", got, want)
	}
}

func TestLoadUnreadable(t *testing.T) {
	missing := filepath.Join("testdata", "does-not-exist.yaml")
	_, err := Load(missing)
	if !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Load(%s) = %v, want fs.ErrNotExist", missing, err)
	}
	if !strings.Contains(err.Error(), missing) {
		t.Errorf("error %q does not name %s", err, missing)
	}
}

const siteDoc = `apiVersion: skupper.io/v2alpha1
kind: Site
metadata: {name: west}
`

// siteFile is added to cases that are not about the Site, so that the
// expected problems are only the ones the case is about.
var siteFile = File{Name: "site.yaml", Data: []byte(siteDoc)}

type wantProblem struct {
	file   string
	doc    int
	line   int // 0 = do not check
	kind   string
	name   string
	field  string
	phrase string // must appear in Msg or Fix
}

func TestParseProblems(t *testing.T) {
	tests := []struct {
		name   string
		input  string
		noSite bool // do not add siteFile
		want   []wantProblem
	}{
		{
			name:   "no site",
			noSite: true,
			input:  "apiVersion: skupper.io/v2alpha1\nkind: Listener\nmetadata: {name: db}\nspec: {routingKey: db, host: 0.0.0.0, port: 5432}\n",
			want:   []wantProblem{{file: "", doc: 0, field: "", phrase: "no Site in in.yaml"}},
		},
		{
			name:  "listener max-connections not a number",
			input: "apiVersion: skupper.io/v2alpha1\nkind: Listener\nmetadata: {name: db}\nspec: {routingKey: db, host: 0.0.0.0, port: 5432, settings: {max-connections: lots}}\n",
			want:  []wantProblem{{file: "in.yaml", doc: 1, line: 4, kind: "Listener", name: "db", field: "spec.settings.max-connections", phrase: "0 to 1048576"}},
		},
		{
			name:  "unknown listener setting",
			input: "apiVersion: skupper.io/v2alpha1\nkind: Listener\nmetadata: {name: db}\nspec: {routingKey: db, host: 0.0.0.0, port: 5432, settings: {idle: 5s}}\n",
			want:  []wantProblem{{file: "in.yaml", doc: 1, line: 4, kind: "Listener", name: "db", field: "spec.settings.idle", phrase: "use max-connections or idle-timeout"}},
		},
		{
			name:  "listener idle-timeout too short",
			input: "apiVersion: skupper.io/v2alpha1\nkind: Listener\nmetadata: {name: db}\nspec: {routingKey: db, host: 0.0.0.0, port: 5432, settings: {idle-timeout: 10ms}}\n",
			want:  []wantProblem{{file: "in.yaml", doc: 1, line: 4, kind: "Listener", name: "db", field: "spec.settings.idle-timeout", phrase: "1s or more"}},
		},
		{
			name:  "two sites",
			input: "apiVersion: skupper.io/v2alpha1\nkind: Site\nmetadata: {name: east}\n",
			want:  []wantProblem{{file: "in.yaml", doc: 1, line: 1, kind: "Site", name: "east", phrase: "keep exactly one Site"}},
		},
		{
			name:  "unknown kind",
			input: "---\n---\napiVersion: skupper.io/v2alpha1\nkind: AccessGrant\nmetadata: {name: g}\n",
			want:  []wantProblem{{file: "in.yaml", doc: 2, line: 4, kind: "AccessGrant", field: "kind", phrase: "Site, RouterAccess, Link, Listener, Connector, Secret"}},
		},
		{
			name:  "unknown apiVersion",
			input: "apiVersion: skupper.io/v1alpha1\nkind: Listener\nmetadata: {name: db}\nspec: {routingKey: db, host: 0.0.0.0, port: 5432}\n",
			want:  []wantProblem{{file: "in.yaml", doc: 1, line: 1, kind: "Listener", name: "db", field: "apiVersion", phrase: "use apiVersion: skupper.io/v2alpha1"}},
		},
		{
			name:  "secret with skupper apiVersion",
			input: "apiVersion: skupper.io/v2alpha1\nkind: Secret\nmetadata: {name: s}\n",
			want:  []wantProblem{{file: "in.yaml", doc: 1, line: 1, kind: "Secret", name: "s", field: "apiVersion", phrase: "use apiVersion: v1"}},
		},
		{
			name:  "missing apiVersion",
			input: "kind: Connector\nmetadata: {name: db}\nspec: {routingKey: db, host: db.local, port: 5432}\n",
			want:  []wantProblem{{file: "in.yaml", doc: 1, line: 1, kind: "Connector", name: "db", field: "apiVersion", phrase: "required"}},
		},
		{
			name:  "document is not a mapping",
			input: "- a\n- b\n",
			want:  []wantProblem{{file: "in.yaml", doc: 1, line: 1, phrase: "not a mapping"}},
		},
		{
			name:  "document has no kind",
			input: "apiVersion: skupper.io/v2alpha1\nmetadata: {name: x}\n",
			want:  []wantProblem{{file: "in.yaml", doc: 1, line: 1, field: "kind", phrase: "required field is missing"}},
		},
		{
			name:  "invalid yaml",
			input: "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\n---\nspec: [\n",
			want:  []wantProblem{{file: "in.yaml", doc: 2, line: 5, phrase: "invalid YAML"}},
		},
		{
			name:  "duplicate key",
			input: "apiVersion: skupper.io/v2alpha1\nkind: Listener\nmetadata: {name: db}\nspec:\n  routingKey: db\n  host: 0.0.0.0\n  port: 5432\n  port: 5433\n",
			want:  []wantProblem{{file: "in.yaml", doc: 1, line: 8, kind: "Listener", name: "db", field: "spec.port", phrase: "appears twice"}},
		},
		{
			name:  "missing name",
			input: "apiVersion: skupper.io/v2alpha1\nkind: Connector\nspec: {routingKey: db, host: db.local, port: 5432}\n",
			want:  []wantProblem{{file: "in.yaml", doc: 1, line: 1, kind: "Connector", field: "metadata.name", phrase: "required field is missing"}},
		},
		{
			name:  "bad name",
			input: "apiVersion: skupper.io/v2alpha1\nkind: Connector\nmetadata: {name: My_DB}\nspec: {routingKey: db, host: db.local, port: 5432}\n",
			want:  []wantProblem{{file: "in.yaml", doc: 1, line: 3, kind: "Connector", name: "My_DB", field: "metadata.name", phrase: `"My_DB" is not a valid name`}},
		},
		{
			name:  "name too long",
			input: "apiVersion: skupper.io/v2alpha1\nkind: Connector\nmetadata: {name: " + strings.Repeat("a", 64) + "}\nspec: {routingKey: db, host: db.local, port: 5432}\n",
			want:  []wantProblem{{file: "in.yaml", doc: 1, line: 3, kind: "Connector", name: strings.Repeat("a", 64), field: "metadata.name", phrase: "1 to 63"}},
		},
		{
			name:   "site name with a dot",
			noSite: true,
			input:  "apiVersion: skupper.io/v2alpha1\nkind: Site\nmetadata: {name: west.eu}\n",
			want:   []wantProblem{{file: "in.yaml", doc: 1, line: 3, kind: "Site", name: "west.eu", field: "metadata.name", phrase: "identity in the network"}},
		},
		{
			name: "duplicate names within a kind",
			input: "apiVersion: skupper.io/v2alpha1\nkind: Connector\nmetadata: {name: db}\nspec: {routingKey: db, host: a.local, port: 5432}\n" +
				"---\napiVersion: skupper.io/v2alpha1\nkind: Listener\nmetadata: {name: db}\nspec: {routingKey: db, host: 0.0.0.0, port: 5432}\n" +
				"---\napiVersion: skupper.io/v2alpha1\nkind: Connector\nmetadata: {name: db}\nspec: {routingKey: db, host: b.local, port: 5432}\n",
			want: []wantProblem{{file: "in.yaml", doc: 3, line: 13, kind: "Connector", name: "db", field: "metadata.name", phrase: "already defined at in.yaml:1 (document 1)"}},
		},
		{
			name:   "unknown setting",
			input:  "apiVersion: skupper.io/v2alpha1\nkind: Site\nmetadata: {name: east}\nspec:\n  settings:\n    heartbeat: 1s\n",
			noSite: true,
			want:   []wantProblem{{file: "in.yaml", doc: 1, line: 6, kind: "Site", name: "east", field: "spec.settings.heartbeat", phrase: "admin-address, state-dir, heartbeat-interval"}},
		},
		{
			name:   "bad duration setting",
			noSite: true,
			input:  "apiVersion: skupper.io/v2alpha1\nkind: Site\nmetadata: {name: east}\nspec:\n  settings:\n    probe-interval: soon\n",
			want:   []wantProblem{{file: "in.yaml", doc: 1, line: 6, kind: "Site", name: "east", field: "spec.settings.probe-interval", phrase: `"soon" is not a duration`}},
		},
		{
			name:   "link-dead-time not above heartbeat-interval",
			noSite: true,
			input:  "apiVersion: skupper.io/v2alpha1\nkind: Site\nmetadata: {name: east}\nspec:\n  settings:\n    heartbeat-interval: 1s\n    link-dead-time: 1s\n",
			want:   []wantProblem{{file: "in.yaml", doc: 1, line: 7, kind: "Site", name: "east", field: "spec.settings.link-dead-time", phrase: "must be greater than heartbeat-interval"}},
		},
		{
			name:   "heartbeat-interval alone above the default dead time",
			noSite: true,
			input:  "apiVersion: skupper.io/v2alpha1\nkind: Site\nmetadata: {name: east}\nspec:\n  settings:\n    heartbeat-interval: 3s\n",
			want:   []wantProblem{{file: "in.yaml", doc: 1, line: 6, kind: "Site", name: "east", field: "spec.settings.heartbeat-interval", phrase: "must be greater than heartbeat-interval"}},
		},
		{
			name:   "tunnel-pool-size out of range",
			noSite: true,
			input:  "apiVersion: skupper.io/v2alpha1\nkind: Site\nmetadata: {name: east}\nspec:\n  settings: {tunnel-pool-size: 2000}\n",
			want:   []wantProblem{{file: "in.yaml", doc: 1, line: 5, kind: "Site", name: "east", field: "spec.settings.tunnel-pool-size", phrase: "from 0 to 1024"}},
		},
		{
			name:  "only an edge role",
			input: "apiVersion: skupper.io/v2alpha1\nkind: RouterAccess\nmetadata: {name: ra}\nspec:\n  roles:\n  - name: edge\n    port: 45671\n",
			want:  []wantProblem{{file: "in.yaml", doc: 1, line: 5, kind: "RouterAccess", name: "ra", field: "spec.roles", phrase: "no inter-router role"}},
		},
		{
			name:  "router access without roles",
			input: "apiVersion: skupper.io/v2alpha1\nkind: RouterAccess\nmetadata: {name: ra}\nspec: {bindHost: 10.0.0.1}\n",
			want:  []wantProblem{{file: "in.yaml", doc: 1, line: 4, kind: "RouterAccess", name: "ra", field: "spec.roles", phrase: "no inter-router role"}},
		},
		{
			name:  "link cost zero",
			input: linkWith("cost: 0"),
			want:  []wantProblem{{file: "in.yaml", doc: 1, line: 5, kind: "Link", name: "l", field: "spec.cost", phrase: "0 is less than 1"}},
		},
		{
			name:  "link cost negative",
			input: linkWith("cost: -3"),
			want:  []wantProblem{{file: "in.yaml", doc: 1, line: 5, kind: "Link", name: "l", field: "spec.cost", phrase: "-3 is less than 1"}},
		},
		{
			name:  "link cost fractional",
			input: linkWith("cost: 1.5"),
			want:  []wantProblem{{file: "in.yaml", doc: 1, line: 5, kind: "Link", name: "l", field: "spec.cost", phrase: `"1.5" is not an integer`}},
		},
		{
			name:  "link cost not a number",
			input: linkWith("cost: abc"),
			want:  []wantProblem{{file: "in.yaml", doc: 1, line: 5, kind: "Link", name: "l", field: "spec.cost", phrase: `"abc" is not an integer`}},
		},
		{
			name:  "link secret missing",
			input: "apiVersion: skupper.io/v2alpha1\nkind: Link\nmetadata: {name: l}\nspec:\n  tlsCredentials: nowhere\n  endpoints: [{host: east, port: 55671}]\n",
			want:  []wantProblem{{file: "in.yaml", doc: 1, line: 5, kind: "Link", name: "l", field: "spec.tlsCredentials", phrase: "add the Secret printed by `skfwd link generate` next to this Link"}},
		},
		{
			name:  "link without credentials",
			input: "apiVersion: skupper.io/v2alpha1\nkind: Link\nmetadata: {name: l}\nspec:\n  endpoints: [{host: east, port: 55671}]\n",
			want:  []wantProblem{{file: "in.yaml", doc: 1, line: 5, kind: "Link", name: "l", field: "spec.tlsCredentials", phrase: "required field is missing"}},
		},
		{
			name:  "link with only edge endpoints",
			input: "apiVersion: skupper.io/v2alpha1\nkind: Link\nmetadata: {name: l}\nspec:\n  tlsCredentials: s\n  endpoints: [{name: edge, host: east, port: 45671}]\n" + secretS,
			want:  []wantProblem{{file: "in.yaml", doc: 1, line: 5, kind: "Link", name: "l", field: "spec.endpoints", phrase: "no inter-router endpoint"}},
		},
		{
			name:  "link endpoint without host",
			input: "apiVersion: skupper.io/v2alpha1\nkind: Link\nmetadata: {name: l}\nspec:\n  tlsCredentials: s\n  endpoints:\n  - port: 55671\n" + secretS,
			want:  []wantProblem{{file: "in.yaml", doc: 1, line: 7, kind: "Link", name: "l", field: "spec.endpoints[0].host", phrase: "required field is missing"}},
		},
		{
			name:  "listener port out of range",
			input: "apiVersion: skupper.io/v2alpha1\nkind: Listener\nmetadata: {name: db}\nspec: {routingKey: db, host: 0.0.0.0, port: 70000}\n",
			want:  []wantProblem{{file: "in.yaml", doc: 1, line: 4, kind: "Listener", name: "db", field: "spec.port", phrase: "70000 is out of range"}},
		},
		{
			name:  "listener missing fields",
			input: "apiVersion: skupper.io/v2alpha1\nkind: Listener\nmetadata: {name: db}\nspec: {}\n",
			want: []wantProblem{
				{file: "in.yaml", doc: 1, line: 4, kind: "Listener", name: "db", field: "spec.routingKey", phrase: "required field is missing"},
				{file: "in.yaml", doc: 1, line: 4, kind: "Listener", name: "db", field: "spec.host", phrase: "required field is missing"},
				{file: "in.yaml", doc: 1, line: 4, kind: "Listener", name: "db", field: "spec.port", phrase: "required field is missing"},
			},
		},
		{
			name:  "listener host with port",
			input: "apiVersion: skupper.io/v2alpha1\nkind: Listener\nmetadata: {name: db}\nspec: {routingKey: db, host: '0.0.0.0:5432', port: 5432}\n",
			want:  []wantProblem{{file: "in.yaml", doc: 1, line: 4, kind: "Listener", name: "db", field: "spec.host", phrase: "port goes in its own field"}},
		},
		{
			name:  "routing key with a space",
			input: "apiVersion: skupper.io/v2alpha1\nkind: Listener\nmetadata: {name: db}\nspec: {routingKey: 'my db', host: 0.0.0.0, port: 5432}\n",
			want:  []wantProblem{{file: "in.yaml", doc: 1, line: 4, kind: "Listener", name: "db", field: "spec.routingKey", phrase: "printable ASCII"}},
		},
		{
			name:  "routing key too long",
			input: "apiVersion: skupper.io/v2alpha1\nkind: Connector\nmetadata: {name: db}\nspec: {routingKey: " + strings.Repeat("k", 201) + ", host: db.local, port: 5432}\n",
			want:  []wantProblem{{file: "in.yaml", doc: 1, line: 4, kind: "Connector", name: "db", field: "spec.routingKey", phrase: "is 201 bytes long"}},
		},
		{
			name:  "connector with selector",
			input: "apiVersion: skupper.io/v2alpha1\nkind: Connector\nmetadata: {name: backend}\nspec:\n  routingKey: backend\n  selector: app=backend\n  port: 8080\n",
			want:  []wantProblem{{file: "in.yaml", doc: 1, line: 6, kind: "Connector", name: "backend", field: "spec.selector", phrase: "skfwd connects to host:port; set spec.host"}},
		},
		{
			name:  "connector port not a number",
			input: "apiVersion: skupper.io/v2alpha1\nkind: Connector\nmetadata: {name: backend}\nspec: {routingKey: backend, host: db.local, port: http}\n",
			want:  []wantProblem{{file: "in.yaml", doc: 1, line: 4, kind: "Connector", name: "backend", field: "spec.port", phrase: `"http" is not an integer`}},
		},
		{
			name:  "bad base64",
			input: "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\ndata:\n  ok: b2s=\n  key: '!!!not base64'\n",
			want:  []wantProblem{{file: "in.yaml", doc: 1, line: 6, kind: "Secret", name: "s", field: "data.key", phrase: "not valid base64"}},
		},
		{
			name:  "listener on the same address as another listener",
			input: listener("a", "10.0.0.1", 80) + "---\n" + listener("b", "10.0.0.1", 80),
			want:  []wantProblem{{file: "in.yaml", doc: 2, line: 9, kind: "Listener", name: "b", field: "spec.port", phrase: `already used by Listener "a" (in.yaml:1 (document 1))`}},
		},
		{
			name:  "wildcard listener overlaps a specific one",
			input: listener("a", "10.0.0.1", 80) + "---\n" + listener("b", "::", 80),
			want:  []wantProblem{{file: "in.yaml", doc: 2, line: 9, kind: "Listener", name: "b", field: "spec.port", phrase: `already used by Listener "a"`}},
		},
		{
			name:  "listener on the router access address",
			input: "apiVersion: skupper.io/v2alpha1\nkind: RouterAccess\nmetadata: {name: ra}\nspec:\n  roles: [{name: inter-router}]\n---\n" + listener("a", "10.0.0.1", 55671),
			want:  []wantProblem{{file: "in.yaml", doc: 2, line: 10, kind: "Listener", name: "a", field: "spec.port", phrase: `already used by RouterAccess "ra"`}},
		},
		{
			name:  "router access on the admin address",
			input: "apiVersion: skupper.io/v2alpha1\nkind: RouterAccess\nmetadata: {name: ra}\nspec:\n  bindHost: 127.0.0.1\n  roles:\n  - name: inter-router\n    port: 9441\n",
			want:  []wantProblem{{file: "in.yaml", doc: 1, line: 8, kind: "RouterAccess", name: "ra", field: "spec.roles[0].port", phrase: "admin-address"}},
		},
		{
			name:  "listener on the admin address",
			input: listener("a", "0.0.0.0", 9441),
			want:  []wantProblem{{file: "in.yaml", doc: 1, line: 4, kind: "Listener", name: "a", field: "spec.port", phrase: "admin-address"}},
		},
		{
			name:  "link secret empty",
			input: linkWithSecret("data:\n  secret: ''\n"),
			want:  []wantProblem{{file: "in.yaml", doc: 2, line: 12, kind: "Secret", name: "s", field: "data.secret", phrase: "the link secret is empty"}},
		},
		{
			name:  "link secret empty in stringData",
			input: linkWithSecret("stringData:\n  secret: ''\n"),
			want:  []wantProblem{{file: "in.yaml", doc: 2, line: 12, kind: "Secret", name: "s", field: "stringData.secret", phrase: "skfwd link generate"}},
		},
		{
			name:  "link secret under another key",
			input: linkWithSecret("type: kubernetes.io/tls\ndata:\n  tls.key: c2VjcmV0\n"),
			want:  []wantProblem{{file: "in.yaml", doc: 2, line: 13, kind: "Secret", name: "s", field: "data.secret", phrase: "the Secret has data.tls.key"}},
		},
		{
			name:  "link secret without data",
			input: linkWithSecret("type: Opaque\n"),
			want:  []wantProblem{{file: "in.yaml", doc: 2, line: 8, kind: "Secret", name: "s", field: "data.secret", phrase: "the Secret has no data"}},
		},
		{
			name:  "secret no link names may hold anything",
			input: "apiVersion: v1\nkind: Secret\nmetadata: {name: other}\ndata: {tls.crt: c2VjcmV0}\n",
		},
		{
			name:  "listener host out of range",
			input: listener("a", "999.1.1.1", 80),
			want:  []wantProblem{{file: "in.yaml", doc: 1, line: 4, kind: "Listener", name: "a", field: "spec.host", phrase: "each of its four numbers must be from 0 to 255"}},
		},
		{
			name:  "listener host with three numbers",
			input: listener("a", "10.0.1", 80),
			want:  []wantProblem{{file: "in.yaml", doc: 1, line: 4, kind: "Listener", name: "a", field: "spec.host", phrase: "an IP address of this host"}},
		},
		{
			name:  "connector host out of range",
			input: connector("db", "10.0.0.256"),
			want:  []wantProblem{{file: "in.yaml", doc: 1, line: 4, kind: "Connector", name: "db", field: "spec.host", phrase: "four numbers from 0 to 255"}},
		},
		{
			name:  "connector host with an empty label",
			input: connector("db", "db..local"),
			want:  []wantProblem{{file: "in.yaml", doc: 1, line: 4, kind: "Connector", name: "db", field: "spec.host", phrase: "empty label"}},
		},
		{
			name:  "connector host label starting with a dash",
			input: connector("db", "-db.local"),
			want:  []wantProblem{{file: "in.yaml", doc: 1, line: 4, kind: "Connector", name: "db", field: "spec.host", phrase: `label "-db" starts or ends with '-'`}},
		},
		{
			name:  "connector host with an underscore",
			input: connector("db", "my_db"),
			want:  []wantProblem{{file: "in.yaml", doc: 1, line: 4, kind: "Connector", name: "db", field: "spec.host", phrase: `contains '_'`}},
		},
		{
			name:  "connector host label too long",
			input: connector("db", strings.Repeat("d", 64)+".local"),
			want:  []wantProblem{{file: "in.yaml", doc: 1, line: 4, kind: "Connector", name: "db", field: "spec.host", phrase: "longer than 63 characters"}},
		},
		{
			name:  "connector host name too long",
			input: connector("db", strings.Repeat(strings.Repeat("d", 63)+".", 4)+"local"),
			want:  []wantProblem{{file: "in.yaml", doc: 1, line: 4, kind: "Connector", name: "db", field: "spec.host", phrase: "longer than 253 characters"}},
		},
		{
			name:  "link endpoint host out of range",
			input: "apiVersion: skupper.io/v2alpha1\nkind: Link\nmetadata: {name: l}\nspec:\n  tlsCredentials: s\n  endpoints:\n  - host: 256.256.256.256\n    port: 55671\n" + secretS,
			want:  []wantProblem{{file: "in.yaml", doc: 1, line: 7, kind: "Link", name: "l", field: "spec.endpoints[0].host", phrase: "four numbers from 0 to 255"}},
		},
		{
			name:  "router access bind host out of range",
			input: "apiVersion: skupper.io/v2alpha1\nkind: RouterAccess\nmetadata: {name: ra}\nspec:\n  bindHost: 300.0.0.1\n  roles: [{name: inter-router}]\n",
			want:  []wantProblem{{file: "in.yaml", doc: 1, line: 5, kind: "RouterAccess", name: "ra", field: "spec.bindHost", phrase: "0.0.0.0 or :: for all"}},
		},
		{
			name: "hosts that are names or addresses",
			input: connector("a", "db.example.com.") + "---\n" + connector("b", "localhost") + "---\n" + connector("c", "::1") +
				"---\n" + connector("d", "10.0.0.1") + "---\n" + connector("e", "3com.example") + "---\n" + listener("f", "fe80::1", 80),
		},
		{
			name:  "different ports do not conflict",
			input: listener("a", "0.0.0.0", 80) + "---\n" + listener("b", "0.0.0.0", 81),
		},
		{
			name:  "different hosts do not conflict",
			input: listener("a", "10.0.0.1", 80) + "---\n" + listener("b", "10.0.0.2", 80),
		},
	}
	// Every problem of a file names its line, so editors can jump to it; the table holds the
	// malformed configurations skfwd check must catch, each with its line and a fix.
	malformed := 0
	for _, tt := range tests {
		if len(tt.want) > 0 {
			malformed++
		}
		for _, w := range tt.want {
			if w.file != "" && w.line == 0 {
				t.Errorf("case %q: want a line for the problem in %s", tt.name, w.file)
			}
		}
	}
	if malformed < 30 {
		t.Errorf("%d malformed configurations in the table, want at least 30", malformed)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			files := []File{{Name: "in.yaml", Data: []byte(tt.input)}}
			if !tt.noSite {
				files = append([]File{siteFile}, files...)
			}
			cfg, err := Parse(files)
			problems := problemsOf(t, err)
			if len(problems) != len(tt.want) {
				t.Fatalf("got %d problems, want %d:\n%s", len(problems), len(tt.want), err)
			}
			if len(tt.want) == 0 {
				if cfg == nil {
					t.Fatal("Parse returned no error and no Config")
				}
				return
			}
			if cfg != nil {
				t.Errorf("Parse returned a Config along with problems")
			}
			for i, w := range tt.want {
				checkProblem(t, problems[i], w)
			}
		})
	}
}

func TestParseManyProblems(t *testing.T) {
	input := `apiVersion: skupper.io/v2alpha1
kind: Site
metadata: {name: West}
spec:
  settings:
    answer-timeout: -1s
    first-bytes-limit: 10
---
apiVersion: skupper.io/v2alpha1
kind: Listener
metadata: {name: db}
spec: {routingKey: db, host: 0.0.0.0, port: 0}
---
apiVersion: skupper.io/v2alpha1
kind: Gateway
metadata: {name: g}
---
apiVersion: skupper.io/v2alpha1
kind: Link
metadata: {name: l}
spec:
  cost: 0
  tlsCredentials: missing
  endpoints: [{host: east, port: 99999}]
`
	_, err := Parse([]File{{Name: "many.yaml", Data: []byte(input)}})
	want := []wantProblem{
		{file: "many.yaml", doc: 1, line: 3, kind: "Site", name: "West", field: "metadata.name", phrase: "not a valid name"},
		{file: "many.yaml", doc: 1, line: 6, kind: "Site", name: "West", field: "spec.settings.answer-timeout", phrase: "greater than 0"},
		{file: "many.yaml", doc: 1, line: 7, kind: "Site", name: "West", field: "spec.settings.first-bytes-limit", phrase: "from 1024 to 1048576"},
		{file: "many.yaml", doc: 2, line: 12, kind: "Listener", name: "db", field: "spec.port", phrase: "0 is out of range"},
		{file: "many.yaml", doc: 3, line: 15, kind: "Gateway", field: "kind", phrase: `unknown kind "Gateway"`},
		{file: "many.yaml", doc: 4, line: 22, kind: "Link", name: "l", field: "spec.cost", phrase: "less than 1"},
		{file: "many.yaml", doc: 4, line: 24, kind: "Link", name: "l", field: "spec.endpoints[0].port", phrase: "99999 is out of range"},
		{file: "many.yaml", doc: 4, line: 23, kind: "Link", name: "l", field: "spec.tlsCredentials", phrase: `Secret "missing"`},
	}
	problems := problemsOf(t, err)
	if len(problems) != len(want) {
		t.Fatalf("got %d problems, want %d:\n%s", len(problems), len(want), err)
	}
	for i, w := range want {
		checkProblem(t, problems[i], w)
	}
}

func TestParseWarnings(t *testing.T) {
	input := `apiVersion: skupper.io/v2alpha1
kind: RouterAccess
metadata: {name: ra}
spec:
  generateTlsCredentials: true
  roles: [{name: inter-router, port: 55671}, {name: edge, port: 45671}]
---
apiVersion: skupper.io/v2alpha1
kind: Link
metadata: {name: l}
spec:
  tlsCredentials: s
  noClientAuth: true
  endpoints: [{name: inter-router, host: east, port: "55671", group: g}, {name: other, host: x, port: 1}]
---
apiVersion: skupper.io/v2alpha1
kind: Listener
metadata: {name: db, namespace: ns}
spec: {routingKey: db, host: 0.0.0.0, port: 5432, type: tcp, tlsCredentials: t}
---
apiVersion: skupper.io/v2alpha1
kind: Connector
metadata: {name: db}
spec: {routingKey: db, host: db.local, port: 5432, includeNotReadyPods: true}
status: {conditions: []}
extra: 1
---
apiVersion: v1
kind: Secret
metadata: {name: s}
type: Opaque
stringData: {secret: v}
`
	cfg, err := Parse([]File{siteFile, {Name: "w.yaml", Data: []byte(input)}})
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	want := []string{
		`w.yaml:6 (document 1, RouterAccess "ra"): spec.roles[1].name: role "edge" ignored: skfwd has no edge routers`,
		`w.yaml:5 (document 1, RouterAccess "ra"): spec.generateTlsCredentials: not used by skfwd; ignored`,
		`w.yaml:14 (document 2, Link "l"): spec.endpoints[1].name: endpoint "other" is not inter-router; ignored`,
		`w.yaml:13 (document 2, Link "l"): spec.noClientAuth: not used by skfwd; ignored`,
		`w.yaml:19 (document 3, Listener "db"): spec.type: not used by skfwd; ignored`,
		`w.yaml:19 (document 3, Listener "db"): spec.tlsCredentials: not used by skfwd; ignored`,
		`w.yaml:24 (document 4, Connector "db"): spec.includeNotReadyPods: not used by skfwd; ignored`,
		`w.yaml:26 (document 4, Connector "db"): extra: not used by skfwd; ignored`,
	}
	if !reflect.DeepEqual(cfg.Warnings, want) {
		t.Errorf("warnings:\n got %q\nwant %q", cfg.Warnings, want)
	}
	if got := cfg.Links[0].Endpoints; !reflect.DeepEqual(got, []Endpoint{{Name: "inter-router", Host: "east", Port: 55671}}) {
		t.Errorf("endpoints = %+v", got)
	}
}

func TestParseEmptyDocuments(t *testing.T) {
	input := "---\n# only a comment\n---\n" + siteDoc + "---\n---\n"
	cfg, err := Parse([]File{{Name: "e.yaml", Data: []byte(input)}, {Name: "empty.yaml"}})
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	want := Origin{File: "e.yaml", Doc: 2, Line: 4}
	if cfg.Site.Name != "west" || cfg.Site.Origin != want {
		t.Errorf("Site = %q at %+v, want \"west\" at %+v", cfg.Site.Name, cfg.Site.Origin, want)
	}
}

func TestProblemError(t *testing.T) {
	tests := []struct {
		p    Problem
		want string
	}{
		{
			Problem{File: "site-a.yaml", Doc: 2, Line: 14, Kind: "Listener", Name: "db", Field: "spec.port", Msg: "70000 is out of range", Fix: "use a port from 1 to 65535"},
			`site-a.yaml:14 (document 2, Listener "db"): spec.port: 70000 is out of range; fix: use a port from 1 to 65535`,
		},
		{
			Problem{File: "a.yaml", Doc: 3, Kind: "Gateway", Field: "kind", Msg: `unknown kind "Gateway"`},
			`a.yaml (document 3, Gateway): kind: unknown kind "Gateway"`,
		},
		{
			Problem{File: "a.yaml", Doc: 1, Line: 2, Msg: "document is a list, not a mapping"},
			`a.yaml:2 (document 1): document is a list, not a mapping`,
		},
		{
			Problem{Msg: "no Site in a.yaml", Fix: "add a Site"},
			`no Site in a.yaml; fix: add a Site`,
		},
	}
	for _, tt := range tests {
		if got := tt.p.Error(); got != tt.want {
			t.Errorf("Error()\n got %s\nwant %s", got, tt.want)
		}
	}
}

func TestSettingsSet(t *testing.T) {
	tests := []struct {
		key, value string
		check      func(Settings) bool
		errPhrase  string // "" = must succeed
	}{
		{"admin-address", "off", func(s Settings) bool { return s.AdminAddress == "" }, ""},
		{"pprof", "on", func(s Settings) bool { return s.Pprof }, ""},
		{"pprof", "off", func(s Settings) bool { return !s.Pprof }, ""},
		{"pprof", "yes", nil, `"yes" is not on or off`},
		{"access-log", "on", func(s Settings) bool { return s.AccessLog }, ""},
		{"access-log", "1", nil, `"1" is not on or off`},
		{"admin-address", "[::1]:9000", func(s Settings) bool { return s.AdminAddress == "[::1]:9000" }, ""},
		{"admin-address", ":9000", func(s Settings) bool { return s.AdminAddress == ":9000" }, ""},
		{"admin-address", "localhost", nil, `"localhost" is not host:port`},
		{"admin-address", "localhost:0", nil, "not a port from 1 to 65535"},
		{"admin-address", "999.1.1.1:9441", nil, `host "999.1.1.1" in "999.1.1.1:9441" is neither an IP address nor a valid host name`},
		{"admin-address", "localhost:9441", func(s Settings) bool { return s.AdminAddress == "localhost:9441" }, ""},
		{"admin-address", "", nil, "not host:port"},
		{"state-dir", "/tmp/skfwd", func(s Settings) bool { return s.StateDir == "/tmp/skfwd" }, ""},
		{"state-dir", "", nil, "must not be empty"},
		{"heartbeat-interval", "100ms", func(s Settings) bool { return s.HeartbeatInterval == 100*time.Millisecond }, ""},
		{"heartbeat-interval", "0s", nil, "greater than 0"},
		{"link-dead-time", "3s", func(s Settings) bool { return s.LinkDeadTime == 3*time.Second }, ""},
		{"probe-interval", "1m", func(s Settings) bool { return s.ProbeInterval == time.Minute }, ""},
		{"connect-timeout", "1", nil, "not a duration"},
		{"answer-timeout", "10s", func(s Settings) bool { return s.AnswerTimeout == 10*time.Second }, ""},
		{"tunnel-pool-size", "0", func(s Settings) bool { return s.TunnelPoolSize == 0 }, ""},
		{"tunnel-pool-size", "1024", func(s Settings) bool { return s.TunnelPoolSize == 1024 }, ""},
		{"tunnel-pool-size", "1025", nil, "from 0 to 1024"},
		{"tunnel-pool-size", "-1", nil, "out of range"},
		{"first-bytes-limit", "1024", func(s Settings) bool { return s.FirstBytesLimit == 1024 }, ""},
		{"first-bytes-limit", "1023", nil, "from 1024 to 1048576"},
		{"first-bytes-limit", "1048577", nil, "from 1024 to 1048576"},
		{"first-bytes-limit", "64k", nil, "not an integer"},
		{"reconnect-max-backoff", "100ms", func(s Settings) bool { return s.ReconnectMaxBackoff == 100*time.Millisecond }, ""},
		{"reconnect-max-backoff", "99ms", nil, "at least 100ms"},
		{"no-such-key", "1", nil, "use one of admin-address, state-dir"},
	}
	for _, tt := range tests {
		t.Run(tt.key+"="+tt.value, func(t *testing.T) {
			s := DefaultSettings()
			err := s.Set(tt.key, tt.value)
			if tt.errPhrase == "" {
				if err != nil {
					t.Fatalf("Set: %v", err)
				}
				if !tt.check(s) {
					t.Errorf("Set(%q, %q) gave %+v", tt.key, tt.value, s)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.errPhrase) || !strings.Contains(err.Error(), tt.key) {
				t.Errorf("Set(%q, %q) = %v, want an error naming the key and containing %q", tt.key, tt.value, err, tt.errPhrase)
			}
			if s != DefaultSettings() {
				t.Errorf("failed Set changed settings to %+v", s)
			}
		})
	}
}

func TestSettingsUnknownKeyIsSentinel(t *testing.T) {
	s := DefaultSettings()
	if err := s.Set("heartbeat", "1s"); !errors.Is(err, ErrUnknownSetting) {
		t.Errorf("Set(unknown) = %v, want ErrUnknownSetting", err)
	}
	if err := s.Set("heartbeat-interval", "x"); errors.Is(err, ErrUnknownSetting) {
		t.Errorf("Set(bad value) = %v, must not be ErrUnknownSetting", err)
	}
}

func TestSettingsGetRoundTrip(t *testing.T) {
	want := map[string]string{
		"admin-address":         "127.0.0.1:9441",
		"state-dir":             "/var/lib/skfwd",
		"heartbeat-interval":    "250ms",
		"link-dead-time":        "1s",
		"probe-interval":        "1s",
		"connect-timeout":       "2s",
		"answer-timeout":        "5s",
		"tunnel-pool-size":      "8",
		"link-connections":      "0",
		"first-bytes-limit":     "65536",
		"max-connections":       "0",
		"stream-window":         "262144",
		"move-bytes":            "1048576",
		"reconnect-max-backoff": "5s",
		"data-path":             "auto",
		"promote-bytes":         "1048576",
		"promote-after":         "1s",
		"max-promoted":          "32768",
		"max-kernel-backlog":    "4194304",
		"pprof":                 "off",
		"access-log":            "off",
	}
	d := DefaultSettings()
	keys := SettingKeys()
	wantKeys := []string{"admin-address", "state-dir", "heartbeat-interval", "link-dead-time", "probe-interval",
		"connect-timeout", "answer-timeout", "tunnel-pool-size", "link-connections", "first-bytes-limit", "max-connections", "stream-window", "move-bytes", "reconnect-max-backoff",
		"data-path", "promote-bytes", "promote-after", "max-promoted", "max-kernel-backlog", "pprof", "access-log"}
	if !reflect.DeepEqual(keys, wantKeys) {
		t.Fatalf("SettingKeys() = %q, want %q", keys, wantKeys)
	}
	var s Settings
	for _, k := range keys {
		v, ok := d.Get(k)
		if !ok || v != want[k] {
			t.Errorf("Get(%q) = %q, %v; want %q", k, v, ok, want[k])
		}
		if err := s.Set(k, v); err != nil {
			t.Errorf("Set(%q, Get) = %v", k, err)
		}
	}
	if s != d {
		t.Errorf("Set(Get(k)) for every key gave %+v, want %+v", s, d)
	}
	if err := s.Validate(); err != nil {
		t.Errorf("defaults do not validate: %v", err)
	}
	s.LinkDeadTime = s.HeartbeatInterval
	if err := s.Validate(); err == nil || !strings.Contains(err.Error(), "link-dead-time") {
		t.Errorf("Validate(dead time == heartbeat) = %v, want an error naming link-dead-time", err)
	}
	off := DefaultSettings()
	off.AdminAddress = ""
	if v, _ := off.Get("admin-address"); v != "off" {
		t.Errorf(`Get("admin-address") with it off = %q, want "off"`, v)
	}
}

const secretS = "---\napiVersion: v1\nkind: Secret\nmetadata: {name: s}\nstringData: {secret: v}\n"

// linkWith is a valid Link (plus its Secret) with line 5 replaced by extra.
func linkWith(extra string) string {
	return "apiVersion: skupper.io/v2alpha1\nkind: Link\nmetadata: {name: l}\nspec:\n  " + extra +
		"\n  tlsCredentials: s\n  endpoints: [{host: east, port: 55671}]\n" + secretS
}

// linkWithSecret is a valid Link whose Secret "s" (document 2, from line 8) has the given
// fields after its metadata, from line 11.
func linkWithSecret(fields string) string {
	return "apiVersion: skupper.io/v2alpha1\nkind: Link\nmetadata: {name: l}\nspec:\n  tlsCredentials: s\n  endpoints: [{host: east, port: 55671}]\n" +
		"---\napiVersion: v1\nkind: Secret\nmetadata: {name: s}\n" + fields
}

// connector is a four-line Connector document.
func connector(name, host string) string {
	return "apiVersion: skupper.io/v2alpha1\nkind: Connector\nmetadata: {name: " + name +
		"}\nspec: {routingKey: k, host: '" + host + "', port: 5432}\n"
}

// listener is a four-line Listener document.
func listener(name, host string, port int) string {
	return "apiVersion: skupper.io/v2alpha1\nkind: Listener\nmetadata: {name: " + name +
		"}\nspec: {routingKey: k, host: '" + host + "', port: " + strconv.Itoa(port) + "}\n"
}

func problemsOf(t *testing.T, err error) []*Problem {
	t.Helper()
	if err == nil {
		return nil
	}
	joined, ok := err.(interface{ Unwrap() []error })
	if !ok {
		t.Fatalf("error %v is not a joined error", err)
	}
	var out []*Problem
	for _, e := range joined.Unwrap() {
		var p *Problem
		if !errors.As(e, &p) {
			t.Fatalf("error %v is not a *Problem", e)
		}
		out = append(out, p)
	}
	return out
}

func checkProblem(t *testing.T, p *Problem, w wantProblem) {
	t.Helper()
	if p.File != w.file || p.Doc != w.doc || p.Kind != w.kind || p.Name != w.name || p.Field != w.field ||
		(w.line != 0 && p.Line != w.line) {
		t.Errorf("problem %s\n got file=%q doc=%d line=%d kind=%q name=%q field=%q\nwant file=%q doc=%d line=%d kind=%q name=%q field=%q",
			p, p.File, p.Doc, p.Line, p.Kind, p.Name, p.Field, w.file, w.doc, w.line, w.kind, w.name, w.field)
	}
	if !strings.Contains(p.Msg, w.phrase) && !strings.Contains(p.Fix, w.phrase) {
		t.Errorf("problem %s\n does not contain %q in Msg or Fix", p, w.phrase)
	}
	if p.Msg == "" || (p.Fix == "" && p.Doc != 0) {
		t.Errorf("problem %s has no Msg or no Fix", p)
	}
}

// A Listener's settings reach its configuration.
func TestListenerSettings(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "site.yaml")
	doc := "apiVersion: skupper.io/v2alpha1\nkind: Site\nmetadata: {name: west}\n---\n" +
		"apiVersion: skupper.io/v2alpha1\nkind: Listener\nmetadata: {name: db}\n" +
		"spec: {routingKey: db, host: 0.0.0.0, port: 5432, settings: {max-connections: \"100\", idle-timeout: 15m}}\n"
	if err := os.WriteFile(f, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := Load(f)
	if err != nil {
		t.Fatal(err)
	}
	if l := cfg.Listeners[0]; l.MaxConnections != 100 || l.IdleTimeout != 15*time.Minute {
		t.Errorf("listener max-connections %d, idle-timeout %v; want 100, 15m", l.MaxConnections, l.IdleTimeout)
	}
}
