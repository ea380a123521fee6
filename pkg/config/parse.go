package config

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"regexp"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// File is one configuration file's name (as the user gave it, used in
// messages) and contents.
type File struct {
	Name string
	Data []byte
}

// acceptedKinds is the order kinds are listed in messages.
var acceptedKinds = []string{"Site", "RouterAccess", "Link", "Listener", "Connector", "Secret"}

const (
	secretAPIVersion = "v1"
	interRouter      = "inter-router"
	defaultLinkPort  = 55671
	maxNameLen       = 63
	maxRoutingKeyLen = 200
	portFix          = "use a port from 1 to 65535"
)

var (
	// Kubernetes object names; the Site name is stricter (a DNS label, no
	// dots) because it identifies the site across the network.
	nameRE     = regexp.MustCompile(`^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$`)
	siteNameRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
)

// Parse parses and validates files, in order. It returns every problem it
// finds, each a *Problem, joined with errors.Join; on error the Config is nil.
func Parse(files []File) (*Config, error) {
	p := &parser{
		cfg:        &Config{Secrets: map[string]Secret{}},
		names:      map[string]map[string]Origin{},
		secretKeys: map[string]secretDoc{},
	}
	for _, f := range files {
		p.parseFile(f)
	}
	p.crossCheck(files)
	if len(p.problems) > 0 {
		return nil, errors.Join(p.problems...)
	}
	return p.cfg, nil
}

type parser struct {
	cfg      *Config
	problems []error
	sites    []Site
	names    map[string]map[string]Origin // kind -> name -> first definition
	binds    []bind
	creds    []credRef
	// secretKeys holds, per Secret name (the first definition), the key nodes of its data
	// and stringData, so a Link's Secret can be checked where the user wrote it.
	secretKeys map[string]secretDoc
}

// secretDoc is where a Secret was written: its document, and the node of each data key.
type secretDoc struct {
	where *Problem // Msg and Fix unset
	keys  map[string]*yaml.Node
	order []string
}

// bind is an address something in the config listens on.
type bind struct {
	what  string // `Listener "db"`, for the other side of a conflict message
	host  string
	port  int
	where *Problem // location for a conflict problem, Msg and Fix unset
}

// credRef is a Link's tlsCredentials, checked once every Secret is known.
type credRef struct {
	secret string
	where  *Problem
}

func (p *parser) add(pr *Problem) { p.problems = append(p.problems, pr) }

func (p *parser) parseFile(f File) {
	dec := yaml.NewDecoder(bytes.NewReader(f.Data))
	for doc := 1; ; doc++ {
		var n yaml.Node
		err := dec.Decode(&n)
		if errors.Is(err, io.EOF) {
			return
		}
		if err != nil {
			// The decoder cannot resynchronise after a syntax error, so
			// the rest of the file is unreadable.
			line, msg := splitYAMLError(err)
			p.add(&Problem{
				File: f.Name, Doc: doc, Line: line,
				Msg: "invalid YAML: " + msg,
				Fix: "correct the YAML syntax (indentation, quoting, brackets)",
			})
			return
		}
		p.parseDoc(f.Name, doc, &n)
	}
}

// splitYAMLError turns "yaml: line 3: did not find ..." into 3 and the rest.
func splitYAMLError(err error) (int, string) {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	if rest, ok := strings.CutPrefix(msg, "line "); ok {
		if num, tail, ok := strings.Cut(rest, ": "); ok {
			if line, err := strconv.Atoi(num); err == nil {
				return line, tail
			}
		}
	}
	return 0, msg
}

// docCtx carries where we are, so every problem and warning names its
// file, document, kind and resource.
type docCtx struct {
	p    *parser
	file string
	doc  int
	kind string
	name string
	root *yaml.Node
}

func (d *docCtx) at(n *yaml.Node, field string) *Problem {
	line := 0
	if n != nil {
		line = n.Line
	}
	return &Problem{File: d.file, Doc: d.doc, Line: line, Kind: d.kind, Name: d.name, Field: field}
}

func (d *docCtx) problem(n *yaml.Node, field, msg, fix string) {
	pr := d.at(n, field)
	pr.Msg, pr.Fix = msg, fix
	d.p.add(pr)
}

