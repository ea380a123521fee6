package metrics

// Kind is a Prometheus metric type.
type Kind string

// Metric kinds.
const (
	Counter   Kind = "counter"
	Gauge     Kind = "gauge"
	Histogram Kind = "histogram"
)

// Def describes one metric: the single place its name, help and labels are written, used to
// build it and to generate the reference.
type Def struct {
	Name   string
	Kind   Kind
	Help   string
	Labels []string
	// Scrape is true for metrics read at scrape time from the gateway's state; false for
	// events counted as they happen.
	Scrape bool
	// Note is extra text for the reference only: when the metric appears, what to watch.
	Note string
}

// Reasons a connection attempt fails (label reason). The tunnel protocol's refusal reasons
// come from the destination site; the others are seen at the ingress.
const (
	ReasonBackendRefused    = "backend-refused"     // the destination's backend refused the connect
	ReasonBackendTimeout    = "backend-timeout"     // the destination's backend did not answer the connect in time
	ReasonNoConnector       = "no-connector"        // the destination has no healthy connector for the key
	ReasonNoRoute           = "no-route"            // no route to the destination (at the ingress or a transit site)
	ReasonNoTunnel          = "no-tunnel"           // no tunnel to the next hop could be had in time
	ReasonShuttingDown      = "shutting-down"       // the destination is stopping
	ReasonBadRequest        = "bad-request"         // the destination could not read the request
	ReasonOverLimit         = "over-limit"          // the destination holds its max-connections already
	ReasonConnectFailed     = "connect-failed"      // a local connector refused the connect
	ReasonConnectTimeout    = "connect-timeout"     // a local connector did not answer the connect in time
	ReasonLinkDown          = "link-down"           // no link up to the next hop
	ReasonLinkLost          = "link-lost"           // the tunnel failed before the destination answered
	ReasonAnswerTimeout     = "answer-timeout"      // the destination did not answer within answer-timeout
	ReasonResetBeforeCommit = "reset-before-commit" // the target accepted, then failed before any byte was exchanged
)

// Reasons lists every value of the reason label.
var Reasons = []string{
	ReasonBackendRefused, ReasonBackendTimeout, ReasonNoConnector, ReasonNoRoute, ReasonNoTunnel,
	ReasonShuttingDown, ReasonBadRequest, ReasonOverLimit, ReasonConnectFailed, ReasonConnectTimeout, ReasonLinkDown,
	ReasonLinkLost, ReasonAnswerTimeout, ReasonResetBeforeCommit,
}

// Reasons a connection to the link port is rejected before it carries anything (label reason
// of skfwd_link_handshakes_rejected_total): pkg/links' RejectReasons, which a test keeps equal.
var HandshakeReasons = []string{
	"unknown-credential", "bad-proof", "malformed", "timeout", "closed", "own-site-name", "no-session",
}

// Outcomes of a connection that reached a target (label outcome).
const (
	OutcomeOK    = "ok"    // both directions ended with a FIN
	OutcomeReset = "reset" // either side reset, or a link under the connection died
)

// Results of a move to a tunnel (label result of skfwd_connection_moves_total).
const (
	MoveMoved    = "moved"
	MoveNoTunnel = "no-tunnel"
	MoveNoAttach = "no-attach"
)

// Reasons a listener refused a client at once (label reason of
// skfwd_connections_refused_total).
const (
	RefusedListenerLimit = "listener-limit"
	RefusedSiteLimit     = "site-limit"
)

// Directions of bytes (label direction).
const (
	ToTarget = "to_target" // from the client toward the backend
	ToClient = "to_client" // from the backend toward the client
)

// Notes that say when a metric has no series on a fresh site: the tests that scrape a fresh
// site read them in the reference to know which absent metrics are documented as absent.
const (
	KernelOnlyNote = "Present only when the data path is the kernel path."
	NoSeriesNote   = "No series exists until the first"
)

