"""tf-master's command line (create, checkconfig, run, force) and the JSON
API's answers to bad requests, as a user sees them: exit codes, stdout,
stderr, HTTP status codes and error bodies."""

import json
import os
import re
import socket
import sqlite3

import pytest

from tfharness import TF_MASTER, http_request, scaled


def config():
    return {"name": "it", "slaves": [{"name": "s1"}],
            "builders": [{"name": "quick", "steps": [
                {"name": "hi", "command": "echo hi"}]}]}


# --- checkconfig ---

BROKEN = """{
  "name": "bad",
  "listen": {"host": "127.0.0.1", "port": 70000},
  "heartbeat_s": "10",
  "slaves": [
    {"name": "s1", "secret": "x", "colour": "red"}
  ],
  "builders": [
    {"name": "b1", "steps": [{"name": "t", "command": "true", "tiemout": 5}]},
    {"name": "b1", "steps": [{"name": "u", "command": 42}]},
    {"name": "b2"}
  ]
}
"""


def pos(text, line, needle):
    """(line, column) of needle on a 1-based line of text."""
    return line, text.splitlines()[line - 1].index(needle) + 1


def test_checkconfig_reports_every_error_with_position_and_key(farm):
    path = farm.tmp / "master.json"
    path.write_text(BROKEN)
    r = farm.run([TF_MASTER, "checkconfig", path])
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    expected = [
        (pos(BROKEN, 3, "70000"), "listen.port"),
        (pos(BROKEN, 4, '"10"'), "heartbeat_s"),
        (pos(BROKEN, 6, '"colour"'), "slaves[0].colour"),
        (pos(BROKEN, 9, '"tiemout"'), "builders[0].steps[0].tiemout"),
        (pos(BROKEN, 10, '"b1"'), "builders[1].name"),
        (pos(BROKEN, 10, "42"), "builders[1].steps[0].command"),
        (pos(BROKEN, 11, "{"), "builders[2]"),
    ]
    missing = []
    for (line, col), key in expected:
        want = f"{path}:{line}:{col}: error: {key}: "
        if not any(x.startswith(want) for x in lines):
            missing.append(want)
    assert not missing, "missing diagnostics:\n" + "\n".join(missing) + \
        "\ngot:\n" + r.stderr
    tiemout = [x for x in lines if ".tiemout:" in x][0]
    assert '"timeout"' in tiemout, tiemout  # did you mean
    assert lines[-1] == f"{path}: {len(expected)} errors", r.stderr
    assert r.stdout == ""


def test_checkconfig_syntax_error_and_unreadable_file(farm):
    path = farm.tmp / "master.json"
    path.write_text('{"name": "x",\n  "slaves": [tru]}\n')
    r = farm.run([TF_MASTER, "checkconfig", path])
    assert r.returncode == 1
    assert re.search(re.escape(str(path)) + r":2:\d+: error: ", r.stderr), \
        r.stderr
    path.write_text('{"name": "x", "name": "y"}\n')
    r = farm.run([TF_MASTER, "checkconfig", path])
    assert r.returncode == 1
    assert re.search(r":1:\d+: error: .*duplicate", r.stderr), r.stderr
    r = farm.run([TF_MASTER, "checkconfig", farm.tmp / "nope.json"])
    assert r.returncode == 1
    assert "nope.json" in r.stderr and "cannot read" in r.stderr, r.stderr


def test_checkconfig_ok(farm):
    m = farm.master(config(), start=False)
    for target in (m.dir, m.config_path):
        r = farm.run([TF_MASTER, "checkconfig", target])
        assert r.returncode == 0, r.stderr
        assert "OK" in r.stdout and "1 slave" in r.stdout and \
            "1 builder" in r.stdout, r.stdout