func (d *docCtx) warn(n *yaml.Node, field, msg string) {
	pr := d.at(n, field)
	pr.Msg = msg
	d.p.cfg.Warnings = append(d.p.cfg.Warnings, pr.Error())
}

func (d *docCtx) origin() Origin {
	return Origin{File: d.file, Doc: d.doc, Line: d.root.Line}
}

func (p *parser) parseDoc(file string, doc int, n *yaml.Node) {
	root := n
	if root.Kind == yaml.DocumentNode && len(root.Content) > 0 {
		root = root.Content[0]
	}
	root = deref(root)
	if isNull(root) {
		return // empty document, e.g. a trailing "---"
	}
	d := &docCtx{p: p, file: file, doc: doc, root: root}
	if root.Kind != yaml.MappingNode {
		d.problem(root, "", "document is "+describe(root)+", not a mapping",
			"each document must be a resource with apiVersion, kind, metadata and spec")
		return
	}
	top := d.object(root, "")
	kind, kindNode, ok := d.scalar(top, "kind")
	if !ok {
		if kindNode == nil {
			d.problem(root, "kind", "required field is missing", "set kind to one of "+strings.Join(acceptedKinds, ", "))
		}
		return
	}
	d.kind = kind
	if !contains(acceptedKinds, kind) {
		d.problem(kindNode, "kind", fmt.Sprintf("unknown kind %q", kind),
			"skfwd accepts the kinds "+strings.Join(acceptedKinds, ", ")+"; remove this document")
		return
	}

	d.metadataName(top) // first, so later problems name the resource

	want := APIVersion
	if kind == "Secret" {
		want = secretAPIVersion
	}
	if v, vn, ok := d.scalar(top, "apiVersion"); ok && v != want {
		d.problem(vn, "apiVersion", fmt.Sprintf("%q is not supported for %s", v, kind), "use apiVersion: "+want)
	} else if !ok && vn == nil {
		d.problem(root, "apiVersion", "required field is missing", "set apiVersion: "+want)
	}

	switch kind {
	case "Site":
		d.site(top)
	case "RouterAccess":
		d.routerAccess(top)
	case "Link":
		d.link(top)
	case "Listener":
		d.listener(top)
	case "Connector":
		d.connector(top)
	case "Secret":
		d.secret(top)
	}
	top.get("status") // written by Skupper's controller; meaningless as input
	d.warnUnused(top)
}

func (d *docCtx) metadataName(top *object) {
	meta := d.object(top.get("metadata"), "metadata")
	// Other metadata (namespace, labels, annotations) is Kubernetes
	// bookkeeping with no meaning here; ignore it silently.
	v, n, ok := d.scalar(meta, "name")
	if !ok {
		if n == nil {
			d.problem(meta.lineNode(), "metadata.name", "required field is missing",
				"set metadata.name, e.g. metadata: {name: backend}")
		}
		return
	}
	d.name = v
	re, what := nameRE, "lowercase letters, digits, '-' and '.'"
	if d.kind == "Site" {
		re, what = siteNameRE, "lowercase letters, digits and '-' (the site name is its identity in the network)"
	}
	if len(v) > maxNameLen || !re.MatchString(v) {
		d.problem(n, "metadata.name", fmt.Sprintf("%q is not a valid name", v),
			fmt.Sprintf("use 1 to %d %s, starting and ending with a letter or digit", maxNameLen, what))
		return
	}
	if d.kind == "Site" {
		return // two Sites are reported by the cross checks
	}
	seen := d.p.names[d.kind]
	if seen == nil {
		seen = map[string]Origin{}
		d.p.names[d.kind] = seen
	}
	if first, dup := seen[v]; dup {
		d.problem(n, "metadata.name", fmt.Sprintf("%s %q is already defined at %s", d.kind, v, first.String()),
			fmt.Sprintf("give each %s a unique metadata.name", d.kind))
		return
	}
	seen[v] = d.origin()
}

func (o Origin) String() string {
	return fmt.Sprintf("%s:%d (document %d)", o.File, o.Line, o.Doc)
}

