"""Cached API answers (issue 13) against a real master and real slaves:
hot answers carry an ETag and `Cache-Control: no-cache`; If-None-Match
with that tag answers 304 with no body, another tag the full answer; a
build that changes a builder changes the tag, and no answer computed
before an event is served after it (checked right after each event the
API reports, over many builds and a slave going away); a finished build's
answer is kept, a running build's is not; the cache's counters show it
answering."""

import json

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
    assert r.json()["pending"] == 0
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
