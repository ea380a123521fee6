// Command gendoc writes the metrics reference, docs/metrics.md, from pkg/metrics's
// definitions. Run it from the repository root after changing a metric:
//
//	go run ./pkg/metrics/cmd/gendoc
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/skfwd/skfwd/pkg/metrics"
)

func main() {
	out := flag.String("o", "docs/metrics.md", "file to write")
	flag.Parse()
	if err := os.WriteFile(*out, []byte(metrics.Reference()), 0o644); err != nil {
		fmt.Fprintf(os.Stderr, "gendoc: %v\n", err)
		os.Exit(1)
	}
}