func (d *docCtx) site(top *object) {
	spec := d.object(top.get("spec"), "spec")
	settings := DefaultSettings()
	set := map[string]*yaml.Node{}
	obj := d.object(spec.get("settings"), "spec.settings")
	for _, key := range obj.order {
		n := obj.get(key)
		field := "spec.settings." + key
		if _, known := lookupSetting(key); !known {
			d.problem(obj.keys[key], field, fmt.Sprintf("unknown setting %q", key),
				"use one of "+strings.Join(SettingKeys(), ", "))
			continue
		}
		if n == nil {
			d.problem(obj.keys[key], field, "has no value", "set a value or remove the key to use the default")
			continue
		}
		if n.Kind != yaml.ScalarNode {
			d.problem(n, field, "must be a single value, got "+describe(n), "write the value as a string, e.g. "+key+": \"...\"")
			continue
		}
		var se *SettingError
		if err := settings.Set(key, n.Value); errors.As(err, &se) {
			d.problem(n, field, se.Msg, se.Fix)
			continue
		}
		set[key] = n
	}
	var se *SettingError
	if err := settings.Validate(); errors.As(err, &se) {
		// Point at whichever of the two the user wrote.
		key := se.Key
		if set[key] == nil && set["heartbeat-interval"] != nil {
			key = "heartbeat-interval"
		}
		d.problem(set[key], "spec.settings."+key, se.Msg, se.Fix)
	}
	d.warnUnused(spec)
	d.p.sites = append(d.p.sites, Site{Name: d.name, Settings: settings, Origin: d.origin()})
}

func (d *docCtx) routerAccess(top *object) {
	spec := d.object(top.get("spec"), "spec")
	ra := RouterAccess{Name: d.name, Port: defaultLinkPort, Origin: d.origin()}
	if host, n, ok := d.scalar(spec, "bindHost"); ok && d.checkHost(n, "spec.bindHost", host, true) {
		ra.BindHost = host
	}
	const rolesFix = "use roles: [{name: inter-router, port: 55671}]"
	found, usable := false, false
	before := len(d.p.problems)
	var portNode *yaml.Node
	portField := ""
	for i, item := range d.sequence(spec, "roles") {
		field := fmt.Sprintf("spec.roles[%d]", i)
		role := d.object(item, field)
		name, nn, ok := d.scalar(role, "name")
		switch {
		case !ok && nn == nil:
			d.problem(role.lineNode(), field+".name", "required field is missing", rolesFix)
		case !ok:
		case name == "edge":
			// Skupper's usual RouterAccess lists edge next to inter-router; skfwd has no edge
			// routers, so the role is skipped, not refused, and the resource works as it is.
			d.warn(nn, field+".name", `role "edge" ignored: skfwd has no edge routers`)
			for k := range role.vals {
				role.used[k] = true
			}
		case name != interRouter:
			d.problem(nn, field+".name", fmt.Sprintf("unknown role %q", name), "use role inter-router")
		case found:
			d.problem(nn, field+".name", "role inter-router appears twice",
				"keep one inter-router role; add another RouterAccess to listen on a second address")
		default:
			found = true
			if port, ok := d.port(role, "port", defaultLinkPort, false); ok {
				ra.Port, usable = port, true
				portNode, portField = role.vals["port"], field+".port"
				if portNode == nil {
					portNode = item
				}
			}
		}
		d.warnUnused(role)
	}
	// A bad role already explains why there is no inter-router role.
	if !found && len(d.p.problems) == before {
		d.problem(spec.lineNode(), "spec.roles", "no inter-router role", rolesFix)
	}
	d.warnUnused(spec)
	d.p.cfg.RouterAccess = append(d.p.cfg.RouterAccess, ra)
	if usable {
		d.p.binds = append(d.p.binds, bind{
			what: fmt.Sprintf("RouterAccess %q (%s)", ra.Name, ra.Origin),
			host: ra.BindHost, port: ra.Port, where: d.at(portNode, portField),
		})
	}
}

