package config

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"
)

// ErrUnknownSetting is wrapped by Settings.Set when the key is not one of
// SettingKeys.
var ErrUnknownSetting = errors.New("unknown setting")

// Settings are skfwd's own knobs. In YAML they live in the Site's
// spec.settings (Skupper's SiteSpec.Settings is a map of strings), and the
// same keys can be set from flags or SKFWD_* environment variables via Set.
type Settings struct {
	AdminAddress string // host:port of the admin/metrics server; "" means off
	Pprof        bool   // serve /debug/pprof on the admin address
	AccessLog    bool   // a log line for every connection that ends, not only failures
	StateDir     string

	HeartbeatInterval   time.Duration
	LinkDeadTime        time.Duration
	ProbeInterval       time.Duration
	ConnectTimeout      time.Duration // backend TCP connect at the destination site
	AnswerTimeout       time.Duration // how long the ingress waits for a tunnel answer
	ReconnectMaxBackoff time.Duration

	TunnelPoolSize  int // idle pre-established tunnels kept per pool
	LinkConnections int // link connections a dialed link keeps; 0: one per CPU, at least 2
	FirstBytesLimit int // client bytes buffered until the tunnel answer
	MaxConnections  int // client connections the site holds at once; 0: from the descriptor limit
	StreamWindow    int // receive window of each stream on a link connection
	MoveBytes       int // bytes (both ways) after which a connection moves off its stream; 0: never

	DataPath     string        // "auto", "sockmap" or "userspace"
	PromoteBytes int           // bytes one direction moves before the connection goes to the kernel path
	PromoteAfter time.Duration // age at which a connection goes to the kernel path
	MaxPromoted  int           // connections the kernel path holds at once (map size)
	MaxBacklog   int           // bytes one direction may hold in the kernel path before it goes back to userspace
}

// Data path modes.
const (
	DataPathAuto      = "auto"
	DataPathSockmap   = "sockmap"
	DataPathUserspace = "userspace"
)

// DefaultSettings returns the values used for keys the Site does not set.
func DefaultSettings() Settings {
	return Settings{
		AdminAddress:        "127.0.0.1:9441",
		StateDir:            "/var/lib/skfwd",
		HeartbeatInterval:   250 * time.Millisecond,
		LinkDeadTime:        time.Second,
		ProbeInterval:       time.Second,
		ConnectTimeout:      2 * time.Second,
		AnswerTimeout:       5 * time.Second,
		TunnelPoolSize:      8,
		FirstBytesLimit:     65536,
		StreamWindow:        256 << 10,
		MoveBytes:           1 << 20,
		ReconnectMaxBackoff: 5 * time.Second,
		DataPath:            DataPathAuto,
		PromoteBytes:        1 << 20,
		PromoteAfter:        time.Second,
		MaxPromoted:         32768,
		MaxBacklog:          4 << 20,
	}
}

// setting describes one key: how to parse it into Settings and how to print
// it back. Keeping both directions in one table keeps Set, Get and
// SettingKeys from drifting apart.
type setting struct {
	key string
	set func(s *Settings, v string) (msg, fix string)
	get func(s *Settings) string
}

