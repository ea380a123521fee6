package metrics

import (
	"os"
	"testing"
)

// TestReferenceCurrent fails when docs/metrics.md is not what the definitions generate.
func TestReferenceCurrent(t *testing.T) {
	const path = "../../docs/metrics.md"
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (generate it: go run ./pkg/metrics/cmd/gendoc)", err)
	}
	if string(got) != Reference() {
		t.Fatalf("%s is not current: run go run ./pkg/metrics/cmd/gendoc and commit the result", path)
	}
	for _, r := range Reasons {
		if reasonHelp[r] == "" {
			t.Errorf("reason %s has no reasonHelp entry", r)
		}
	}
}
