"""Cached API answers (issue 13) against a real master and real slaves:
hot answers carry an ETag and `Cache-Control: no-cache`; If-None-Match
with that tag answers 304 with no body, another tag the full answer; a
build that changes a builder changes the tag, and no answer computed
before an event is served after it (checked right after each event the
API reports, over many builds and a slave going away); a finished build's
answer is kept, a running build's is not; the cache's counters show it
answering."""

import http.client
import json
import threading
import time

from tfharness import steps_summary, wait_for

CACHED = ["/summary", "/builders", "/builders/quick", "/builders/quick/builds",
          "/waterfall"]


def config():
    return {"name": "cache", "heartbeat_s": 2, "lost_after_s": 6,
            "slaves": [{"name": "s1"}, {"name": "s2"}],
            "builders": [
                {"name": "quick", "slaves": ["s1"], "steps": [
                    {"name": "hi", "command": "echo hi"}]},
                {"name": "other", "slaves": ["s2"], "steps": [
                    {"name": "hi", "command": "echo other"}]},
                {"name": "slow", "slaves": ["s2"], "steps": [
                    {"name": "wait", "command": "sleep 2; echo done"}]}]}


def cache_stats(m):
    return m.get_json("/master")["cache"]


def test_etag_and_304(farm):
    m = farm.master(config())
    farm.slave(m, "s1")
    b = m.run_build("quick")
    assert b["result"] == "SUCCESS", steps_summary(b)
    for path in CACHED + [f"/builds/{b['id']}"]:
        r = m.api_get(path)
        assert r.status == 200, (path, r)
        tag = r.headers.get("etag")
        assert tag and tag.startswith('"') and tag.endswith('"'), \
            (path, r.headers)
        assert r.headers.get("cache-control") == "no-cache", r.headers
        # The same answer again, from the cache: the same bytes and tag.
        again = m.api_get(path)
        assert again.status == 200 and again.headers.get("etag") == tag
        assert again.body == r.body, path
        nm = m.api_get(path, headers={"If-None-Match": tag})
        assert nm.status == 304 and nm.body == b"", (path, nm)
        assert nm.headers.get("etag") == tag
        # A list of tags holding it, and *, match too; another does not.
        nm = m.api_get(path, headers={"If-None-Match": f'"x", {tag}'})
        assert nm.status == 304, (path, nm)
        other = m.api_get(path, headers={"If-None-Match": '"0000"'})
        assert other.status == 200 and other.body == r.body, path
    st = cache_stats(m)
    assert st["hits"] >= 6 and st["not_modified"] >= 12 and \
        st["entries"] >= 6, st
    # Answers that are not cached keep no-store and no tag.
    r = m.api_get("/slaves")
    assert r.status == 200 and "etag" not in r.headers, r.headers
    assert r.headers.get("cache-control") == "no-store"
    r = m.api_get("/builds/999")
    assert r.status == 404 and "etag" not in r.headers


def last_number(summary, builder):
    for b in summary["builders"]:
        if b["name"] == builder:
            return (b["last"] or {}).get("number")
    raise AssertionError(f"no {builder} in {summary}")


def test_changed_builder_changes_the_etag_and_nothing_stale(farm):
    m = farm.master(config())
    farm.slave(m, "s1")
    s2 = farm.slave(m, "s2")
    m.run_build("other")
    tags = set()
    for i in range(8):
        # Warm the cache with the state before the build.
        before = m.api_get("/builders/quick")
        m.api_get("/summary")
        m.api_get("/builders")
        b = m.run_build("quick")
        # The API said the build is done: every cached answer asked now
        # shows it, none is the one kept from before.
        s = m.api_get("/summary")
        assert last_number(s.json(), "quick") == b["number"], (i, s.json())
        r = m.api_get("/builders/quick")
        assert r.json()["last_complete"]["number"] == b["number"], r.json()
        assert r.headers["etag"] != before.headers["etag"]
        assert m.api_get("/builders/quick",
                         headers={"If-None-Match": before.headers["etag"]}
                         ).status == 200
        lst = m.api_get("/builders").json()
        q = [x for x in lst if x["name"] == "quick"][0]
        assert q["last_complete"]["number"] == b["number"], q
        tags.add(r.headers["etag"])
    assert len(tags) == 8

    # A running build shows at once, and its page is not kept while it
    # runs; once finished it is.
    m.api_get("/builders/slow")
    req = m.force("slow")
    bid = m.wait_build_started(req)
    r = m.api_get("/builders/slow")
    assert [c["id"] for c in r.json()["current_builds"]] == [bid], r.json()
    r = m.api_get(f"/builds/{bid}")
    assert r.json()["state"] != "finished" and "etag" not in r.headers
    m.wait_request_done(req, timeout=30)
    r = m.api_get(f"/builds/{bid}")
    assert r.json()["state"] == "finished" and r.headers.get("etag"), r
    assert m.api_get("/builders/slow").json()["current_builds"] == []

    # A slave going away shows in the summary at once.
    before = m.api_get("/summary").json()["slaves"]
    assert (before["connected"], before["total"]) == (2, 2), before
    s2.stop()
    wait_for(lambda: not m.slave_connected("s2"), 20, "s2 to be gone", farm)
    after = m.api_get("/summary").json()["slaves"]
    assert (after["connected"], after["total"]) == (1, 2), after


