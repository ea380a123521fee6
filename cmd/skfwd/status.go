package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/skfwd/skfwd/pkg/config"
	"github.com/skfwd/skfwd/pkg/gateway"
)

func cmdStatus(e env, args []string) int {
	fs := newFlags(e, "status")
	addr := fs.String("admin-address", config.DefaultSettings().AdminAddress, "admin address of the running gateway")
	output := fs.String("o", "table", "output format: table or json")
	if err := parseFlags(e, fs, args); err != nil {
		fmt.Fprintf(e.stderr, "skfwd status: %v\n", err)
		return exitUsage
	}
	if *output != "table" && *output != "json" {
		fmt.Fprintf(e.stderr, "skfwd status: -o %q: use table or json\n", *output)
		return exitUsage
	}
	body, err := fetchStatus(*addr)
	if err != nil {
		fmt.Fprintf(e.stderr, "skfwd status: %v (is the gateway running? its admin address is Site spec.settings admin-address; pass --admin-address)\n", err)
		return exitFailure
	}
	if *output == "json" {
		_, _ = e.stdout.Write(body)
		return exitOK
	}
	var st gateway.Status
	if err := json.Unmarshal(body, &st); err != nil {
		fmt.Fprintf(e.stderr, "skfwd status: gateway at %s answered something else than status: %v\n", *addr, err)
		return exitFailure
	}
	printStatus(e.stdout, st)
	return exitOK
}

func fetchStatus(addr string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/status", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s answered %s", addr, resp.Status)
	}
	return io.ReadAll(resp.Body)
}

func printStatus(w io.Writer, st gateway.Status) {
	fmt.Fprintf(w, "Site %s, data path %s\n", st.Site, st.DataPath)
	if st.DataPathNote != "" {
		fmt.Fprintf(w, "  kernel path not in use: %s\n", st.DataPathNote)
	}
	if k := st.Kernel; k != nil {
		fmt.Fprintf(w, "  kernel path: %d connections now, %d promoted, %d directions demoted (slow reader), backlog %d bytes\n",
			k.Active, k.Promoted, k.Demoted, k.BacklogBytes)
		if len(k.Fallbacks) > 0 {
			reasons := make([]string, 0, len(k.Fallbacks))
			for r, n := range k.Fallbacks {
				reasons = append(reasons, fmt.Sprintf("%s %d", r, n))
			}
			sort.Strings(reasons)
			fmt.Fprintf(w, "  stayed in userspace: %s\n", strings.Join(reasons, ", "))
		}
	}
	limit := "no limit"
	if st.ConnectionLimit > 0 {
		limit = fmt.Sprintf("limit %d", st.ConnectionLimit)
	}
	fmt.Fprintf(w, "  client connections: %d (%s; file descriptors %d)\n", st.Clients, limit, st.FileLimit)
	for _, warning := range st.Warnings {
		fmt.Fprintf(w, "  warning: %s\n", warning)
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "LINK\tPEER\tROLE\tSTATE\tCOST\tRTT\tCONNECTIONS\tIDLE TUNNELS")
	for _, l := range st.Links {
		state := l.State
		if l.Error != "" {
			state += " (" + l.Error + ")"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%v\t%d\t%d\n", l.Name, dash(l.Peer), l.Role, state, l.Cost, l.RTT.Round(10*time.Microsecond), l.Connections, l.IdleTunnels)
	}
	tw.Flush()
	fmt.Fprintln(w)
	fmt.Fprintln(tw, "DESTINATION\tNEXT HOP\tCOST\tPATH")
	for _, r := range st.Routes {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\n", r.Dest, r.NextHop, r.Cost, strings.Join(r.Path, " > "))
	}
	tw.Flush()
	fmt.Fprintln(w)
	fmt.Fprintln(tw, "ROUTING KEY\tCANDIDATE\tNEXT HOP\tPATH COST\tOPEN\tSCORE\tHEALTH")
	for _, s := range st.Services {
		if len(s.Candidates) == 0 {
			fmt.Fprintf(tw, "%s\t(none: listeners refuse)\t\t\t\t\t\n", s.RoutingKey)
		}
		for i, c := range s.Candidates {
			key := ""
			if i == 0 {
				key = s.RoutingKey
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%d\t%s\n", key, candidateName(c), dash(c.NextHop), c.PathCost, c.Open, c.Score, c.Health)
		}
		for _, c := range s.Withdrawn {
			fmt.Fprintf(tw, "\t%s\t-\t-\t%d\t-\t%s\n", candidateName(c), c.Open, c.Health)
		}
	}
	tw.Flush()
	if len(st.Connectors) > 0 {
		fmt.Fprintln(w)
		fmt.Fprintln(tw, "CONNECTOR\tROUTING KEY\tADDRESS\tHEALTH")
		for _, c := range st.Connectors {
			health := "down"
			if c.Healthy {
				health = "up"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", c.Name, c.RoutingKey, c.Address, health)
		}
		tw.Flush()
	}
}

func candidateName(c gateway.CandidateStatus) string {
	if c.Local {
		return "local " + c.Target
	}
	return "site " + c.Target
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