// LabelHelp explains every label used, for the reference.
var LabelHelp = map[string]string{
	"site":        "the site whose gateway exports the series (constant on every series)",
	"routing_key": "a Listener's or Connector's routingKey; a key another site sent that this site's configuration does not name, or an unreadable request's, counts as `other`",
	"dest_site":   "the site where the connection reaches its backend (this site for a local connector); `other` for a site routing does not reach, or past 256 distinct sites",
	"source_site": "the site whose listener accepted the connection, as its request says; `other` for a site routing does not reach, past 256 distinct sites, or for an unreadable request",
	"connector":   "a Connector's name at the destination site; empty for a remote site seen from the ingress",
	"listener":    "a Listener's name",
	"link":        "a Link's name (on the accepting side, the credential name, which is the same)",
	"peer_site":   "the site at the other end of a link; empty while a dialed link has never been up",
	"role":        "`dialer` or `acceptor`: which end of the link this site is",
	"pool":        "`own`: idle tunnels for this site's requests; `peer`: tunnels waiting for the peer's requests",
	"next_hop":    "the neighbor site a route leaves through",
	"result":      "what became of a connection's move to a tunnel",
	"reason":      "why an attempt failed, one of: " + joinCode(Reasons) + ", or `other` for a reason a newer peer sent",
	"outcome":     "`ok` (both directions ended with a FIN) or `reset`",
	"direction":   "`to_target` (client to backend) or `to_client` (backend to client)",
	"mode":        "the data path: `userspace` (splice(2)), `sockmap` or `auto`",
	"map":         "a BPF map of the kernel data path",
	"collector":   "which scrape-time source failed",
	"version":     "skfwd's version (`git describe` at build)",
	"goversion":   "the Go toolchain that built it",
}

func joinCode(vs []string) string {
	s := ""
	for i, v := range vs {
		if i > 0 {
			s += ", "
		}
		s += "`" + v + "`"
	}
	return s
}

// targetNote says when the series of one (routing key, destination site) start.
const targetNote = "Exported at 0 for a target from the moment it is a candidate: this site (a local connector) from start, a remote site once routing reaches it advertising the key."