def test_forced_request_shows_in_the_queue_at_once(farm):
    # No slave for "other": the request stays pending, which the builder
    # page's cached answer must not hide.
    m = farm.master(config())
    r = m.api_get("/builders/other")
    assert r.status == 200 and r.json().get("pending") == 0, r
    m.force("other")
    r = m.api_get("/builders/other")
    assert r.json()["pending"] == 1, r.json()
    assert len(r.json()["pending_requests"]) == 1
    s = m.api_get("/summary").json()
    other = [b for b in s["builders"] if b["name"] == "other"][0]
    assert other["pending"] == 1 and other["state"] == "offline", other
    assert json.loads(m.api_get("/builders").body)


def test_a_config_reload_flushes_answers_holding_its_links(farm):
    """A finished build's answer is kept for good, but its links come from
    the config (url, web_root's page_url): after a reload that changes
    them the next answer holds the new links, with a new ETag, and the
    old tag no longer gets 304."""
    cfg = config()
    m = farm.master(cfg)
    farm.slave(m, "s1")
    b = m.run_build("quick")
    assert b["result"] == "SUCCESS", steps_summary(b)
    path = f"/builds/{b['id']}"
    first = m.api_get(path)
    tag = first.headers["etag"]
    assert first.json()["page_url"] is None, first.json()
    assert first.json()["url"].startswith(m.url + "/"), first.json()
    # Kept: the same tag gets 304.
    assert m.api_get(path, headers={"If-None-Match": tag}).status == 304
    hits = cache_stats(m)["hits"]
    assert m.api_get(path).headers["etag"] == tag
    assert cache_stats(m)["hits"] == hits + 1

    web = farm.tmp / "pages"
    web.mkdir()
    (web / "index.html").write_text("<html></html>\n")
    cfg["url"] = "https://ci.example.org/farm/"
    cfg["web_root"] = str(web)
    n = m.log_text().count("config reloaded")
    m.write_config(cfg)
    m.sighup()
    wait_for(lambda: m.log_text().count("config reloaded") > n, 20,
             "the config reload", farm)

    r = m.api_get(path, headers={"If-None-Match": tag})
    assert r.status == 200, r
    j = r.json()
    assert j["url"] == f"https://ci.example.org/farm/api/v1/builds/{b['id']}"
    assert j["page_url"] == f"https://ci.example.org/farm/#/builds/{b['id']}"
    assert r.headers["etag"] != tag
    # And the new answer is kept in turn.
    assert m.api_get(path, headers={
        "If-None-Match": r.headers["etag"]}).status == 304
    for p in CACHED:
        j = m.api_get(p).json()
        assert m.url not in json.dumps(j), (p, j)