def test_run_with_a_broken_config_exits_2(farm):
    m = farm.master(config(), start=False)
    text = '{\n  "builders": [\n    {"name": "b", "steps": 7}\n  ]\n}\n'
    m.config_path.write_text(text)
    r = farm.run([TF_MASTER, "run", m.dir], timeout=20)
    assert r.returncode == 2, (r.returncode, r.stderr)
    line, col = pos(text, 3, "7")
    assert f"master.json:{line}:{col}: error: builders[0].steps: " in \
        r.stderr, r.stderr


def test_run_on_a_port_in_use_exits_1_and_says_so(farm):
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    port = busy.getsockname()[1]
    try:
        m = farm.master(config(), start=False, port=port)
        r = farm.run([TF_MASTER, "run", m.dir], timeout=20)
    finally:
        busy.close()
    assert r.returncode == 1, (r.returncode, r.stderr)
    assert f"cannot listen on 127.0.0.1:{port} (is the port in use?)" in \
        r.stderr, r.stderr
    assert "serving" not in r.stderr, r.stderr


def test_create_then_run_then_force_from_the_cli(farm):
    d = farm.tmp / "fresh"
    port = farm.master(config(), start=False).port  # a free port
    r = farm.run([TF_MASTER, "create", d, "--port", port])
    assert r.returncode == 0, r.stderr
    assert (d / "master.json").exists() and (d / "secrets/local1").exists()
    assert json.loads((d / "master.json").read_text())["listen"]["port"] \
        == port
    r = farm.run([TF_MASTER, "create", d, "--port", port])
    assert r.returncode == 1 and "not empty" in r.stderr, r.stderr

    r = farm.run([TF_MASTER, "force", "demo", "-d", d])
    assert r.returncode == 1 and "cannot reach" in r.stderr, r.stderr

    from tfharness import Master
    m = Master(farm, None, name="fresh", port=port)
    m.start()
    r = farm.run([TF_MASTER, "force", "demo", "-d", d, "--reason",
                  "from the cli"])
    assert r.returncode == 0, r.stderr
    got = re.search(r"request (\d+) queued for demo: (\S+)", r.stdout)
    assert got, r.stdout
    assert got.group(2) == f"http://127.0.0.1:{port}/api/v1/requests/" \
        f"{got.group(1)}"
    assert "position in the demo queue: 1" in r.stdout, r.stdout
    req = m.request_info(int(got.group(1)))
    assert req["reason"] == "from the cli" and req["state"] == "pending"

    r = farm.run([TF_MASTER, "force", "nosuch", "-d", d])
    assert r.returncode == 1 and "404" in r.stderr, r.stderr
    r = farm.run([TF_MASTER, "force", "bad/name", "-d", d])
    assert r.returncode == 2, r.stderr


def test_usage_errors_exit_2(farm):
    for argv in (["frobnicate"], ["run", "--bogus"], [], ["--log-level",
                                                          "loud", "run"]):
        r = farm.run([TF_MASTER] + argv)
        assert r.returncode == 2, (argv, r.returncode, r.stderr)
        assert r.stderr, argv
    r = farm.run([TF_MASTER, "--version"])
    assert r.returncode == 0 and r.stdout.startswith("tf-master "), r.stdout


# --- API errors ---

@pytest.fixture
def api(farm):
    m = farm.master(config())
    return m


def assert_error(r, status, *words):
    assert r.status == status, r
    body = r.json()
    assert body["error"]["status"] == status, body
    msg = body["error"]["message"]
    assert isinstance(msg, str) and msg, body
    for w in words:
        assert w in msg, (w, msg)
    assert r.headers.get("content-type", "").startswith("application/json")
    return msg


def test_api_not_found(api):
    assert_error(api.api_get("/builders/nope"), 404, "builder")
    assert_error(api.api_get("/builders/quick/builds/5"), 404)
    assert_error(api.api_get("/builds/999"), 404, "build")
    assert_error(api.api_get("/slaves/nope"), 404, "slave")
    assert_error(api.api_get("/requests/999"), 404, "request")
    assert_error(api.api_get("/nothing"), 404, "endpoint")
    assert_error(api.get("/api/v2/master"), 404)
    assert_error(api.api_get("/builders/quick/nothing"), 404)
    assert_error(api.api_post("/builders/nope/force", {}), 404, "nope")


