package netlab

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
)

// PromGet calls a Prometheus HTTP API path (such as /api/v1/query) at base ("http://host:port")
// and returns its data, or the error Prometheus gave. The netns suite and the demo both ask a
// real Prometheus what it scraped.
func PromGet(client *http.Client, base, path string, q url.Values) (json.RawMessage, error) {
	resp, err := client.Get(base + path + "?" + q.Encode())
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	var r struct {
		Status string          `json:"status"`
		Error  string          `json:"error"`
		Data   json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, fmt.Errorf("%s: %w: %.200s", path, err, body)
	}
	if r.Status != "success" {
		return nil, fmt.Errorf("%s %v: %s", path, q, r.Error)
	}
	return r.Data, nil
}