def test_a_builder_whose_row_is_not_stored_yet_answers_as_new(farm):
    """The flake of test_forced_request_shows_in_the_queue_at_once: right
    after a start the builders' rows may not be committed yet, and a
    configured builder then answered 404 (no "pending"). The test hook
    fails that first write, so the rows never come: the builder still
    answers, as a builder without builds, in its page, the list and the
    summary."""
    m = farm.master(config(), env={"TF_TEST_STORE_FAIL": "builder_activate:1"})
    wait_for(lambda: "test hook: failing group" in m.log_text(), 20,
             "the hook to fail the builders' rows", farm)
    r = m.api_get("/builders/other")
    assert r.status == 200, r
    b = r.json()
    assert (b["pending"], b["running"], b["builds_total"]) == (0, 0, 0), b
    assert b["last_complete"] is None and b["state"] == "offline", b
    assert b["url"] == f"{m.url}/api/v1/builders/other", b
    assert b["pending_requests"] == [] and b["steps"] == ["hi"], b
    # Its builds list too (a 404 there was test_cli_api's flake).
    r = m.api_get("/builders/other/builds")
    assert r.status == 200, r
    assert r.json() == {"builds": [], "next_before": None}, r.json()
    lst = m.get_json("/builders")
    assert [x["name"] for x in lst] == ["other", "quick", "slow"], lst
    s = m.get_json("/summary")
    assert [x["name"] for x in s["builders"]] == ["other", "quick", "slow"]
    assert s["verdict"] == "unknown", s
    # A builder the config does not have is still a 404.
    assert m.api_get("/builders/nosuch").status == 404
    assert m.api_get("/builders/nosuch/builds").status == 404


def many_slaves_config(n=40):
    cfg = config()
    cfg["slaves"] = [{"name": f"s{i}"} for i in range(1, n + 1)]
    return cfg


def test_hot_answers_count_slaves_and_name_them_when_asked(farm):
    """With many slaves the summary and the builders list carry counts;
    names come in the summary's first 32, all of them with
    ?slaves=all, each builder's with /builders?slaves=1 and on the
    builder's own page."""
    m = farm.master(many_slaves_config(40))
    farm.slave(m, "s1")
    s2 = farm.slave(m, "s2")
    wait_for(lambda: m.slave_connected("s2"), 20, "s2", farm)

    s = m.get_json("/summary")
    sl = s["slaves"]
    assert (sl["total"], sl["connected"], sl["idle"], sl["building"],
            sl["draining"], sl["offline"]) == (40, 2, 2, 0, 0, 38), sl
    assert len(sl["list"]) == 32 and sl["list_complete"] is False, sl
    assert [x["name"] for x in sl["list"][:3]] == ["s1", "s2", "s3"]
    assert sl["list"][0]["state"] == "idle" and \
        sl["list"][2]["state"] == "offline", sl["list"][:3]
    every = m.get_json("/summary?slaves=all")["slaves"]
    assert len(every["list"]) == 40 and every["list_complete"] is True
    assert every["list"][39]["name"] == "s40"
    assert len(json.dumps(every)) > len(json.dumps(sl))
    quick = [b for b in s["builders"] if b["name"] == "quick"][0]
    assert quick["slave_counts"] == {"allowed": 1, "connected": 1,
                                     "idle": 1, "busy": 0}, quick
    assert quick["connected_slaves"] == 1

    lst = {b["name"]: b for b in m.get_json("/builders")}
    assert "slaves" not in lst["quick"], lst["quick"]
    assert lst["slow"]["slave_counts"] == {"allowed": 1, "connected": 1,
                                           "idle": 1, "busy": 0}
    named = {b["name"]: b for b in m.get_json("/builders?slaves=1")}
    assert named["quick"]["slaves"] == [{"name": "s1", "connected": True}]
    assert named["slow"]["slaves"] == [{"name": "s2", "connected": True}]
    one = m.get_json("/builders/slow")
    assert one["slaves"] == [{"name": "s2", "connected": True}], one
    assert one["slave_counts"]["connected"] == 1

    # A running build makes its slave busy in every count.
    req = m.force("slow")
    m.wait_build_started(req)
    b = [x for x in m.get_json("/builders") if x["name"] == "slow"][0]
    assert b["slave_counts"] == {"allowed": 1, "connected": 1, "idle": 0,
                                 "busy": 1}, b
    sl = m.get_json("/summary")["slaves"]
    assert (sl["idle"], sl["building"]) == (1, 1), sl
    m.wait_request_done(req, timeout=30)
    s2.stop()
    wait_for(lambda: not m.slave_connected("s2"), 20, "s2 to be gone", farm)
    sl = m.get_json("/summary")["slaves"]
    assert (sl["connected"], sl["offline"]) == (1, 39), sl

    # Every slave's record is in /slaves, a page at a time if asked.
    names = [x["name"] for x in m.get_json("/slaves")]
    assert len(names) == 40 and names == sorted(names), names
    page = m.get_json("/slaves?limit=5&offset=10")
    assert [x["name"] for x in page] == names[10:15], page
    assert "connected" in page[0] and "current_builds" in page[0], page[0]
    assert [x["name"] for x in m.get_json("/slaves?offset=38")] == \
        names[38:]
    assert m.get_json("/slaves?offset=40") == []

    # Bad values are refused, naming the parameter.
    for path, word in [("/summary?slaves=1", "slaves"),
                       ("/summary?slaves=", "slaves"),
                       ("/builders?slaves=all", "slaves"),
                       ("/slaves?limit=0", "limit"),
                       ("/slaves?limit=x", "limit"),
                       ("/slaves?offset=-1", "offset")]:
        r = m.api_get(path)
        assert r.status == 400 and word in r.error_message(), (path, r)