def test_api_builds_of_an_unknown_builder_is_404(api):
    """docs/api.md: 404 for "no such ... builder"; an empty list would
    hide a typo in a script's builder name."""
    assert_error(api.api_get("/builders/nope/builds"), 404, "builder")


def test_api_bad_ids_and_parameters(api):
    for bad in ("abc", "0", "-1", "1x", "99999999999999999999"):
        assert_error(api.api_get(f"/builds/{bad}"), 400, "build id")
    assert_error(api.api_get("/requests/x"), 400, "request id")
    assert_error(api.api_get("/builds/1/steps/x/log"), 400, "step")
    assert_error(api.api_get("/builders/bad$name"), 400, "builder")
    for q in ("limit=0", "limit=abc", "limit=501", "limit=", "before=x"):
        msg = assert_error(api.api_get(f"/builders/quick/builds?{q}"), 400)
        assert q.split("=")[0] in msg, msg
    assert api.api_get("/builders/quick/builds?limit=500").status == 200


def test_api_bad_parameters_of_every_list_endpoint(api):
    """Each paged or filtered endpoint answers a bad parameter with 400 and
    a message naming the parameter (docs/api.md)."""
    cases = [
        ("/waterfall", "limit=0"), ("/waterfall", "limit=501"),
        ("/waterfall", "before=x"), ("/waterfall", "before_id=-1"),
        ("/waterfall", "builder=bad$name"),
        ("/console", "limit=201"), ("/console", "before=soon"),
        ("/console", "before_job=x"), ("/console", "before_change=1.5"),
        ("/builders/quick/stats", "limit=0"),
        ("/builders/quick/stats", "limit=1001"),
        ("/requests", "builder=bad$name"),
        ("/changes", "limit=0"), ("/changes", "before=x"),
        ("/jobs", "limit=0"), ("/jobs", "limit=201"), ("/jobs", "before=x"),
        ("/mail", "limit=0"), ("/mail", "state=bogus"),
        ("/mail", "before=x"),
    ]
    for path, q in cases:
        r = api.api_get(f"{path}?{q}", token=True)
        msg = assert_error(r, 400)
        assert q.split("=")[0] in msg, (path, q, msg)
    assert_error(api.api_get("/patches/xyz", token=True), 400, "SHA-256")
    assert_error(api.api_get("/changes/x"), 400, "change id")
    assert_error(api.api_get("/jobs/x", token=True), 400, "job id")
    assert_error(api.api_get("/mail/x", token=True), 400)


def test_api_auth(api):
    r = api.api_post("/builders/quick/force", {"reason": "x"}, token=None)
    assert_error(r, 401, "token")
    assert r.headers.get("www-authenticate", "").startswith("Bearer")
    r = api.api_post("/builders/quick/force", {"reason": "x"},
                     token="0" * 64)
    assert_error(r, 401, "invalid")
    assert api.get_json("/master")["requests_pending"] == 0
    r = api.api_post("/builders/quick/force", {"reason": "x"})
    assert r.status == 201, r
    assert api.get_json("/master")["requests_pending"] == 1
    assert_error(api.api_post("/builds/1/cancel", token=None), 401)


def test_api_wrong_method(api):
    r = api.request("DELETE", "/api/v1/builders")
    assert_error(r, 405)
    assert r.headers.get("allow") == "GET", r.headers
    r = api.api_get("/builders/quick/force")
    assert_error(r, 405)
    assert r.headers.get("allow") == "POST", r.headers
    assert_error(api.api_post("/master"), 405)
    assert_error(api.request("PUT", "/api/v1/builds/1"), 405)


