#!/usr/bin/python3
"""Realistic build logs for the storage benchmarks: compiler and ctest
output, repeated but varied, the same bytes for the same size and seed.

What a CI log is made of, in roughly the proportions of a C/C++ project
built with CMake and ninja and tested with ctest and gtest:

- ninja progress lines with the object being built,
- full compiler command lines (long, mostly identical flags, varying
  paths),
- warnings with gcc's source excerpt and caret lines, and the
  "In file included from" chains before them,
- linker lines,
- test output: ctest's numbered results with dotted leaders and timings,
  gtest's RUN/OK blocks with durations, the occasional assertion failure
  with values and addresses, summaries.

A project has a fixed set of source files (a few hundred), so names repeat
the way they do in real logs; line numbers, timings, counters and
addresses vary, so the text is not trivially compressible either. How well
a storage engine compresses this is the figure issue 13 sets a target for
(stored size <= 8% of raw), so the generator must stay stable: change it
only together with the recorded figures (docs/release-engineers.md,
"Speed").

    tests/bench/compilerlog.py OUT --mib 200 [--seed 13]

writes OUT and prints its size and SHA-256. From Python:
generate(path, size_bytes, seed) -> (size, sha256 hex).
"""
import argparse
import hashlib
import random
import sys

DIRS = ["src/core", "src/net", "src/io", "src/store", "src/util", "src/ui",
        "lib/json", "lib/regex", "tools/gen", "tests/unit", "tests/integ"]
STEMS = ["buffer", "parser", "lexer", "socket", "http_client", "http_server",
         "scheduler", "queue", "hash_map", "string_view", "allocator",
         "thread_pool", "timer", "config", "options", "logger", "journal",
         "btree", "pager", "wal", "checksum", "compress", "inflate",
         "utf8", "base64", "sha256", "tls", "resolver", "poller", "signal"]
WORDS = ["len", "count", "idx", "offset", "state", "node", "entry", "flags",
         "result", "value", "size", "cap", "head", "tail", "fd", "rc"]
WARNINGS = [
    ("comparison of integer expressions of different signedness: 'int' "
     "and 'size_t' {{aka 'long unsigned int'}}", "-Wsign-compare",
     "    for (int {w} = 0; {w} < n; {w}++)", 20),
    ("unused variable '{w}'", "-Wunused-variable", "    int {w} = 0;", 9),
    ("unused parameter '{w}'", "-Wunused-parameter",
     "static int {s}_init(struct {s} *self, int {w})", 40),
    ("'{w}' may be used uninitialized", "-Wmaybe-uninitialized",
     "    return {w};", 12),
    ("implicit conversion from 'double' to 'int' changes value",
     "-Wfloat-conversion", "    int {w} = ratio * 100.0;", 14),
    ("this statement may fall through", "-Wimplicit-fallthrough=",
     "        {w}++;", 12),
]
FLAGS = ("-DHAVE_CONFIG_H -D_GNU_SOURCE -Iinclude -I../include -I../src "
         "-I/usr/include/json -O2 -g -Wall -Wextra -Wshadow -Wformat=2 "
         "-fstack-protector-strong -fPIC -std=gnu11")


class Project:
    def __init__(self, rnd):
        self.rnd = rnd
        self.files = []
        for d in DIRS:
            for s in rnd.sample(STEMS, 14):
                self.files.append((d, s))
        self.tests = ["%s.%s_%s" % (d.split("/")[-1], s, rnd.choice(WORDS))
                      for d, s in self.files[:240]]

    def path(self, f):
        return "../%s/%s.c" % f