class Hammer:
    """Clients asking for path as fast as they can over keep-alive
    connections, as a busy wallboard or a benchmark would, recording
    every answer's tag and body."""

    def __init__(self, m, path, conns=3):
        self.m, self.path, self.stop = m, path, threading.Event()
        self.seen = {}   # etag -> body
        self.errors = []
        self.count = 0
        self.stale = 0   # answers marked X-TF-Stale
        self.threads = [threading.Thread(target=self.run, daemon=True)
                        for _ in range(conns)]

    def run(self):
        c = http.client.HTTPConnection("127.0.0.1", self.m.port, timeout=30)
        try:
            while not self.stop.is_set():
                c.request("GET", "/api/v1" + self.path)
                r = c.getresponse()
                body = r.read()
                tag = r.getheader("etag")
                self.count += 1
                self.stale += r.getheader("x-tf-stale") == "1"
                if r.status != 200 or not tag:
                    self.errors.append((r.status, body[:200]))
                elif self.seen.setdefault(tag, body) != body:
                    self.errors.append(("one tag, two bodies", tag))
        except Exception as e:  # noqa: BLE001 - reported by the test
            self.errors.append(repr(e))
        finally:
            c.close()

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(30)


def current_of(summary, builder):
    return [c["id"] for b in summary["builders"] if b["name"] == builder
            for c in b["current"]]


def test_a_hammered_answer_follows_changes_within_the_bound(farm):
    """While clients ask for the summary without pause (every answer
    could be rendered again), a build starting shows in it within a
    second of the API reporting it (docs/api.md: at most ~100 ms plus a
    render behind), the previous bytes are served meanwhile (the cache
    counts them as stale), one tag always means one body, a tag from
    before the change gets 200 with the new answer and the new tag 304."""
    m = farm.master(config())
    farm.slave(m, "s1")
    farm.slave(m, "s2")
    m.run_build("quick")
    with Hammer(m, "/summary") as h:
        wait_for(lambda: h.count > 50, 20, "the clients to start", farm)
        old = m.api_get("/summary")
        req = m.force("slow")
        bid = m.wait_build_started(req)
        seen_at = time.monotonic()
        wait_for(lambda: bid in current_of(m.get_json("/summary"), "slow"),
                 5, "the build in the summary", farm)
        lag = time.monotonic() - seen_at
        assert lag < 1.0, lag
        r = m.api_get("/summary", headers={"If-None-Match":
                                           old.headers["etag"]})
        assert r.status == 200 and bid in current_of(r.json(), "slow"), r
        tag = r.headers["etag"]
        # The same tag is 304 unless the answer moved on meanwhile (the
        # clock fields move every second): then 200 with another tag.
        nm = m.api_get("/summary", headers={"If-None-Match": tag})
        assert nm.status == 304 or (nm.status == 200 and
                                    nm.headers["etag"] != tag), nm
        m.wait_request_done(req, timeout=30)
        wait_for(lambda: current_of(m.get_json("/summary"), "slow") == [],
                 5, "the build gone from the summary", farm)
    assert not h.errors, h.errors[:5]
    st = cache_stats(m)
    assert h.count > 200 and st["hits"] > 100, (h.count, st)
    assert st["stale"] > 0, st
    # The stale ones say so (the pages fetch those again), and only they.
    assert 0 < h.stale <= st["stale"], (h.stale, st)
    time.sleep(2.1)  # no longer asked for all the time: never stale
    fresh = m.api_get("/summary")
    assert fresh.headers.get("x-tf-stale") is None, fresh.headers