def test_api_bad_bodies(api):
    for body, word in ((b"not json", "JSON"), (b"[1]", "object"),
                       (json.dumps({"reason": 5}).encode(), "reason"),
                       (json.dumps({"colour": "red"}).encode(), "colour"),
                       (json.dumps({"properties": {"a": 1}}).encode(),
                        "properties")):
        r = api.api_post("/builders/quick/force", body,
                         headers={"Content-Type": "application/json"})
        assert_error(r, 400, word)
    assert_error(api.api_post("/builds/5/cancel"), 409)
    assert_error(api.api_post("/requests/5/cancel"), 409)


def raw_post(port, path, token, extra=""):
    """A POST with Content-Length: 0 (what Python's http.client, urllib and
    requests send for an empty POST); returns (status line, headers, body)
    read until the announced length, or what came within 5 s."""
    s = socket.create_connection(("127.0.0.1", port), timeout=scaled(5))
    try:
        s.sendall((f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                   f"Authorization: Bearer {token}\r\nContent-Length: 0\r\n"
                   f"{extra}\r\n").encode())
        data = b""
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
                head, _, body = data.partition(b"\r\n\r\n")
                m = re.search(rb"content-length: (\d+)", head, re.I)
                if m and len(body) >= int(m.group(1)):
                    break
        except socket.timeout:
            pass
    finally:
        s.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return head.split(b"\r\n")[0].decode(), head.decode(), body


def test_api_post_with_an_empty_body_acts_once(api):
    """An empty POST (Content-Length: 0) is one action with one complete
    answer: one request queued, a 201 with its body."""
    status, head, body = raw_post(api.port, "/api/v1/builders/quick/force",
                                  api.token())
    pending = api.get_json("/requests")["requests"]
    problems = []
    if status.split()[1:2] != ["201"] or b"request_id" not in body:
        problems.append(f"force answered {status!r} with body {body!r}")
    if len(pending) != 1:
        problems.append(f"force queued {len(pending)} requests")
    if pending:
        rid = pending[0]["id"]
        status, head, body = raw_post(
            api.port, f"/api/v1/requests/{rid}/cancel", api.token())
        if status.split()[1:2] != ["200"] or b"cancelled" not in body:
            problems.append(f"cancel answered {status!r} with body {body!r}")
    assert not problems, "; ".join(problems)


