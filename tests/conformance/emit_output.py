"""emit_output.py CASES_JSON NAME - the command of a conformance step: writes
case NAME's output chunks from the modifier case table, each to its stream
with a pause after it (so the slave reads them apart, in this order), then
exits with the case's exit status. Stdlib only: it runs on the slave."""

import base64
import json
import os
import sys
import time


def piece_bytes(p):
    """A chunk's data: a string (UTF-8), {"b64": ...} or {"repeat": S,
    "times": N}."""
    if isinstance(p, str):
        return p.encode("utf-8")
    if "b64" in p:
        return base64.b64decode(p["b64"])
    return p["repeat"].encode("utf-8") * p["times"]


def chunks_of(case):
    """[(fd, bytes)] of a case: its "output" is a list of
    [stream, piece, piece...] with stream "out" or "err"."""
    return [(1 if c[0] == "out" else 2, b"".join(piece_bytes(p)
                                                 for p in c[1:]))
            for c in case["output"]]


def main():
    table = json.load(open(sys.argv[1], encoding="utf-8"))
    case = [c for c in table["cases"] if c["name"] == sys.argv[2]][0]
    pause = table.get("pause_s", 0.05)
    for fd, data in chunks_of(case):
        while data:
            n = os.write(fd, data)
            data = data[n:]
        time.sleep(pause)
    sys.exit(case.get("exit", 0))


if __name__ == "__main__":
    main()
