package config

import (
	"net"
	"strconv"
	"time"
)

// APIVersion is the apiVersion of every Skupper resource skfwd reads.
// Secrets are core Kubernetes resources and use "v1".
const APIVersion = "skupper.io/v2alpha1"

// Origin says where a resource was defined, for messages that point back
// at the config.
type Origin struct {
	File string
	Doc  int
	Line int
}

// Config is a parsed and validated configuration. Slices keep input order
// (files in the order given, documents in file order).
type Config struct {
	Site         Site
	RouterAccess []RouterAccess
	Links        []Link
	Listeners    []Listener
	Connectors   []Connector
	Secrets      map[string]Secret // by metadata.name
	Warnings     []string          // Skupper fields skfwd accepts but does not use
}

// Site is this gateway; Name is its identity in the network.
type Site struct {
	Name     string
	Settings Settings
	Origin   Origin
}

// RouterAccess is an address where this site accepts links from peers.
type RouterAccess struct {
	Name     string
	BindHost string // "" = all addresses
	Port     int
	Origin   Origin
}

// Address is the host:port to listen on for links.
func (r RouterAccess) Address() string { return joinHostPort(r.BindHost, r.Port) }

// Endpoint is one address of a peer's RouterAccess.
type Endpoint struct {
	Name string
	Host string
	Port int
}

// Address is the host:port to dial.
func (e Endpoint) Address() string { return joinHostPort(e.Host, e.Port) }

// Link is a peer this site dials.
type Link struct {
	Name        string
	Cost        int
	Endpoints   []Endpoint // only inter-router endpoints, in input order
	Credentials string     // name of a Secret in Config.Secrets
	Origin      Origin
}

// Listener accepts client connections for a routing key.
type Listener struct {
	Name       string
	RoutingKey string
	Host       string
	Port       int
	// MaxConnections bounds the client connections it holds at once; 0: only the site's
	// max-connections setting does.
	MaxConnections int
	// IdleTimeout resets a client connection that has passed no byte either way for this
	// long; 0: never.
	IdleTimeout time.Duration
	Origin      Origin
}

// Address is the host:port to listen on.
func (l Listener) Address() string { return joinHostPort(l.Host, l.Port) }

// Connector is a local backend for a routing key.
type Connector struct {
	Name       string
	RoutingKey string
	Host       string
	Port       int
	Origin     Origin
}

// Address is the backend's host:port.
func (c Connector) Address() string { return joinHostPort(c.Host, c.Port) }

// SecretKey is the key in a link's Secret that holds the shared secret, as `skfwd link
// generate` prints it.
const SecretKey = "secret"

// Secret holds link credentials; Data is already base64-decoded.
type Secret struct {
	Name   string
	Data   map[string][]byte
	Origin Origin
}

func joinHostPort(host string, port int) string {
	return net.JoinHostPort(host, strconv.Itoa(port))
}