def test_api_body_over_the_limit_is_413(api):
    # Announce 2 MiB and send nothing: the answer must not wait for it.
    s = socket.create_connection(("127.0.0.1", api.port),
                                 timeout=scaled(10))
    try:
        s.sendall((f"POST /api/v1/builders/quick/force HTTP/1.1\r\n"
                   f"Host: 127.0.0.1\r\nAuthorization: Bearer {api.token()}"
                   "\r\nContent-Type: application/json\r\n"
                   "Content-Length: 2097152\r\n\r\n").encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    finally:
        s.close()
    assert data.startswith(b"HTTP/1.1 413"), data[:200]
    assert api.get_json("/master")["requests_pending"] == 0


def test_api_index_lists_every_documented_endpoint(api):
    """The index and docs/api.md name the same endpoints, and each one the
    index names is routed (answers something other than 404 "no such
    endpoint")."""
    idx = api.get_json("")["endpoints"]
    docs = open(os.path.join(os.path.dirname(__file__), "..", "..", "docs",
                             "api.md"), encoding="utf-8").read()
    documented = set(re.findall(r"^### `((?:GET|POST) /api/v1[^`]*)`", docs,
                                re.M))
    listed = {e for e in idx if not e.startswith("WEBSOCKET")}
    assert listed == documented, (listed ^ documented)
    assert any(e.startswith("WEBSOCKET /live") for e in idx)
    for e in sorted(listed):
        method, path = e.split(" ", 1)
        path = (path.replace("{name}", "quick").replace("{number}", "1")
                .replace("{id}", "1").replace("{index}", "0")
                .replace("{sha256}", "0" * 64))
        r = http_request(api.port, method, path,
                         body=b"{}" if method == "POST" else None)
        assert b"no such endpoint" not in r.body, (e, r.status, r.body[:200])


def test_api_success_shapes(api):
    idx = api.get_json("")
    assert "GET /api/v1/master" in idx["endpoints"]
    r = api.api_get("/master")
    assert r.headers.get("cache-control") == "no-store", r.headers
    m = r.json()
    assert m["name"] == "it" and m["store"]["schema_version"] >= 1
    builders = api.get_json("/builders")
    assert [b["name"] for b in builders] == ["quick"]
    assert builders[0]["state"] == "offline"
    assert api.get_json("/builders/quick")["steps"] == ["hi"]
    assert api.get_json("/builders/quick/builds") == {"builds": [],
                                                      "next_before": None}
    r = http_request(api.port, "GET", "/api/v1/slaves")
    assert r.status == 200 and [s["name"] for s in r.json()] == ["s1"]


def test_waterfall_and_console_pages_keep_rows_of_one_millisecond(farm):
    """Seven builds, three try jobs and four changes share one millisecond
    (a poll records its commits together); paging two at a time walks
    each of them exactly once, newest first, also when the waterfall is
    narrowed to some builders."""
    m = farm.master(config())
    m.stop()
    t = 1_700_000_000_000
    db = sqlite3.connect(m.db_path)
    with db:
        for i in range(1, 8):
            db.execute("INSERT INTO builds(id, builder, number, request_id, "
                       "state, result, created_ms) VALUES(?, 'quick', ?, ?, "
                       "'finished', 0, ?)", (i, i, i, t))
        db.execute("INSERT INTO builds(id, builder, number, request_id, "
                   "state, result, created_ms) VALUES(8, 'quick', 8, 8, "
                   "'finished', 0, ?)", (t - 5,))
        for i in range(9, 12):
            db.execute("INSERT INTO builds(id, builder, number, request_id, "
                       "state, result, created_ms) VALUES(?, 'other', ?, ?, "
                       "'finished', 0, ?)", (i, i, i, t - 2))
        for i in range(1, 4):
            db.execute("INSERT INTO try_jobs(id, user_id, author, email, "
                       "description, state, submitted_ms) VALUES(?, 1, 'A', "
                       "'a@example.org', ?, 'done', ?)", (i, f"job {i}", t))
        for i in range(1, 5):
            db.execute("INSERT INTO changes(id, repository, branch, "
                       "revision, message, created_ms) VALUES(?, '/r', "
                       "'main', ?, ?, ?)", (i, f"{i:040x}", f"change {i}", t))
    db.close()
    m.start()

    def walk(filt):
        seen, params = [], "limit=2" + filt
        for _ in range(10):
            page = m.get_json(f"/waterfall?{params}")
            seen += [b["id"] for b in page["builds"]]
            if page["next_before"] is None:
                assert page["next_before_id"] is None
                return seen
            params = (f"limit=2&before={page['next_before']}"
                      f"&before_id={page['next_before_id']}" + filt)
        raise AssertionError(f"more than 10 pages: {seen}")
    assert walk("") == [7, 6, 5, 4, 3, 2, 1, 11, 10, 9, 8], walk("")
    assert walk("&builder=quick") == [7, 6, 5, 4, 3, 2, 1, 8]
    assert walk("&builder=other") == [11, 10, 9]
    assert walk("&builder=other&builder=quick&builder=other") == \
        [7, 6, 5, 4, 3, 2, 1, 11, 10, 9, 8]

    rows, params = [], "limit=2"
    for _ in range(10):
        page = m.get_json(f"/console?{params}")
        rows += [(r["kind"], r["id"]) for r in page["rows"]]
        if page["next_before"] is None:
            break
        params = (f"limit=2&before={page['next_before']}"
                  f"&before_job={page['next_before_job']}"
                  f"&before_change={page['next_before_change']}")
    assert rows == [("job", 3), ("job", 2), ("job", 1), ("change", 4),
                    ("change", 3), ("change", 2), ("change", 1)], rows
    assert_error(m.api_get("/waterfall?before_id=x"), 400, "before_id")
    assert_error(m.api_get("/console?before_change=-1"), 400,
                 "before_change")
