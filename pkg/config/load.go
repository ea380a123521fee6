package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Load reads paths (files, or directories whose *.yaml and *.yml files are
// read in name order, not recursively) and parses them with Parse. A path
// that cannot be read is an error naming it; parsing is not attempted then,
// since a missing file would show up as confusing follow-on problems.
func Load(paths ...string) (*Config, error) {
	var files []File
	var errs []error
	for _, path := range paths {
		fs, err := readPath(path)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		files = append(files, fs...)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return Parse(files)
}

func readPath(path string) ([]File, error) {
	info, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("read config %s: %w", path, err)
	}
	if !info.IsDir() {
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("read config %s: %w", path, err)
		}
		return []File{{Name: path, Data: data}}, nil
	}
	entries, err := os.ReadDir(path) // sorted by name
	if err != nil {
		return nil, fmt.Errorf("read config directory %s: %w", path, err)
	}
	var files []File
	for _, e := range entries {
		ext := strings.ToLower(filepath.Ext(e.Name()))
		if e.IsDir() || (ext != ".yaml" && ext != ".yml") {
			continue
		}
		name := filepath.Join(path, e.Name())
		data, err := os.ReadFile(name)
		if err != nil {
			return nil, fmt.Errorf("read config %s: %w", name, err)
		}
		files = append(files, File{Name: name, Data: data})
	}
	return files, nil
}