func (d *docCtx) link(top *object) {
	spec := d.object(top.get("spec"), "spec")
	l := Link{Name: d.name, Cost: 1, Origin: d.origin()}
	if cost, n, ok := d.integer(spec, "cost", "use a whole number of 1 or more, e.g. cost: 2"); ok {
		if cost < 1 {
			d.problem(n, "spec.cost", fmt.Sprintf("%d is less than 1", cost),
				"use a whole number of 1 or more; a higher cost makes the link less preferred")
		} else {
			l.Cost = cost
		}
	}

	const credFix = "add the Secret printed by `skfwd link generate` next to this Link"
	if cred, n, ok := d.scalar(spec, "tlsCredentials"); ok {
		if cred == "" {
			d.problem(n, "spec.tlsCredentials", "is empty", "set it to the Secret's metadata.name; "+credFix)
		} else {
			l.Credentials = cred
			d.p.creds = append(d.p.creds, credRef{secret: cred, where: d.at(n, "spec.tlsCredentials")})
		}
	} else if n == nil {
		d.problem(spec.lineNode(), "spec.tlsCredentials", "required field is missing",
			"set spec.tlsCredentials to the name of a Secret and "+credFix)
	}

	bad := false
	for i, item := range d.sequence(spec, "endpoints") {
		field := fmt.Sprintf("spec.endpoints[%d]", i)
		ep := d.object(item, field)
		name, nn, _ := d.scalar(ep, "name")
		ep.get("group") // Skupper's endpoint grouping; one dial target is enough here
		switch name {
		case "edge":
			// Skupper puts an edge endpoint next to the inter-router one in
			// every generated Link; skfwd has no edge routers, so skip it
			// quietly.
			continue
		case "", interRouter:
		default:
			d.warn(nn, field+".name", fmt.Sprintf("endpoint %q is not inter-router; ignored", name))
			continue
		}
		before := len(d.p.problems)
		host, hn := d.requiredString(ep, "host", "set "+field+".host to the peer's address")
		if host != "" {
			d.checkHost(hn, field+".host", host, false)
		}
		port, _ := d.port(ep, "port", 0, true)
		if len(d.p.problems) > before {
			bad = true
		} else {
			l.Endpoints = append(l.Endpoints, Endpoint{Name: name, Host: host, Port: port})
		}
		d.warnUnused(ep)
	}
	if len(l.Endpoints) == 0 && !bad {
		d.problem(spec.lineNode(), "spec.endpoints", "no inter-router endpoint to dial",
			"add endpoints: [{name: inter-router, host: PEER-HOST, port: 55671}]")
	}
	d.warnUnused(spec)
	d.p.cfg.Links = append(d.p.cfg.Links, l)
}

func (d *docCtx) listener(top *object) {
	spec := d.object(top.get("spec"), "spec")
	l := Listener{Name: d.name, Origin: d.origin()}
	l.RoutingKey = d.routingKey(spec)
	host, hn := d.requiredString(spec, "host", "set spec.host to the address to listen on, e.g. 0.0.0.0 for all")
	if host != "" && d.checkHost(hn, "spec.host", host, true) {
		l.Host = host
	}
	port, portOK := d.port(spec, "port", 0, true)
	l.Port = port
	d.listenerSettings(spec, &l)
	d.warnUnused(spec)
	d.p.cfg.Listeners = append(d.p.cfg.Listeners, l)
	if portOK && l.Host != "" {
		d.p.binds = append(d.p.binds, bind{
			what: fmt.Sprintf("Listener %q (%s)", l.Name, l.Origin),
			host: l.Host, port: l.Port, where: d.at(spec.vals["port"], "spec.port"),
		})
	}
}

