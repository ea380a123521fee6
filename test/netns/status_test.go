package netns

import (
	"encoding/json"
	"os/exec"
	"regexp"
	"strings"
	"testing"

	"github.com/skfwd/skfwd/internal/netlab"
	"github.com/skfwd/skfwd/pkg/gateway"
)

// TestStatusCommand runs `skfwd status` inside a live site's namespace, with no flags (it
// finds the gateway at the default admin address), and checks what it shows against the
// network: links, routes with their next hop, candidates with next hop, score and health, a
// withdrawn local connector, and the data path; then the same through -o json.
func TestStatusCommand(t *testing.T) {
	lab := newLab(t)
	a, b, c := site(t, lab, "a"), site(t, lab, "b"), site(t, lab, "c")
	link(t, lab, a, b, 1)
	link(t, lab, b, c, 3)
	a.Listener("backend", svc, svcPort)
	// A local connector with no backend: withdrawn, shown down.
	a.Connector("a-local", svc, "127.0.0.1:9999")
	b.Connector("backend", svc, beAddr)
	c.Connector("backend", svc, beAddr)
	backend(t, b, "b", beAddr)
	backend(t, c, "c", beAddr)
	start(t, c, b, a)
	check(t, a.WaitCandidates(converged, svc, "b", "c"))
	held, name, err := netlab.Hold(a, svcAddr, timeout)
	check(t, err)
	defer held.Close()
	if name != "b" {
		t.Fatalf("held connection went to %s, want b", name)
	}

	dataPathMode := must[gateway.Status](t)(a.Status()).DataPath
	out := skfwdIn(t, a.Netns(), "status")
	t.Logf("skfwd status at a:\n%s", out)
	rows := tableRows(out)
	wantRows := []string{
		"^Site a, data path " + dataPathMode + "$",
		`^a-to-b-\d+ b dialer up 1 \S+ ([2-9]|\d{2,}) \d+$`, // at least 2 link connections
		"^b b 1 a > b$",
		"^c b 4 a > b > c$",
		"^backend site b b 1 1 2 up$",
		"^site c b 4 0 4 up$",
		"^local a-local - - 0 - down$",
		"^a-local backend 127.0.0.1:9999 down$",
	}
	for _, w := range wantRows {
		re := regexp.MustCompile(w)
		found := false
		for _, r := range rows {
			if re.MatchString(r) {
				found = true
			}
		}
		if !found {
			t.Errorf("no row matches %q", w)
		}
	}
	for _, h := range []string{"LINK PEER ROLE STATE COST RTT CONNECTIONS IDLE TUNNELS", "DESTINATION NEXT HOP COST PATH",
		"ROUTING KEY CANDIDATE NEXT HOP PATH COST OPEN SCORE HEALTH", "CONNECTOR ROUTING KEY ADDRESS HEALTH"} {
		if !strings.Contains(strings.Join(rows, "\n"), h) {
			t.Errorf("header %q missing", h)
		}
	}

	var st gateway.Status
	check(t, json.Unmarshal([]byte(skfwdIn(t, a.Netns(), "status", "-o", "json")), &st))
	if st.Site != "a" || st.DataPath != dataPathMode || len(st.Services) != 1 {
		t.Fatalf("status -o json: site %q data path %q services %d", st.Site, st.DataPath, len(st.Services))
	}
	svcSt := st.Services[0]
	want := []gateway.CandidateStatus{
		{Target: "b", NextHop: "b", PathCost: 1, Open: 1, Score: 2, Health: "up"},
		{Target: "c", NextHop: "b", PathCost: 4, Open: 0, Score: 4, Health: "up"},
	}
	if len(svcSt.Candidates) != 2 || svcSt.Candidates[0] != want[0] || svcSt.Candidates[1] != want[1] {
		t.Errorf("candidates %+v, want %+v", svcSt.Candidates, want)
	}
	if len(svcSt.Withdrawn) != 1 || svcSt.Withdrawn[0] != (gateway.CandidateStatus{Target: "a-local", Local: true, Health: "down"}) {
		t.Errorf("withdrawn %+v, want a-local down", svcSt.Withdrawn)
	}
}

// skfwdIn runs the skfwd binary in a namespace and returns its standard output.
func skfwdIn(t *testing.T, ns string, args ...string) string {
	t.Helper()
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns, skfwdBin}, args...)...)
	out, err := cmd.Output()
	if err != nil {
		var stderr string
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("skfwd %s: %v: %s", strings.Join(args, " "), err, stderr)
	}
	return string(out)
}

// tableRows returns the output's lines with runs of spaces folded to one.
func tableRows(out string) []string {
	var rows []string
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) > 0 {
			rows = append(rows, strings.Join(f, " "))
		}
	}
	return rows
}
