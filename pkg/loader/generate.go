package loader

//go:generate go tool bpf2go -cc clang -cflags "-O2 -g -Wall -Werror" -target bpfel skfwd ../../bpf/skfwd.c -- -I/usr/include/x86_64-linux-gnu