var settingTable = []setting{
	{
		key: "admin-address",
		set: func(s *Settings, v string) (string, string) {
			if v == "off" {
				s.AdminAddress = ""
				return "", ""
			}
			if msg, fix := checkHostPort(v); msg != "" {
				return msg, fix
			}
			s.AdminAddress = v
			return "", ""
		},
		get: func(s *Settings) string {
			if s.AdminAddress == "" {
				return "off"
			}
			return s.AdminAddress
		},
	},
	{
		key: "state-dir",
		set: func(s *Settings, v string) (string, string) {
			if v == "" {
				return "must not be empty", "set a directory path such as /var/lib/skfwd"
			}
			s.StateDir = v
			return "", ""
		},
		get: func(s *Settings) string { return s.StateDir },
	},
	durationSetting("heartbeat-interval", func(s *Settings) *time.Duration { return &s.HeartbeatInterval }, 1),
	durationSetting("link-dead-time", func(s *Settings) *time.Duration { return &s.LinkDeadTime }, 1),
	durationSetting("probe-interval", func(s *Settings) *time.Duration { return &s.ProbeInterval }, 1),
	durationSetting("connect-timeout", func(s *Settings) *time.Duration { return &s.ConnectTimeout }, 1),
	durationSetting("answer-timeout", func(s *Settings) *time.Duration { return &s.AnswerTimeout }, 1),
	intSetting("tunnel-pool-size", func(s *Settings) *int { return &s.TunnelPoolSize }, 0, 1024),
	intSetting("link-connections", func(s *Settings) *int { return &s.LinkConnections }, 0, 64),
	intSetting("first-bytes-limit", func(s *Settings) *int { return &s.FirstBytesLimit }, 1024, 1048576),
	intSetting("max-connections", func(s *Settings) *int { return &s.MaxConnections }, 0, 1<<24),
	// Below a frame the window would stall every stream on each round trip; above 16 MiB one
	// stream could hold more than a gateway should for a single reader.
	intSetting("stream-window", func(s *Settings) *int { return &s.StreamWindow }, 16<<10, 16<<20),
	intSetting("move-bytes", func(s *Settings) *int { return &s.MoveBytes }, 0, 1<<30),
	// A floor on the backoff cap keeps a flapping peer from being redialed in
	// a tight loop.
	durationSetting("reconnect-max-backoff", func(s *Settings) *time.Duration { return &s.ReconnectMaxBackoff }, 100*time.Millisecond),
	{
		key: "data-path",
		set: func(s *Settings, v string) (string, string) {
			switch v {
			case DataPathAuto, DataPathSockmap, DataPathUserspace:
				s.DataPath = v
				return "", ""
			}
			return fmt.Sprintf("%q is not a data path", v), "use auto (kernel path for bulk connections where BPF works), sockmap (always, or fail) or userspace"
		},
		get: func(s *Settings) string { return s.DataPath },
	},
	intSetting("promote-bytes", func(s *Settings) *int { return &s.PromoteBytes }, 1, 1<<30),
	durationSetting("promote-after", func(s *Settings) *time.Duration { return &s.PromoteAfter }, 1),
	intSetting("max-promoted", func(s *Settings) *int { return &s.MaxPromoted }, 16, 1<<20),
	intSetting("max-kernel-backlog", func(s *Settings) *int { return &s.MaxBacklog }, 64<<10, 1<<30),
	// Off by default: profiles show what the process is doing (and the CPU profile costs
	// while it runs) to anyone who reaches the admin address.
	onOffSetting("pprof", func(s *Settings) *bool { return &s.Pprof }, "to serve /debug/pprof on the admin address"),
	// Off by default: a line per connection costs more CPU than the rest of a short
	// connection's bookkeeping (make bench profile), and failures are logged either way.
	onOffSetting("access-log", func(s *Settings) *bool { return &s.AccessLog }, "to log a line for every connection that ends"),
}

func onOffSetting(key string, field func(*Settings) *bool, what string) setting {
	return setting{
		key: key,
		set: func(s *Settings, v string) (string, string) {
			switch v {
			case "on", "off":
				*field(s) = v == "on"
				return "", ""
			}
			return fmt.Sprintf("%q is not on or off", v), "use on " + what + ", or off"
		},
		get: func(s *Settings) string {
			if *field(s) {
				return "on"
			}
			return "off"
		},
	}
}

func durationSetting(key string, field func(*Settings) *time.Duration, min time.Duration) setting {
	return setting{
		key: key,
		set: func(s *Settings, v string) (string, string) {
			d, err := time.ParseDuration(v)
			if err != nil {
				return fmt.Sprintf("%q is not a duration", v), "use a Go duration such as 250ms, 2s or 1m"
			}
			if d < min {
				if min == 1 {
					return fmt.Sprintf("%q must be greater than 0", v), "use a positive duration such as 250ms or 2s"
				}
				return fmt.Sprintf("%q is below the minimum of %s", v, min), fmt.Sprintf("use a duration of at least %s", min)
			}
			*field(s) = d
			return "", ""
		},
		get: func(s *Settings) string { return field(s).String() },
	}
}