// listenerSettings reads a Listener's spec.settings (Skupper's ListenerSpec.Settings is a
// map of strings): skfwd knows max-connections and idle-timeout.
func (d *docCtx) listenerSettings(spec *object, l *Listener) {
	obj := d.object(spec.get("settings"), "spec.settings")
	for _, key := range obj.order {
		field := "spec.settings." + key
		if key != "max-connections" && key != "idle-timeout" {
			d.problem(obj.keys[key], field, fmt.Sprintf("unknown listener setting %q", key), "use max-connections or idle-timeout")
			continue
		}
		v, n, ok := d.scalar(obj, key)
		if !ok {
			continue
		}
		if key == "idle-timeout" {
			t, err := time.ParseDuration(v)
			if err != nil || t < 0 || t > 0 && t < time.Second {
				d.problem(n, field, fmt.Sprintf("%q is not a duration of 1s or more, or 0", v),
					"set how long a client connection may pass no byte either way before it is reset, such as 15m (0: never)")
				continue
			}
			l.IdleTimeout = t
			continue
		}
		x, err := strconv.Atoi(v)
		if err != nil || x < 0 || x > 1<<20 {
			d.problem(n, field, fmt.Sprintf("%q is not a whole number from 0 to 1048576", v),
				"set the most client connections this listener holds at once (0: only the site's max-connections)")
			continue
		}
		l.MaxConnections = x
	}
}

func (d *docCtx) connector(top *object) {
	spec := d.object(top.get("spec"), "spec")
	c := Connector{Name: d.name, Origin: d.origin()}
	c.RoutingKey = d.routingKey(spec)
	if sel := spec.get("selector"); sel != nil {
		d.problem(sel, "spec.selector", "skfwd has no pod selector", "skfwd connects to host:port; set spec.host")
		spec.get("host")
	} else {
		host, hn := d.requiredString(spec, "host", "set spec.host to the backend's address, e.g. 127.0.0.1")
		if host != "" && d.checkHost(hn, "spec.host", host, false) {
			c.Host = host
		}
	}
	c.Port, _ = d.port(spec, "port", 0, true)
	d.warnUnused(spec)
	d.p.cfg.Connectors = append(d.p.cfg.Connectors, c)
}

func (d *docCtx) secret(top *object) {
	s := Secret{Name: d.name, Data: map[string][]byte{}, Origin: d.origin()}
	sd := secretDoc{where: d.at(d.root, ""), keys: map[string]*yaml.Node{}}
	// Standard Secret fields with no meaning for link credentials.
	top.get("type")
	top.get("immutable")
	data := d.object(top.get("data"), "data")
	for _, key := range data.order {
		v, n, ok := d.scalar(data, key)
		if !ok {
			continue
		}
		b, err := base64.StdEncoding.DecodeString(v)
		if err != nil {
			// The value is a secret: say where it breaks, never echo it.
			d.problem(n, "data."+key, fmt.Sprintf("value is not valid base64 (%v)", err),
				"base64-encode the value, or put it as plain text under stringData")
			continue
		}
		s.Data[key] = b
		sd.add("data."+key, data.keys[key])
	}
	plain := d.object(top.get("stringData"), "stringData")
	for _, key := range plain.order {
		if v, _, ok := d.scalar(plain, key); ok {
			s.Data[key] = []byte(v) // stringData wins, as in Kubernetes
			sd.add("stringData."+key, plain.keys[key])
		}
	}
	if _, dup := d.p.cfg.Secrets[s.Name]; !dup && s.Name != "" {
		d.p.cfg.Secrets[s.Name] = s
		d.p.secretKeys[s.Name] = sd
	}
}

func (sd *secretDoc) add(field string, n *yaml.Node) {
	if _, seen := sd.keys[field]; !seen {
		sd.order = append(sd.order, field)
	}
	sd.keys[field] = n
}

func (d *docCtx) routingKey(spec *object) string {
	const fix = "use 1 to 200 printable ASCII characters without spaces, matching the routing key at the other sites"
	key, n := d.requiredString(spec, "routingKey", "set spec.routingKey; "+fix)
	if key == "" {
		return ""
	}
	if len(key) > maxRoutingKeyLen {
		d.problem(n, "spec.routingKey", fmt.Sprintf("%q is %d bytes long", key, len(key)), fix)
		return ""
	}
	for i := 0; i < len(key); i++ {
		if key[i] <= ' ' || key[i] > '~' {
			d.problem(n, "spec.routingKey", fmt.Sprintf("%q contains %q", key, key[i]), fix)
			return ""
		}
	}
	return key
}

