#!/usr/bin/env python3
"""check_layering.py - the master's folders include each other in one
direction only (docs/internals.md, "Subsystems").

Every master header is included folder-qualified ("core/master.h"), so an
include names the folder it reaches into. This reads every .c and .h under
master/, collects the folder-to-folder edges, and fails on:
  - an edge not in ALLOWED (an include against the direction), unless it is
    listed in KNOWN (debts the redesign is paying off; each entry names
    why it is still there and goes when that is fixed);
  - a KNOWN entry that no longer occurs (so the list only shrinks);
  - a cycle between folders among the edges that remain;
  - a bare include of a master header ("master.h") from another folder;
  - SQL text in a file outside master/store/ (SQL_KNOWN lists the debts).

Prints one line per check and "N passed, N failed" last (scripts/test
counts that line like the C unit tests' own).
"""
import os
import re
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
MASTER = os.path.join(ROOT, "master")

# folder -> folders it may include. "." is master/ itself (main.c).
ALLOWED = {
    ".": {"admin", "net", "api", "core", "changes", "mail", "store",
          "config"},
    "admin": {"core", "mail", "store", "config"},
    "net": {"api", "core", "config"},
    "api": {"core", "changes", "mail", "store", "config"},
    "changes": {"core", "store", "config"},
    "mail": {"store", "config"},
    "core": {"store", "config"},
    "store": set(),
    "config": set(),
}

# Edges against the direction that are still in the code. Remove an entry
# when its include goes; the check fails while a listed edge is gone.
KNOWN = {
}

# Files outside master/store/ that still hold SQL text (debts, as KNOWN).
SQL_KNOWN = set()
SQL = re.compile(r'"[^"\n]*\b(SELECT|INSERT INTO|INSERT OR|UPDATE [a-z_]+ SET|'
                 r'DELETE FROM|CREATE TABLE|CREATE INDEX|PRAGMA|BEGIN|COMMIT)\b')

INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)


def edges():
    found = {}
    bare = []
    headers = {}
    for folder in sorted(os.listdir(MASTER)):
        path = os.path.join(MASTER, folder)
        if os.path.isdir(path):
            for name in os.listdir(path):
                if name.endswith(".h"):
                    headers[name] = folder
    for dirpath, _, names in os.walk(MASTER):
        folder = os.path.relpath(dirpath, MASTER)
        folder = folder.split(os.sep)[0]
        for name in sorted(names):
            if not name.endswith((".c", ".h")):
                continue
            rel = os.path.relpath(os.path.join(dirpath, name), MASTER)
            with open(os.path.join(dirpath, name), encoding="utf-8") as f:
                text = f.read()
            for inc in INCLUDE.findall(text):
                if "/" in inc:
                    target = inc.split("/")[0]
                    if target in ALLOWED and target != folder:
                        found.setdefault((folder, target), []).append(rel)
                elif inc in headers and headers[inc] != folder:
                    bare.append(f"{rel}: #include \"{inc}\"")
    return found, bare


def sql_files():
    """master/ files outside store/ with SQL in string literals -> count."""
    out = {}
    for dirpath, _, names in os.walk(MASTER):
        rel_dir = os.path.relpath(dirpath, MASTER)
        if rel_dir.split(os.sep)[0] == "store":
            continue
        for name in sorted(names):
            if name.endswith((".c", ".h")):
                rel = os.path.relpath(os.path.join(dirpath, name), MASTER)
                with open(os.path.join(dirpath, name), encoding="utf-8") as f:
                    n = len(SQL.findall(f.read()))
                if n:
                    out[rel] = n
    return out


def cycles(edge_set):
    graph = {}
    for a, b in edge_set:
        graph.setdefault(a, set()).add(b)
    out = []
    state = {}

    def visit(n, stack):
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                out.append(stack[stack.index(m):] + [m])
            elif m not in state:
                visit(m, stack)
        stack.pop()
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n, [])
    return out


def main():
    found, bare = edges()
    passed = failed = 0

    def check(ok, name, detail=""):
        nonlocal passed, failed
        if ok:
            passed += 1
            print(f"ok {name}")
        else:
            failed += 1
            print(f"FAIL {name}: {detail}", file=sys.stderr)
            print(f"FAIL {name}")

    against = {e: files for e, files in found.items()
               if e[1] not in ALLOWED.get(e[0], set())}
    for e, files in sorted(against.items()):
        check(e in KNOWN, f"direction {e[0]} -> {e[1]}",
              "include against the direction in " + ", ".join(files))
    for e in sorted(KNOWN):
        check(e in against, f"known debt {e[0]} -> {e[1]} still exists",
              "no longer included: remove it from KNOWN")
    loops = cycles(e for e in found if e not in KNOWN)
    check(not loops, "no cycle between folders",
          "; ".join(" -> ".join(c) for c in loops))
    sql = sql_files()
    for rel in sorted(set(sql) | set(SQL_KNOWN)):
        if rel in SQL_KNOWN:
            check(rel in sql, f"known SQL debt {rel} still exists",
                  "no SQL left: remove it from SQL_KNOWN")
        else:
            check(False, f"no SQL outside store/: {rel}",
                  f"{sql[rel]} SQL string(s); SQL lives in master/store/")
    check(not bare, "master headers included folder-qualified",
          "; ".join(bare))
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
