// Package config owns skfwd's configuration: it parses Skupper v2 resources
// (Site, RouterAccess, Link, Listener, Connector) plus the Kubernetes Secrets
// that Links name, and validates them into a typed Config.
//
// The vocabulary is Skupper's on purpose, so a Skupper user's YAML works as it
// is: fields skfwd does not use are accepted and reported as warnings rather
// than rejected. Everything else that is wrong is reported at once, each as a
// *Problem naming the file, document, line, field and a fix, so an operator
// can correct a config in one pass.
//
// Parsing is pure (bytes in, Config or errors out); Load is the only function
// that touches the file system.
package config