// checkHost catches what is neither an IP address nor a host name: a port or brackets pasted
// into a host field, or an address such as 999.1.1.1, which would otherwise fail much later as
// a confusing bind or dial error. Names are checked for syntax only (no lookup: config is pure).
func (d *docCtx) checkHost(n *yaml.Node, field, host string, bindable bool) bool {
	if strings.ContainsAny(host, " \t\n[]/") || (strings.Contains(host, ":") && net.ParseIP(host) == nil) {
		fix := "write only the host name or IP address here (the port goes in its own field)"
		if bindable {
			fix = "write only the IP address to bind here, e.g. 0.0.0.0 or :: for all (the port goes in its own field)"
		}
		d.problem(n, field, fmt.Sprintf("%q is not a host", host), fix)
		return false
	}
	if why := hostNameProblem(host); why != "" {
		fix := "use an IPv4 address (four numbers from 0 to 255), an IPv6 address, or a DNS name: labels of 1 to 63 letters, digits and '-', separated by dots"
		if bindable {
			fix = "use an IP address of this host (0.0.0.0 or :: for all), or a DNS name that resolves to one"
		}
		d.problem(n, field, fmt.Sprintf("%q is neither an IP address nor a valid host name: %s", host, why), fix)
		return false
	}
	return true
}

// maxHostNameLen is a DNS name's limit in text form (RFC 1035 section 2.3.4, less the root).
const maxHostNameLen = 253

// hostNameProblem says why host is neither an IP address nor a host name as RFC 1123 allows
// (labels of letters, digits and '-', 1 to 63 long, not starting or ending with '-'; a last
// label not all digits, so that 999.1.1.1 or 10.0.0 is not taken for a name), or "".
func hostNameProblem(host string) string {
	if net.ParseIP(host) != nil {
		return ""
	}
	name := strings.TrimSuffix(host, ".") // a fully qualified name may end with the root
	if len(name) > maxHostNameLen {
		return fmt.Sprintf("longer than %d characters", maxHostNameLen)
	}
	labels := strings.Split(name, ".")
	for _, l := range labels {
		if why := labelProblem(l); why != "" {
			return why
		}
	}
	if allDigits(labels[len(labels)-1]) {
		return "it looks like an IPv4 address, and each of its four numbers must be from 0 to 255"
	}
	return ""
}

