"""Who may do what through the API (docs/api.md, "Who may do what"):
one test per write endpoint (and per endpoint that needs a token), each
trying every role against a real master with real slaves.

Roles: nobody (no token), a wrong token, the admin token, and two
committers: alice, named in the force_allowed list of the builder "open",
and bob, named nowhere. A committer acts on their own jobs, requests and
builds; forcing and rebuilding are for the admin and the force_allowed
committers; a committer forcing a build sets only the properties the
builder lists in force_properties.
"""

import json

import pytest

from tfharness import BUILD_DIR, http_request, wait_for

ALICE = "alice@example.org"
BOB = "bob@example.org"
WRONG = "0" * 64


def add_user(farm, m, email, name):
    r = farm.run([BUILD_DIR / "master" / "tf-master", "user", "add", email,
                  "--name", name, "-d", m.dir])
    assert r.returncode == 0, f"user add: {r.stdout} {r.stderr}"
    return r.stdout.strip().splitlines()[-1].strip()


def sleeper(name, seconds=60, **kw):
    b = {"name": name, "steps": [{"name": "wait",
                                  "command": ["sleep", str(seconds)]}]}
    b.update(kw)
    return b


class Site:
    """A master with builders "open" (alice may force it, and set the
    property "extra"), "locked" (nobody but the admin), "quick" (runs at
    once) and "ghost" (its only slave never connects: requests stay
    pending; alice may force it)."""

    def __init__(self, farm, slave=True, clock=False):
        cfg = {
            "name": "authz",
            "slaves": [{"name": "s1", "max_builds": 8},
                       {"name": "ghostslave"}],
            "builders": [
                sleeper("open", slaves=["s1"], force_allowed=[ALICE],
                        force_properties=["extra"]),
                sleeper("locked", slaves=["s1"]),
                {"name": "quick", "slaves": ["s1"], "force_allowed": ["*"],
                 "steps": [{"name": "hi", "command": ["true"]}]},
                sleeper("ghost", slaves=["ghostslave"],
                        force_allowed=[ALICE]),
            ],
        }
        if clock:
            cfg["testing"] = {"clock": True}
        self.m = farm.master(cfg)
        self.farm = farm
        self.tokens = {
            "nobody": None,
            "wrong": WRONG,
            "admin": self.m.token(),
            "alice": add_user(farm, self.m, ALICE, "Alice"),
            "bob": add_user(farm, self.m, BOB, "Bob"),
        }
        if slave:
            farm.slave(self.m, "s1", args=["--max-builds", "8"])

    def post(self, who, path, body=None):
        return self.m.request("POST", "/api/v1" + path,
                              body={} if body is None else body,
                              token=self.tokens[who])

    def get(self, who, path):
        return self.m.request("GET", "/api/v1" + path,
                              token=self.tokens[who])

    def force(self, who, builder, **body):
        r = self.post(who, f"/builders/{builder}/force", body)
        assert r.status == 201, f"{who} forcing {builder}: {r!r}"
        return r.json()["request_id"]

    def running_build(self, who, builder="open"):
        rid = self.force(who, builder)
        b = self.m.wait_build_started(rid)
        self.m.wait_step_running(b, 0)
        return b

    def submit(self, who, builders, patch=""):
        r = self.post(who, "/jobs", {"builders": builders, "patch": patch})
        assert r.status == 201, f"{who} submitting: {r!r}"
        return r.json()


def expect(r, status, *words):
    assert r.status == status, f"expected {status}, got {r!r}"
    if words:
        msg = r.json()["error"]["message"]
        for w in words:
            assert w in msg, (w, msg)
    if status == 401:
        assert r.headers.get("www-authenticate", "").startswith("Bearer"), \
            r.headers


def test_force_needs_the_admin_or_force_allowed(farm):
    s = Site(farm, slave=False)
    expect(s.post("nobody", "/builders/open/force"), 401, "token")
    expect(s.post("wrong", "/builders/open/force"), 401, "invalid token")
    expect(s.post("bob", "/builders/open/force"), 403, "force_allowed")
    expect(s.post("alice", "/builders/locked/force"), 403, "locked")
    expect(s.post("bob", "/builders/locked/force"), 403)
    assert s.m.get_json("/requests")["requests"] == []
    rid = s.force("alice", "open")
    assert s.m.request_info(rid)["owner"] == ALICE
    s.force("admin", "locked")
    # "*" lets every committer force "quick".
    s.force("bob", "quick")
    owners = sorted(r["owner"] for r in s.m.get_json("/requests")["requests"])
    assert owners == sorted([ALICE, "admin", BOB]), owners