func intSetting(key string, field func(*Settings) *int, min, max int) setting {
	return setting{
		key: key,
		set: func(s *Settings, v string) (string, string) {
			n, err := strconv.Atoi(v)
			if err != nil {
				return fmt.Sprintf("%q is not an integer", v), fmt.Sprintf("use a whole number from %d to %d", min, max)
			}
			if n < min || n > max {
				return fmt.Sprintf("%d is out of range", n), fmt.Sprintf("use a whole number from %d to %d", min, max)
			}
			*field(s) = n
			return "", ""
		},
		get: func(s *Settings) string { return strconv.Itoa(*field(s)) },
	}
}

// checkHostPort accepts host:port with a numeric port; the host may be empty
// (all addresses), an IP address or a syntactically valid name, since resolving it is not
// this package's job.
func checkHostPort(v string) (msg, fix string) {
	const fix0 = "use host:port such as 127.0.0.1:9441 or [::1]:9441"
	host, port, err := net.SplitHostPort(v)
	if err != nil {
		return fmt.Sprintf("%q is not host:port", v), fix0
	}
	if host != "" {
		if why := hostNameProblem(host); why != "" {
			return fmt.Sprintf("host %q in %q is neither an IP address nor a valid host name: %s", host, v, why), fix0
		}
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 1 || n > 65535 {
		return fmt.Sprintf("port %q in %q is not a port from 1 to 65535", port, v), fix0
	}
	return "", ""
}

// SettingKeys returns the keys accepted in Site spec.settings, in the order
// they are documented.
func SettingKeys() []string {
	keys := make([]string, len(settingTable))
	for i, st := range settingTable {
		keys[i] = st.key
	}
	return keys
}

// SettingError is returned by Settings.Set and Settings.Validate.
type SettingError struct {
	Key string
	Msg string
	Fix string
	err error // sentinel, if any
}

func (e *SettingError) Error() string {
	s := "setting " + e.Key + ": " + e.Msg
	if e.Fix != "" {
		s += "; fix: " + e.Fix
	}
	return s
}

func (e *SettingError) Unwrap() error { return e.err }

func lookupSetting(key string) (setting, bool) {
	for _, st := range settingTable {
		if st.key == key {
			return st, true
		}
	}
	return setting{}, false
}

// Set parses value for key with the same rules as Site spec.settings. It
// checks the value alone; relations between keys (link-dead-time must exceed
// heartbeat-interval) are checked by Validate once all keys are set, so the
// order of overrides does not matter. On error s is unchanged.
func (s *Settings) Set(key, value string) error {
	st, ok := lookupSetting(key)
	if !ok {
		return &SettingError{
			Key: key,
			Msg: fmt.Sprintf("%q is not a known setting", key),
			Fix: "use one of " + strings.Join(SettingKeys(), ", "),
			err: ErrUnknownSetting,
		}
	}
	next := *s
	if msg, fix := st.set(&next, value); msg != "" {
		return &SettingError{Key: key, Msg: msg, Fix: fix}
	}
	*s = next
	return nil
}

// Get returns the value of key formatted so that Set accepts it, for help
// text and status output; ok is false for an unknown key.
func (s Settings) Get(key string) (value string, ok bool) {
	st, ok := lookupSetting(key)
	if !ok {
		return "", false
	}
	return st.get(&s), true
}

// Validate checks the relations between settings. Parse calls it; callers
// that override settings after parsing (flags, environment) should call it
// again.
func (s Settings) Validate() error {
	if s.LinkDeadTime <= s.HeartbeatInterval {
		return &SettingError{
			Key: "link-dead-time",
			Msg: fmt.Sprintf("%s must be greater than heartbeat-interval %s", s.LinkDeadTime, s.HeartbeatInterval),
			Fix: "set link-dead-time to a few heartbeat intervals, e.g. 4 x heartbeat-interval",
		}
	}
	return nil
}
