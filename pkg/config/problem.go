package config

import (
	"fmt"
	"strconv"
	"strings"
)

// Problem is one thing wrong with the configuration. Parse returns every
// Problem it finds, joined with errors.Join; use errors.As or walk the joined
// error's Unwrap() []error to reach them.
type Problem struct {
	File  string // path as given
	Doc   int    // 1-based document index within the file (0 = not tied to a document)
	Line  int    // 1-based line of the offending node when known, else 0
	Kind  string // resource kind, e.g. "Listener"
	Name  string // metadata.name when known
	Field string // e.g. "spec.port", "spec.settings.heartbeat-interval"
	Msg   string // what is wrong, quoting the bad value
	Fix   string // how to fix it
}

// Error renders the problem the way a compiler would, so editors can jump to
// it: `file:line (document N, Kind "name"): field: msg; fix: fix`.
func (p *Problem) Error() string {
	var b strings.Builder
	b.WriteString(p.location())
	if p.Field != "" {
		b.WriteString(p.Field)
		b.WriteString(": ")
	}
	b.WriteString(p.Msg)
	if p.Fix != "" {
		b.WriteString("; fix: ")
		b.WriteString(p.Fix)
	}
	return b.String()
}

func (p *Problem) location() string {
	var b strings.Builder
	b.WriteString(p.File)
	if p.File != "" && p.Line > 0 {
		b.WriteString(":" + strconv.Itoa(p.Line))
	}
	var ctx []string
	if p.Doc > 0 {
		ctx = append(ctx, "document "+strconv.Itoa(p.Doc))
	}
	switch {
	case p.Kind != "" && p.Name != "":
		ctx = append(ctx, fmt.Sprintf("%s %q", p.Kind, p.Name))
	case p.Kind != "":
		ctx = append(ctx, p.Kind)
	}
	if len(ctx) > 0 {
		if b.Len() > 0 {
			b.WriteString(" ")
		}
		b.WriteString("(" + strings.Join(ctx, ", ") + ")")
	}
	if b.Len() > 0 {
		b.WriteString(": ")
	}
	return b.String()
}
