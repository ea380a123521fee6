package main

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net"
	"strconv"

	"github.com/skfwd/skfwd/pkg/config"
	"github.com/skfwd/skfwd/pkg/gateway"
	"github.com/skfwd/skfwd/pkg/statedir"
)

func cmdLinkGenerate(e env, args []string) int {
	fs := newFlags(e, "link generate")
	var files paths
	fs.Var(&files, "f", "configuration of the site that accepts the link (file or directory)")
	endpoint := fs.String("endpoint", "", "HOST:PORT where the dialing site reaches this site's RouterAccess (default: its bindHost when that is an address)")
	cost := fs.Int("cost", 1, "link cost at this end (integer >= 1); the link uses the higher of both ends")
	name := fs.String("name", "", "name of the Link and its Secret (default: <site>-<random>)")
	stateDir := fs.String("state-dir", "", "override Site spec.settings state-dir")
	if err := parseFlags(e, fs, args); err != nil {
		fmt.Fprintf(e.stderr, "skfwd link generate: %v\n", err)
		return exitUsage
	}
	cfg, ok := loadConfig(e, files, nil)
	if !ok {
		return exitUsage
	}
	if *stateDir != "" {
		cfg.Site.Settings.StateDir = *stateDir
	}
	if len(cfg.RouterAccess) == 0 {
		fmt.Fprintf(e.stderr, "skfwd link generate: site %q accepts no links: add a RouterAccess with role inter-router to its configuration\n", cfg.Site.Name)
		return exitUsage
	}
	if *cost < 1 {
		fmt.Fprintf(e.stderr, "skfwd link generate: --cost %d: use an integer of 1 or more\n", *cost)
		return exitUsage
	}
	host, port, err := linkEndpoint(*endpoint, cfg.RouterAccess[0])
	if err != nil {
		fmt.Fprintf(e.stderr, "skfwd link generate: %v\n", err)
		return exitUsage
	}
	if *name == "" {
		suffix := make([]byte, 4)
		_, _ = rand.Read(suffix)
		*name = cfg.Site.Name + "-" + hex.EncodeToString(suffix)
	}
	state, err := statedir.Open(cfg.Site.Settings.StateDir, cfg.Site.Name)
	if err != nil {
		fmt.Fprintf(e.stderr, "skfwd link generate: %v\n", err)
		return exitFailure
	}
	grant, err := state.Issue(*name, *cost)
	if err != nil {
		fmt.Fprintf(e.stderr, "skfwd link generate: %v\n", err)
		return exitFailure
	}
	fmt.Fprintf(e.stdout, `# Link to site %q. Add this file to the configuration of the site that dials it.
# The Secret is the link's credential: keep it private.
apiVersion: %s
kind: Link
metadata:
  name: %s
spec:
  cost: %d
  tlsCredentials: %s
  endpoints:
  - name: inter-router
    host: %s
    port: %d
---
apiVersion: v1
kind: Secret
metadata:
  name: %s
type: skfwd.io/link-secret
data:
  %s: %s
`, cfg.Site.Name, config.APIVersion, grant.Name, grant.Cost, grant.Name, yamlString(host), port,
		grant.Name, gateway.SecretKey, base64.StdEncoding.EncodeToString(grant.Secret))
	return exitOK
}

// linkEndpoint is where the dialing site will connect: --endpoint, else the RouterAccess's
// bindHost when it names one address.
func linkEndpoint(flagValue string, ra config.RouterAccess) (string, int, error) {
	if flagValue == "" {
		ip := net.ParseIP(ra.BindHost)
		if ra.BindHost == "" || (ip != nil && ip.IsUnspecified()) {
			return "", 0, fmt.Errorf("RouterAccess %q binds all addresses: pass --endpoint HOST:PORT, the address the dialing site reaches this site at", ra.Name)
		}
		return ra.BindHost, ra.Port, nil
	}
	host, portStr, err := net.SplitHostPort(flagValue)
	if err != nil {
		return "", 0, fmt.Errorf("--endpoint %q: use HOST:PORT, e.g. 10.0.0.2:55671", flagValue)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 1 || port > 65535 || host == "" {
		return "", 0, fmt.Errorf("--endpoint %q: use HOST:PORT with a port from 1 to 65535", flagValue)
	}
	return host, port, nil
}

// yamlString quotes a host so YAML reads it back as the same string (IPv6, names like "yes").
func yamlString(s string) string { return strconv.Quote(s) }
