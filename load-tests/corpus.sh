#!/usr/bin/env bash
# Sourced by the load-test scripts: make_corpus FILE writes a deterministic 64 MiB corpus of
# CI-like output lines (ANSI colour, `\r` progress lines, test results, compiler errors).
make_corpus() {
  awk 'BEGIN { srand(42); while (n < 67108864) {
    r = int(rand() * 4);
    if (r == 0) s = sprintf("\033[32m   Compiling\033[0m crate-%d v0.%d.%d (/build/src)", int(rand()*900), int(rand()*20), int(rand()*9));
    else if (r == 1) s = sprintf("test tests::case_%d ... ok", int(rand()*100000));
    else if (r == 2) s = sprintf("Downloading %3d%%\r Downloading %3d%%\r Done", int(rand()*100), int(rand()*100));
    else s = sprintf("\033[1;31merror[E%04d]\033[0m: mismatched types at src/lib.rs:%d:%d", int(rand()*9999), int(rand()*999), int(rand()*99));
    print s; n += length(s) + 1 } }' > "$1"
}