func labelProblem(l string) string {
	switch {
	case l == "":
		return "it has an empty label (two dots in a row, or a dot at the start)"
	case len(l) > maxNameLen:
		return fmt.Sprintf("label %q is longer than %d characters", l, maxNameLen)
	case l[0] == '-' || l[len(l)-1] == '-':
		return fmt.Sprintf("label %q starts or ends with '-'", l)
	}
	for i := 0; i < len(l); i++ {
		c := l[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
			return fmt.Sprintf("label %q contains %q", l, c)
		}
	}
	return ""
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

// object is a YAML mapping whose keys are marked as they are read, so that
// whatever skfwd did not read can be reported as ignored.
type object struct {
	node   *yaml.Node // nil when absent
	parent *yaml.Node // for lines of missing fields
	path   string
	vals   map[string]*yaml.Node
	keys   map[string]*yaml.Node
	order  []string
	used   map[string]bool
}

func (d *docCtx) object(n *yaml.Node, path string) *object {
	o := &object{
		node: deref(n), parent: d.root, path: path,
		vals: map[string]*yaml.Node{}, keys: map[string]*yaml.Node{}, used: map[string]bool{},
	}
	if o.node == nil || isNull(o.node) {
		o.node = nil
		return o
	}
	if o.node.Kind != yaml.MappingNode {
		d.problem(o.node, path, "must be a mapping, got "+describe(o.node), "write "+path+" as key: value pairs")
		o.node = nil
		return o
	}
	for i := 0; i+1 < len(o.node.Content); i += 2 {
		k, v := o.node.Content[i], deref(o.node.Content[i+1])
		if k.Kind != yaml.ScalarNode {
			d.problem(k, path, "has a key that is "+describe(k), "use plain strings as keys")
			continue
		}
		if _, dup := o.vals[k.Value]; dup {
			d.problem(k, o.field(k.Value), "appears twice", "keep only one "+k.Value)
			continue
		}
		o.vals[k.Value], o.keys[k.Value] = v, k
		o.order = append(o.order, k.Value)
	}
	return o
}

// get returns the value for key, nil if absent or null, and marks it read.
func (o *object) get(key string) *yaml.Node {
	o.used[key] = true
	v := o.vals[key]
	if isNull(v) {
		return nil
	}
	return v
}

func (o *object) field(key string) string {
	if o.path == "" {
		return key
	}
	return o.path + "." + key
}

func (o *object) lineNode() *yaml.Node {
	if o.node != nil {
		return o.node
	}
	return o.parent
}

func (d *docCtx) warnUnused(o *object) {
	for _, key := range o.order {
		if !o.used[key] {
			d.warn(o.keys[key], o.field(key), "not used by skfwd; ignored")
		}
	}
}

// scalar reads key as a single value. ok is false when it is absent (n is
// nil) or not a scalar (n is set and a problem was reported).
func (d *docCtx) scalar(o *object, key string) (v string, n *yaml.Node, ok bool) {
	n = o.get(key)
	if n == nil {
		return "", nil, false
	}
	if n.Kind != yaml.ScalarNode {
		d.problem(n, o.field(key), "must be a single value, got "+describe(n), "write "+key+" as a plain value")
		return "", n, false
	}
	return n.Value, n, true
}

// requiredString returns "" after reporting a problem when key is missing,
// empty or not a scalar.
func (d *docCtx) requiredString(o *object, key, fix string) (string, *yaml.Node) {
	v, n, ok := d.scalar(o, key)
	switch {
	case !ok && n == nil:
		d.problem(o.lineNode(), o.field(key), "required field is missing", fix)
	case ok && v == "":
		d.problem(n, o.field(key), "is empty", fix)
	}
	return v, n
}

// integer reads an optional whole number. Quoted digits are accepted
// because Skupper itself writes some ports (Link endpoints) as strings.
func (d *docCtx) integer(o *object, key, fix string) (int, *yaml.Node, bool) {
	v, n, ok := d.scalar(o, key)
	if !ok {
		return 0, n, false
	}
	i, err := strconv.Atoi(v)
	if err != nil || (n.Tag != "!!int" && n.Tag != "!!str") {
		d.problem(n, o.field(key), fmt.Sprintf("%q is not an integer", v), fix)
		return 0, n, false
	}
	return i, n, true
}

// port reads a port; def is used when it is absent and not required.
func (d *docCtx) port(o *object, key string, def int, required bool) (int, bool) {
	p, n, ok := d.integer(o, key, portFix)
	if !ok {
		if n == nil && !required {
			return def, true
		}
		if n == nil {
			d.problem(o.lineNode(), o.field(key), "required field is missing", portFix)
		}
		return 0, false
	}
	if p < 1 || p > 65535 {
		d.problem(n, o.field(key), fmt.Sprintf("%d is out of range", p), portFix)
		return 0, false
	}
	return p, true
}

// sequence returns the items of an optional list.
func (d *docCtx) sequence(o *object, key string) []*yaml.Node {
	n := o.get(key)
	if n == nil {
		return nil
	}
	if n.Kind != yaml.SequenceNode {
		d.problem(n, o.field(key), "must be a list, got "+describe(n), "write "+key+" as a list: [{...}, {...}]")
		return nil
	}
	items := make([]*yaml.Node, len(n.Content))
	for i, it := range n.Content {
		items[i] = deref(it)
	}
	return items
}

func (p *parser) crossCheck(files []File) {
	p.checkSites(files)
	if len(p.sites) > 0 {
		p.cfg.Site = p.sites[0]
	}
	p.checkBinds()
	checked := map[string]bool{}
	for _, c := range p.creds {
		if _, ok := p.cfg.Secrets[c.secret]; !ok {
			c.where.Msg = fmt.Sprintf("Secret %q is not in the configuration", c.secret)
			c.where.Fix = "add the Secret printed by `skfwd link generate` next to this Link"
			p.add(c.where)
			continue
		}
		if !checked[c.secret] {
			checked[c.secret] = true
			p.checkLinkSecret(c.secret)
		}
	}
}

// checkLinkSecret reports a Secret named by a Link that holds no usable link secret: the
// dialer would present an empty secret and every handshake would fail as a bad proof. Other
// Secrets are not ours to judge.
func (p *parser) checkLinkSecret(name string) {
	const regenerate = "paste the Secret printed by `skfwd link generate` on the peer site (run it again for a new credential)"
	sd := p.secretKeys[name]
	field := "data." + SecretKey
	value, ok := p.cfg.Secrets[name].Data[SecretKey]
	if ok && len(value) > 0 {
		return
	}
	pr := *sd.where
	pr.Field = field
	switch {
	case ok:
		if sd.keys[field] == nil {
			field = "stringData." + SecretKey
			pr.Field = field
		}
		pr.Line = sd.keys[field].Line
		pr.Msg = "the link secret is empty"
		pr.Fix = regenerate
	case len(sd.order) > 0:
		pr.Line = sd.keys[sd.order[0]].Line
		pr.Msg = fmt.Sprintf("no key %q, which holds the link secret; the Secret has %s", SecretKey, strings.Join(sd.order, ", "))
		pr.Fix = fmt.Sprintf("put the link secret under data.%s (base64) or stringData.%s; %s", SecretKey, SecretKey, regenerate)
	default:
		pr.Msg = fmt.Sprintf("no key %q, which holds the link secret; the Secret has no data", SecretKey)
		pr.Fix = regenerate
	}
	p.add(&pr)
}

func (p *parser) checkSites(files []File) {
	const fix = "keep exactly one Site: each skfwd gateway is one site"
	if len(p.sites) == 0 {
		names := make([]string, len(files))
		for i, f := range files {
			names[i] = f.Name
		}
		msg := "no Site: no configuration files were given"
		if len(names) > 0 {
			msg = "no Site in " + strings.Join(names, ", ")
		}
		p.add(&Problem{
			Msg: msg,
			Fix: "add a Site: apiVersion: " + APIVersion + ", kind: Site, metadata: {name: SITE-NAME}",
		})
		return
	}
	first := p.sites[0]
	for _, s := range p.sites[1:] {
		p.add(&Problem{
			File: s.Origin.File, Doc: s.Origin.Doc, Line: s.Origin.Line, Kind: "Site", Name: s.Name,
			Msg: fmt.Sprintf("a second Site; Site %q is already defined at %s", first.Name, first.Origin),
			Fix: fix,
		})
	}
}

// checkBinds reports two listening sockets that cannot both bind. The admin
// address is checked first so a conflict with it is reported on the
// resource, where the user is more likely to want the change.
func (p *parser) checkBinds() {
	var binds []bind
	if len(p.sites) > 0 && p.sites[0].Settings.AdminAddress != "" {
		host, portStr, _ := net.SplitHostPort(p.sites[0].Settings.AdminAddress)
		port, _ := strconv.Atoi(portStr)
		binds = append(binds, bind{what: "the Site setting admin-address", host: host, port: port})
	}
	binds = append(binds, p.binds...)
	for i, b := range binds {
		for _, prev := range binds[:i] {
			if !sameAddress(prev, b) {
				continue
			}
			pr := *b.where
			pr.Msg = fmt.Sprintf("address %s is already used by %s", joinHostPort(b.host, b.port), prev.what)
			pr.Fix = "use a different port or host"
			if prev.where == nil {
				pr.Fix = "use a different port, or move the admin server with spec.settings.admin-address (or set it to off)"
			}
			p.add(&pr)
			break
		}
	}
}

func sameAddress(a, b bind) bool {
	if a.port != b.port {
		return false
	}
	return a.host == b.host || isWildcard(a.host) || isWildcard(b.host)
}

func isWildcard(host string) bool {
	return host == "" || host == "0.0.0.0" || host == "::"
}

func deref(n *yaml.Node) *yaml.Node {
	for n != nil && n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n == nil || (n.Kind == yaml.ScalarNode && n.Tag == "!!null")
}

func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		return fmt.Sprintf("%q", n.Value)
	}
	return "empty"
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