def test_force_properties_are_the_builders_allow_list(farm):
    s = Site(farm, slave=False)
    rid = s.force("alice", "open", properties={"extra": "x y"})
    assert s.m.request_info(rid)["properties"] == {"extra": "x y"}
    expect(s.post("alice", "/builders/open/force",
                  {"properties": {"extra": "1", "other": "2"}}), 400,
           "properties.other", "may not set", "allowed: extra")
    # A builder without force_properties: a committer sets none.
    expect(s.post("bob", "/builders/quick/force",
                  {"properties": {"extra": "1"}}), 400, "properties.extra",
           "none")
    # The admin may set any.
    rid = s.force("admin", "open", properties={"other": "z"})
    assert s.m.request_info(rid)["properties"] == {"other": "z"}
    assert len(s.m.get_json("/requests")["requests"]) == 2


def test_cancel_build_is_for_its_owner_or_the_admin(farm):
    s = Site(farm)
    alices = s.running_build("alice")
    admins = s.running_build("admin", "locked")
    job = s.submit("bob", ["open"])
    bobs = s.m.wait_build_started(job["requests"][0]["request_id"])
    s.m.wait_step_running(bobs, 0)

    expect(s.post("nobody", f"/builds/{alices}/cancel"), 401)
    expect(s.post("wrong", f"/builds/{alices}/cancel"), 401,
           "invalid token")
    expect(s.post("bob", f"/builds/{alices}/cancel"), 403, ALICE)
    expect(s.post("alice", f"/builds/{admins}/cancel"), 403, "admin")
    expect(s.post("alice", f"/builds/{bobs}/cancel"), 403, BOB)
    for b in (alices, admins, bobs):
        assert s.m.build(b)["state"] == "running"

    assert s.post("alice", f"/builds/{alices}/cancel").status == 202
    assert s.post("bob", f"/builds/{bobs}/cancel").status == 202
    assert s.post("admin", f"/builds/{admins}/cancel").status == 202
    for b in (alices, admins, bobs):
        assert s.m.wait_build_finished(b)["result"] == "CANCELLED"


def test_cancel_request_is_for_its_owner_or_the_admin(farm):
    s = Site(farm, slave=False)
    alices = s.force("alice", "ghost")
    admins = s.force("admin", "ghost")
    job = s.submit("bob", ["ghost"])
    bobs = job["requests"][0]["request_id"]

    expect(s.post("nobody", f"/requests/{alices}/cancel"), 401)
    expect(s.post("wrong", f"/requests/{alices}/cancel"), 401)
    expect(s.post("bob", f"/requests/{alices}/cancel"), 403, ALICE)
    expect(s.post("alice", f"/requests/{bobs}/cancel"), 403, BOB)
    expect(s.post("alice", f"/requests/{admins}/cancel"), 403, "admin")
    assert len(s.m.get_json("/requests")["requests"]) == 3

    assert s.post("alice", f"/requests/{alices}/cancel").status == 200
    assert s.post("bob", f"/requests/{bobs}/cancel").status == 200
    assert s.post("admin", f"/requests/{admins}/cancel").status == 200
    assert s.m.get_json("/requests")["requests"] == []
    for rid in (alices, admins, bobs):
        assert s.m.request_info(rid)["state"] == "cancelled"


def test_rebuild_is_for_the_owner_force_allowed_or_the_admin(farm):
    s = Site(farm)
    admins = s.m.wait_request_done(s.force("admin", "quick"))["id"]
    job = s.submit("bob", ["quick"])
    bobs = s.m.wait_request_done(job["requests"][0]["request_id"])["id"]
    locked = s.running_build("admin", "locked")

    expect(s.post("nobody", f"/builds/{admins}/rebuild"), 401)
    expect(s.post("wrong", f"/builds/{admins}/rebuild"), 401)
    # bob owns nothing of "locked" and is not in its force_allowed.
    expect(s.post("bob", f"/builds/{locked}/rebuild"), 403, "locked")
    expect(s.post("alice", f"/builds/{locked}/rebuild"), 403)
    # His own try build: yes; "quick" lets every committer force it.
    r = s.post("bob", f"/builds/{bobs}/rebuild")
    assert r.status == 201 and r.json()["rebuild_of"] == bobs, r
    r = s.post("alice", f"/builds/{admins}/rebuild")
    assert r.status == 201, r
    assert s.m.request_info(r.json()["request_id"])["owner"] == ALICE
    r = s.post("admin", f"/builds/{locked}/rebuild")
    assert r.status == 201, r


def test_job_submission_is_for_committers(farm):
    s = Site(farm, slave=False)
    body = {"builders": ["ghost"], "patch": ""}
    expect(s.post("nobody", "/jobs", body), 401, "committer's token")
    expect(s.post("wrong", "/jobs", body), 401, "invalid token")
    expect(s.post("admin", "/jobs", body), 401, "admin token cannot submit")
    assert s.m.get_json("/jobs")["jobs"] == []
    assert s.post("bob", "/jobs", body).status == 201
    assert s.post("alice", "/jobs", body).status == 201
    assert len(s.m.get_json("/jobs")["jobs"]) == 2