def build_section(rnd, p, out, total):
    n = len(p.files)
    # ninja's order is the same build after build, give or take what
    # parallel jobs finish first: swap a few neighbours.
    order = list(p.files)
    for _ in range(n // 8):
        k = rnd.randrange(n - 1)
        order[k], order[k + 1] = order[k + 1], order[k]
    for i, f in enumerate(order, 1):
        d, s = f
        obj = "%s/CMakeFiles/%s.dir/%s.c.o" % (d, d.split("/")[-1], s)
        out.append("[%d/%d] Building C object %s\n" % (i, total, obj))
        if rnd.random() < 0.35:
            out.append("/usr/bin/cc %s -MD -MT %s -MF %s.d -o %s -c %s\n"
                       % (FLAGS, obj, obj, obj, p.path(f)))
        if rnd.random() < 0.18:
            if rnd.random() < 0.4:
                inc = rnd.choice(p.files)
                out.append("In file included from ../include/%s.h:%d,\n"
                           "                 from %s:%d:\n"
                           % (inc[1], rnd.randrange(5, 60), p.path(f),
                              rnd.randrange(1, 30)))
            msg, opt, code, col = rnd.choice(WARNINGS)
            w = rnd.choice(WORDS)
            line = rnd.randrange(10, 3000)
            text = code.format(w=w, s=s)
            out.append("%s:%d:%d: warning: %s [%s]\n"
                       "%5d | %s\n"
                       "      | %s^%s\n"
                       % (p.path(f), line, col, msg.format(w=w), opt, line,
                          text, " " * (col - 1),
                          "~" * rnd.randrange(0, 6)))
        if i % 97 == 0:
            out.append("[%d/%d] Linking C static library lib%s.a\n"
                       % (i, total, d.split("/")[-1]))
    out.append("[%d/%d] Linking C executable bin/app\n" % (total, total))


def test_section(rnd, p, out):
    tests = p.tests
    ntests = len(tests)
    failed = []
    for i, t in enumerate(tests, 1):
        dur = rnd.expovariate(1 / 0.08)
        ok = rnd.random() > 0.01
        if rnd.random() < 0.3:
            suite, case = t.split(".", 1)
            out.append("[ RUN      ] %s.%s\n" % (suite, case))
            for _ in range(rnd.randrange(0, 4)):
                # Heap addresses share their high bits within a run.
                out.append("%s:%d: note: %s=%d at 0x55d0c3%06x\n"
                           % (t.replace(".", "/"), rnd.randrange(1, 900),
                              rnd.choice(WORDS), rnd.randrange(1 << 12),
                              rnd.randrange(1 << 20) * 16))
            if not ok:
                out.append("../tests/%s.cc:%d: Failure\nExpected equality of "
                           "these values:\n  %s\n    Which is: %d\n  "
                           "expected\n    Which is: %d\n"
                           % (case, rnd.randrange(10, 500), rnd.choice(WORDS),
                              rnd.randrange(100), rnd.randrange(100)))
            out.append("[  %s ] %s.%s (%d ms)\n"
                       % ("     OK" if ok else " FAILED", suite, case,
                          int(dur * 1000)))
        name = "%3d/%d Test #%d: %s " % (i, ntests, i, t)
        out.append("%s%s %s %6.2f sec\n"
                   % (name, "." * max(3, 60 - len(name)),
                      "  Passed" if ok else "***Failed", dur))
        if not ok:
            failed.append((i, t))
    passed = ntests - len(failed)
    out.append("\n%d%% tests passed, %d tests failed out of %d\n\n"
               "Total Test time (real) = %.2f sec\n"
               % (passed * 100 // ntests, len(failed), ntests,
                  rnd.uniform(20, 200)))
    if failed:
        out.append("\nThe following tests FAILED:\n")
        for i, t in failed:
            out.append("\t%3d - %s (Failed)\n" % (i, t))


def generate(path, size, seed=13):
    """Writes size bytes of build log to path; returns (size, sha256)."""
    rnd = random.Random(seed)
    p = Project(rnd)
    h = hashlib.sha256()
    written = 0
    with open(path, "wb") as f:
        while written < size:
            out = []
            build_section(rnd, p, out, len(p.files) + 1)
            test_section(rnd, p, out)
            block = "".join(out).encode()[:size - written]
            f.write(block)
            h.update(block)
            written += len(block)
    return written, h.hexdigest()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out")
    ap.add_argument("--mib", type=float, default=200)
    ap.add_argument("--seed", type=int, default=13)
    a = ap.parse_args()
    if a.mib <= 0:
        ap.error("--mib must be positive")
    size, digest = generate(a.out, int(a.mib * 1024 * 1024), a.seed)
    print("%s: %d bytes, sha256 %s" % (a.out, size, digest))
    return 0


if __name__ == "__main__":
    sys.exit(main())
