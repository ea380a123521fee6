// Command skfwd runs a gateway of an skfwd application network and the tools around it.
//
//	skfwd run -f site/            # run this site's gateway in the foreground
//	skfwd check -f site/          # validate the configuration and exit
//	skfwd link generate -f site/ --endpoint 10.0.0.2:55671 > link.yaml
//	skfwd status                  # links, routes, services of the local gateway
//	skfwd version
package main

import (
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	os.Exit(run(env{
		stdout:  os.Stdout,
		stderr:  os.Stderr,
		getenv:  os.Getenv,
		signals: func(c chan<- os.Signal) { signal.Notify(c, syscall.SIGINT, syscall.SIGTERM) },
	}, os.Args[1:]))
}

// env is everything a command touches outside itself, so every command runs in tests too.
type env struct {
	stdout, stderr io.Writer
	getenv         func(string) string
	signals        func(chan<- os.Signal)
}