def test_job_cancel_is_for_its_author_or_the_admin(farm):
    s = Site(farm, slave=False)
    bobs = s.submit("bob", ["ghost"])["job_id"]
    alices = s.submit("alice", ["ghost"])["job_id"]
    expect(s.post("nobody", f"/jobs/{bobs}/cancel"), 401)
    expect(s.post("wrong", f"/jobs/{bobs}/cancel"), 401)
    expect(s.post("alice", f"/jobs/{bobs}/cancel"), 403, BOB)
    assert s.m.get_json(f"/jobs/{bobs}")["state"] == "pending"
    assert s.post("bob", f"/jobs/{bobs}/cancel").status == 202
    assert s.post("admin", f"/jobs/{alices}/cancel").status == 202
    for j in (bobs, alices):
        wait_for(lambda j=j: s.m.get_json(f"/jobs/{j}")["state"] ==
                 "cancelled", 20, f"job {j} cancelled", farm)


def test_clock_is_for_the_admin(farm):
    s = Site(farm, slave=False, clock=True)
    body = {"now_ms": 1_900_000_000_000}
    expect(s.post("nobody", "/master/clock", body), 401)
    expect(s.post("wrong", "/master/clock", body), 401)
    expect(s.post("bob", "/master/clock", body), 403, "admin token")
    r = s.post("admin", "/master/clock", body)
    assert r.status == 200 and r.json()["now_ms"] >= body["now_ms"], r


def test_reading_endpoints_that_need_a_token(farm):
    s = Site(farm, slave=False)
    for path in ("/whoami", "/mail"):
        expect(s.get("nobody", path), 401)
        expect(s.get("wrong", path), 401, "invalid token")
        assert s.get("bob", path).status == 200, path
        assert s.get("admin", path).status == 200, path
    assert s.get("bob", "/whoami").json()["email"] == BOB
    assert s.get("admin", "/whoami").json()["admin"] is True
    # A patch: committers and the admin (and slaves, signed) may read it.
    job = s.submit("bob", ["ghost"], patch="ZGlmZgo=")
    sha = job["patch"]["sha256"]
    expect(s.get("nobody", f"/patches/{sha}"), 401, "slave credentials")
    expect(s.get("wrong", f"/patches/{sha}"), 401)
    for who in ("alice", "admin"):
        r = s.get(who, f"/patches/{sha}")
        assert r.status == 200 and r.body == b"diff\n", (who, r)


def test_index_and_docs_give_every_endpoint_its_role(farm):
    """docs/api.md's table of who may call what names every endpoint the
    index lists, and the routes' roles as the master applies them."""
    s = Site(farm, slave=False)
    idx = [e for e in s.m.get_json("")["endpoints"]
           if not e.startswith("WEBSOCKET")]
    import os
    import re
    docs = open(os.path.join(os.path.dirname(__file__), "..", "..", "docs",
                             "api.md"), encoding="utf-8").read()
    section = docs.split("\n## Who may do what", 1)[1].split("\n## ", 1)[0]
    rows = dict(re.findall(r"^\| `((?:GET|POST) /api/v1[^`]*)` \| ([^|]+)\|",
                           section, re.M))
    assert set(rows) == set(idx), set(rows) ^ set(idx)
    # Spot checks that the table says what the master does.
    for ep, who in rows.items():
        method, path = ep.split(" ", 1)
        path = (path.replace("{name}", "quick").replace("{number}", "1")
                .replace("{id}", "999").replace("{index}", "0")
                .replace("{sha256}", "0" * 64))
        r = http_request(s.m.port, method, path,
                         body=b"{}" if method == "POST" else None)
        if who.strip().startswith("anyone"):
            assert r.status != 401, (ep, r)
        else:
            assert r.status in (401, 404), (ep, r)


def test_force_allow_lists_are_checked_in_the_config(farm):
    m = farm.master({"slaves": [], "builders": [
        {"name": "b", "force_allowed": ["alice@example.org", "not an email",
                                        "alice@example.org", 5],
         "force_properties": ["ok", "bad name!"],
         "steps": [{"name": "s", "command": "true"}]}]}, start=False)
    r = farm.run([BUILD_DIR / "master" / "tf-master", "checkconfig", m.dir])
    out = r.stdout + r.stderr
    assert r.returncode != 0, out
    for want in ("builders[0].force_allowed[1]", "not a committer's email",
                 "builders[0].force_allowed[2]", "listed twice",
                 "builders[0].force_allowed[3]", "expected a string",
                 "builders[0].force_properties[1]", "invalid name"):
        assert want in out, (want, out)
