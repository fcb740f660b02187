#!/usr/bin/env python3
"""fake_sendmail.py OUTDIR [RECIPIENT...] - a sendmail-style command for the
mail tests: stores the message read from standard input in OUTDIR/NNNN.eml
and its argv in OUTDIR/NNNN.json, then exits 0 (accepted)."""

import json
import os
import sys
from pathlib import Path

out = Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
data = sys.stdin.buffer.read()
n = len(list(out.glob("*.eml"))) + 1
(out / f"{n:04d}.json").write_text(json.dumps(sys.argv))
tmp = out / f".{n:04d}.tmp"
tmp.write_bytes(data)
os.rename(tmp, out / f"{n:04d}.eml")
sys.exit(0)
