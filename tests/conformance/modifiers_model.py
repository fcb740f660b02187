"""modifiers_model.py - command modifiers as docs/protocol.md ("Command
modifiers") states them, written from that page alone: what a slave must
report for a step, given its modifiers, its output on each stream and its
exit status.

It is the scripted slave's idea of the rules. test_conformance_modifiers.py
checks that it gives exactly what modifier_cases.json expects, and that
tf-slave (or any slave under test) gives the same in a real build.

Regexes here are Python's `re` on bytes, not POSIX extended ones: the
cases use only expressions that mean the same in both (no alternation
whose leftmost-longest and leftmost-first matches differ, no classes
Python lacks).
"""

import re

LINE_MAX = 65536
INFO_MAX = 4096
STATS_MAX = 64
EXCERPT_MAX = 120
NAME_RE = re.compile(rb"[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
NUMBER_RE = re.compile(rb"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?\Z")
REPL = "\ufffd".encode()


def lines_of(data):
    """The lines (and pieces of long lines) the rules see in one stream's
    bytes: a line ends at \\n, a \\r right before it belongs to the end,
    the bytes after the last \\n are one more line as they are; content
    over LINE_MAX bytes goes in LINE_MAX pieces, the last never empty.
    Yields (piece, last_piece_of_its_line)."""
    parts = data.split(b"\n")
    tail = parts.pop()  # after the last \n ("" when data ends with one)
    lines = [p[:-1] if p.endswith(b"\r") else p for p in parts]
    if tail:
        lines.append(tail)
    for line in lines:
        if not line:
            yield b"", True
            continue
        for at in range(0, len(line), LINE_MAX):
            piece = line[at:at + LINE_MAX]
            yield piece, at + LINE_MAX >= len(line)


def utf8_len(b, i):
    """Length of the valid UTF-8 sequence at b[i:], or 0 (RFC 3629)."""
    c = b[i]
    if c < 0x80:
        return 1
    if 0xC2 <= c <= 0xDF:
        n, cp = 2, c & 0x1F
    elif 0xE0 <= c <= 0xEF:
        n, cp = 3, c & 0x0F
    elif 0xF0 <= c <= 0xF4:
        n, cp = 4, c & 0x07
    else:
        return 0
    if len(b) - i < n:
        return 0
    for k in range(1, n):
        if b[i + k] & 0xC0 != 0x80:
            return 0
        cp = cp << 6 | (b[i + k] & 0x3F)
    if (n == 3 and cp < 0x800) or (n == 4 and cp < 0x10000) or \
            cp > 0x10FFFF or 0xD800 <= cp <= 0xDFFF:
        return 0
    return n


def sanitize(b, room):
    """b made valid UTF-8 (invalid bytes and control characters but tab
    become U+FFFD, one per byte), keeping whole characters while the
    result stays within room bytes. Returns (bytes, everything_fit)."""
    out, i = b"", 0
    while i < len(b):
        n = utf8_len(b, i)
        bad = n == 0 or (n == 1 and ((b[i] < 0x20 and b[i] != 9) or
                                     b[i] == 0x7F))
        piece = REPL if bad else b[i:i + n]
        if len(out) + len(piece) > room:
            return out, False
        out += piece
        i += n if n else 1
    return out, True


class Found:
    """What one stream's lines yield."""

    def __init__(self):
        self.info, self.info_full = b"", False
        self.stats = {}  # name -> value, insertion order = first seen
        self.fail_line = None

    def info_add(self, piece):
        if self.info_full or not piece:
            return
        sep = b"\n" if self.info else b""
        room = INFO_MAX - len(self.info) - len(sep)
        if room <= 0:
            self.info_full = True
            return
        got, fit = sanitize(piece, room)
        if got:
            self.info += sep + got
        if not fit:
            self.info_full = True

    def stat_set(self, name, value):
        if not NAME_RE.match(name):
            return
        name = name.decode()
        if name in self.stats or len(self.stats) < STATS_MAX:
            self.stats[name] = value


def number(b):
    b = b.strip(b" \t")
    if not b or len(b) > 64 or not NUMBER_RE.match(b) or \
            not re.search(rb"[0-9]", b.split(b"e")[0].split(b"E")[0]):
        return None
    v = float(b)
    return v if v not in (float("inf"), float("-inf")) else None


def marker(f, line):
    s = line.strip(b" \t")
    for key in (b"@@@TF_STAT", b"@@@TF_INFO"):
        if len(s) >= len(key) + 4 and s.startswith(key) and \
                s.endswith(b"@@@") and s[len(key):len(key) + 1] in b" \t":
            body = s[len(key):-3].strip(b" \t")
            if key == b"@@@TF_INFO":
                f.info_add(body)
            elif b"=" in body:
                name, _, val = body.partition(b"=")
                v = number(val)
                if v is not None:
                    f.stat_set(name.rstrip(b" \t"), v)


def group_or_whole(m, g):
    return m.group(g) if m.re.groups >= g and m.group(g) is not None \
        else m.group(0)


class Model:
    def __init__(self, mods):
        c = lambda r: re.compile(r.encode("latin-1")  # noqa: E731
                                 if isinstance(r, str) else r)
        self.markers = mods.get("markers", True)
        self.info = [c(r) for r in mods.get("info", [])]
        self.stats = [(s.get("name"), c(s["regex"]))
                      for s in mods.get("stats", [])]
        succ = mods.get("success", {})
        self.pass_if = c(succ["pass_if"]) if "pass_if" in succ else None
        self.fail_if = c(succ["fail_if"]) if "fail_if" in succ else None
        w = mods.get("warnings")
        if isinstance(w, str):
            w = {"regex": w}
        self.warn = c(w["regex"]) if w else None
        self.warn_max = (w or {}).get("max", 0)
        self.pass_matched = False
        self.warnings = 0

    def stream(self, data):
        f = Found()
        counted = False
        for piece, last in lines_of(data):
            if self.markers:
                marker(f, piece)
            for rx in self.info:
                m = rx.search(piece)
                if m:
                    f.info_add(group_or_whole(m, 1))
                    break
            for name, rx in self.stats:
                m = rx.search(piece)
                if not m:
                    continue
                if name:
                    v = number(group_or_whole(m, 1))
                    if v is not None:
                        f.stat_set(name.encode(), v)
                elif m.re.groups >= 2 and m.group(1) is not None and \
                        m.group(2) is not None:
                    v = number(m.group(2))
                    if v is not None:
                        f.stat_set(m.group(1), v)
            if self.pass_if is not None and self.pass_if.search(piece):
                self.pass_matched = True
            if self.fail_if is not None and f.fail_line is None and \
                    self.fail_if.search(piece):
                f.fail_line = piece
            if self.warn is not None and not counted and \
                    self.warn.search(piece):
                self.warnings += 1
                counted = True
            if last:
                counted = False
        return f


def run(mods, stdout, stderr, exit_code):
    """What the slave reports for a step that exited by itself with
    exit_code: {"result", "text", "info", "stats", "warnings"} (info None
    when empty; warnings None without a warnings rule)."""
    x = Model(mods)
    out, err = x.stream(stdout), x.stream(stderr)
    # Combined as if all of stdout's lines came first.
    for piece in err.info.split(b"\n") if err.info else []:
        out.info_add(piece)
    for k, v in err.stats.items():
        out.stat_set(k.encode(), v)
    fail_line = out.fail_line if out.fail_line is not None else err.fail_line
    base = "SUCCESS" if exit_code == 0 else "FAILURE"
    verdict, notes = base, []
    if fail_line is not None:
        verdict = "FAILURE"
        if verdict != base:
            q = sanitize(fail_line, EXCERPT_MAX)[0].decode()
            q = q.replace("\\", "\\\\").replace('"', '\\"')
            notes.append(f'fail_if matched "{q}"')
    elif x.pass_if is not None:
        verdict = "SUCCESS" if x.pass_matched else "FAILURE"
        if verdict != base:
            notes.append("pass_if " + ("matched" if x.pass_matched
                                       else "did not match"))
    if verdict == "SUCCESS" and x.warn is not None and \
            x.warnings > x.warn_max:
        verdict = "WARNINGS"
        notes.append(f"{x.warnings} warning{'' if x.warnings == 1 else 's'}"
                     + (" (over max)" if x.warn_max else ""))
    text = "; ".join([f"exit {exit_code}"] + notes)
    return {"result": verdict, "text": text,
            "info": out.info.decode() if out.info else None,
            "stats": {k: v for k, v in out.stats.items()},
            "warnings": x.warnings if x.warn is not None else None}