// Definitions of every metric, in reference order. The names carry the skfwd_ prefix.
var (
	defAccepted = Def{Name: "skfwd_connections_accepted_total", Kind: Counter, Labels: []string{"routing_key"},
		Help: "Client connections accepted by this site's listeners.", Note: "Exported at 0 for every Listener's routing key from start."}
	defOpened = Def{Name: "skfwd_connections_opened_total", Kind: Counter, Labels: []string{"routing_key", "dest_site"},
		Help: "Client connections accepted here that reached a target (committed), by destination site.",
		Note: targetNote}
	defClosed = Def{Name: "skfwd_connections_closed_total", Kind: Counter, Labels: []string{"routing_key", "dest_site", "outcome"},
		Help: "Client connections accepted here that reached a target and have ended.", Note: targetNote}
	defFailed = Def{Name: "skfwd_connections_failed_total", Kind: Counter, Labels: []string{"routing_key"},
		Help: "Client connections accepted here that no candidate could take; the client saw a reset.",
		Note: "Non-zero only when every candidate failed (or none existed) while the listener was still open. Exported at 0 for every Listener's routing key from start."}
	defOpen = Def{Name: "skfwd_connections_open", Kind: Gauge, Scrape: true, Labels: []string{"routing_key", "dest_site", "connector"},
		Help: "Connections this site holds open now, per target: the open(k, d) term of the selector's score.",
		Note: "Read from the open-connection counts the selector uses (in-process table, or BPF maps on the kernel path). Every candidate of a routing key with a listener here, and every healthy local connector, shows its count, 0 included. At the destination, connections delivered to a local connector for another site count here too."}
	defInProgress = Def{Name: "skfwd_connections_in_progress", Kind: Gauge, Scrape: true,
		Help: "Client connections and tunnels being served by this site now."}
	defSetup = Def{Name: "skfwd_connection_setup_seconds", Kind: Histogram, Labels: []string{"routing_key", "dest_site"},
		Help: "Time from accepting a client connection to its target committing (first byte exchanged), retries included.", Note: targetNote}
	defBytes = Def{Name: "skfwd_connection_bytes_total", Kind: Counter, Labels: []string{"routing_key", "dest_site", "direction"},
		Help: "Bytes carried by connections accepted here, counted when each connection ends.", Note: targetNote}
	defAttemptFailures = Def{Name: "skfwd_connection_attempt_failures_total", Kind: Counter, Labels: []string{"routing_key", "dest_site", "reason"},
		Help: "Attempts to place a client connection on a target that failed, by target and reason.",
		Note: "Exported at 0 by every reason for this site as dest_site, for each routing key with both a listener and a local connector here. A remote site's series start with its first failure: by every reason for every candidate site would be routing keys x sites x reasons."}
	defRetries = Def{Name: "skfwd_connection_retries_total", Kind: Counter, Labels: []string{"routing_key", "reason"},
		Help: "Failed attempts after which the connection was tried on the next candidate, by the reason of the failure.",
		Note: "Exported at 0 by every reason for every Listener's routing key from start."}
	defDelivered = Def{Name: "skfwd_connections_delivered_total", Kind: Counter, Labels: []string{"routing_key", "source_site", "connector"},
		Help: "Connections from other sites that this site delivered to a local connector.",
		Note: "Exported at 0 for every local connector with each neighbor as source_site once its link is up; a source further away starts with its first connection."}
	defRefused = Def{Name: "skfwd_requests_refused_total", Kind: Counter, Labels: []string{"routing_key", "source_site", "reason"},
		Help: "Requests from other sites that this site refused, by reason; the ingress then tries its next candidate.",
		Note: "A request that could not be read (malformed, or stalled mid-request) counts with reason `bad-request` and routing_key and source_site `other`; that series is exported at 0 from start, the others start with their first refusal."}
	defAdmissionRefused = Def{Name: "skfwd_connections_refused_total", Kind: Counter, Labels: []string{"listener", "reason"},
		Help: "Client connections a listener reset at once because a limit was reached: `listener-limit` (the Listener's max-connections) or `site-limit` (the site's max-connections).",
		Note: "Exported at 0 for every listener from start. Connections from other sites refused at this site's limit count in skfwd_requests_refused_total with reason `over-limit`."}
	defIdleReset = Def{Name: "skfwd_connections_idle_reset_total", Kind: Counter, Labels: []string{"listener"},
		Help: "Client connections a listener reset because they passed no byte either way for the Listener's idle-timeout.",
		Note: "Exported at 0 for every listener from start."}
	defHandshakesRejected = Def{Name: "skfwd_link_handshakes_rejected_total", Kind: Counter, Labels: []string{"reason"},
		Help: "Connections to this site's link port rejected before they carried anything, by reason.",
		Note: "reason is one of " + joinCode(HandshakeReasons) + " (a credential this site never issued; the right credential with the wrong secret; not skfwd's handshake; no handshake within 5 s; closed mid-handshake; a peer with this site's own name; a tunnel for a link not up here), each exported at 0 from start. The log shows at most one line a second per reason."}

	defScore = Def{Name: "skfwd_selector_score", Kind: Gauge, Scrape: true, Labels: []string{"routing_key", "dest_site", "connector"},
		Help: "Score of each candidate for a routing key with a listener here (path cost + open connections); the lowest takes the next connection."}
	defPathCost = Def{Name: "skfwd_selector_path_cost", Kind: Gauge, Scrape: true, Labels: []string{"routing_key", "dest_site", "connector"},
		Help: "Path cost of each candidate for a routing key with a listener here (0 for a local connector)."}
	defCandidates = Def{Name: "skfwd_routing_key_candidates", Kind: Gauge, Scrape: true, Labels: []string{"routing_key"},
		Help: "Candidates (healthy local connectors and reachable sites advertising the key) for each routing key with a listener here.",
		Note: "0 means clients of this key are refused: see the SkfwdNoCandidate alert."}
	defListener = Def{Name: "skfwd_listener_accepting", Kind: Gauge, Scrape: true, Labels: []string{"listener", "routing_key"},
		Help: "1 while the listener accepts connections; 0 while it is closed (no candidate) or cannot reopen."}
	defConnectorUp = Def{Name: "skfwd_connector_up", Kind: Gauge, Scrape: true, Labels: []string{"connector", "routing_key"},
		Help: "1 while the connector's backend answers its health probe (TCP connect), else 0."}

	defLinkUp = Def{Name: "skfwd_link_up", Kind: Gauge, Scrape: true, Labels: []string{"link", "peer_site", "role"},
		Help: "1 while the link's session is up, 0 while a dialed link is connecting.",
		Note: "An accepted link that goes down disappears instead (the accepting side does not know it should exist); its dialer shows 0."}
	defLinkCost = Def{Name: "skfwd_link_cost", Kind: Gauge, Scrape: true, Labels: []string{"link", "peer_site", "role"},
		Help: "The link's cost: the higher of the costs configured at its two ends."}
	defLinkRTT = Def{Name: "skfwd_link_rtt_seconds", Kind: Gauge, Scrape: true, Labels: []string{"link", "peer_site", "role"},
		Help: "Round-trip time of the link's last heartbeat; up links only."}
	defHeartbeatMisses = Def{Name: "skfwd_link_heartbeat_misses_total", Kind: Counter, Labels: []string{"link", "peer_site"},
		Help: "Heartbeat intervals in which nothing arrived from the peer; link-dead-time of them ends the link."}
	defPoolIdle = Def{Name: "skfwd_tunnel_pool_size", Kind: Gauge, Scrape: true, Labels: []string{"link", "peer_site", "pool"},
		Help: "Idle tunnels in each pool of an up link."}
	defTunnelsActive = Def{Name: "skfwd_tunnels_active", Kind: Gauge, Scrape: true, Labels: []string{"link", "peer_site"},
		Help: "Tunnels of an up link carrying a connection now."}
	defPoolMisses = Def{Name: "skfwd_tunnel_pool_misses_total", Kind: Counter, Labels: []string{"link", "peer_site"},
		Help: "Connections that found no idle tunnel and waited for a new one; each miss grows the pool."}
	defMoves = Def{Name: "skfwd_connection_moves_total", Kind: Counter, Labels: []string{"result"},
		Help: "Connections between neighboring sites that proved bulk and moved off their stream onto a tunnel of their own, and moves that could not happen, by result.",
		Note: "result is `moved` (counted at both ends), `no-tunnel` (the end that opened the stream found no idle tunnel: the connection stays on its stream and the pool grows) or `no-attach` (the other end got no tunnel within 5 s: the connection was reset). Each is exported at 0 from start."}
	defRouteCost = Def{Name: "skfwd_route_cost", Kind: Gauge, Scrape: true, Labels: []string{"dest_site", "next_hop"},
		Help: "Cost of the least-cost path to each reachable site."}

	defDataPath = Def{Name: "skfwd_datapath_mode", Kind: Gauge, Scrape: true, Labels: []string{"mode"},
		Help: "1 for the data path in use."}
	defPromotions = Def{Name: "skfwd_kernel_promotions_total", Kind: Counter,
		Help: "Connections moved from the userspace path to the kernel (sockmap) path."}
	defDemotions = Def{Name: "skfwd_kernel_demotions_total", Kind: Counter, Labels: []string{"reason"},
		Help: "Connections moved back from the kernel path to the userspace path, by reason.",
		Note: "The reason values are the kernel data path's own. " + NoSeriesNote + " demotion."}
	defFallbacks = Def{Name: "skfwd_kernel_fallbacks_total", Kind: Counter, Labels: []string{"reason"},
		Help: "Connections that stayed on the userspace path although the kernel path was wanted, by reason.",
		Note: "The reason values are the kernel data path's own. " + NoSeriesNote + " fallback."}
	defTrimmed = Def{Name: "skfwd_kernel_retransmission_trimmed_bytes_total", Kind: Counter,
		Help: "Bytes at the front of retransmitted segments that the kernel path cut off because they had already been delivered (the kernel's sockmap reader would have delivered them twice); counted when the connection ends.",
		Note: "Rises only under packet loss on a promoted connection. Kernels before 6.2 cannot cut; see the kernel data path's start-up warning."}
	defKernelBytes = Def{Name: "skfwd_kernel_bytes", Kind: Gauge, Scrape: true,
		Help: "Bytes forwarded by the kernel path for connections open now (read from BPF maps).",
		Note: KernelOnlyNote}
	defKernelBacklog = Def{Name: "skfwd_kernel_backlog_bytes", Kind: Gauge, Scrape: true,
		Help: "Bytes the kernel path redirected toward a socket that has not yet taken them into its send buffer: memory charged to no socket, bounded per direction by the max-kernel-backlog setting.",
		Note: KernelOnlyNote}
	defMapEntries = Def{Name: "skfwd_bpf_map_entries", Kind: Gauge, Scrape: true, Labels: []string{"map"},
		Help: "Entries in each BPF map of the kernel path.", Note: KernelOnlyNote}
	defMapCapacity = Def{Name: "skfwd_bpf_map_capacity", Kind: Gauge, Scrape: true, Labels: []string{"map"},
		Help: "Maximum entries of each BPF map of the kernel path.", Note: KernelOnlyNote}
	defCollectErrors = Def{Name: "skfwd_collect_errors_total", Kind: Counter, Scrape: true, Labels: []string{"collector"},
		Help: "Scrapes in which a scrape-time source failed; the metrics it supplies are missing from that scrape.",
		Note: KernelOnlyNote + " The kernel path's BPF maps are the only scrape-time source that can fail."}
	defBuildInfo = Def{Name: "skfwd_build_info", Kind: Gauge, Labels: []string{"version", "goversion"},
		Help: "Always 1; the labels say which build runs."}
)

// Definitions lists every metric, in reference order.
var Definitions = []Def{
	defAccepted, defOpened, defClosed, defFailed, defOpen, defInProgress, defSetup, defBytes,
	defAttemptFailures, defRetries, defDelivered, defRefused, defAdmissionRefused, defIdleReset, defHandshakesRejected,
	defScore, defPathCost, defCandidates, defListener, defConnectorUp,
	defLinkUp, defLinkCost, defLinkRTT, defHeartbeatMisses, defPoolIdle, defTunnelsActive, defPoolMisses, defMoves, defRouteCost,
	defDataPath, defPromotions, defDemotions, defFallbacks, defTrimmed, defKernelBytes, defKernelBacklog, defMapEntries, defMapCapacity,
	defCollectErrors, defBuildInfo,
}

// SetupBuckets are the setup latency histogram's buckets (seconds): from a local backend's
// sub-millisecond connect to a link declared dead after link-dead-time and a retry elsewhere.
var SetupBuckets = []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}
