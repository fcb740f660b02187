"""Result mails end to end: a real tf-master and tf-slave, try jobs submitted
through the API, and a real SMTP server on loopback (Debian's
python3-aiosmtpd, tests/integration/mail/smtpd.py) that the tests start
before or after the master. Every mail received is parsed with Python's
email package and checked the way a mail client would read it.

Builders here have no repository: their steps are shell commands whose
outcome the test chooses, so a job passes or fails on purpose in a second.
"""

import email
import email.policy
import email.utils
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tfharness import BUILD_DIR, REPO, Proc, free_port, scaled, wait_for

TF_MASTER = BUILD_DIR / "master" / "tf-master"
TF_TRY = BUILD_DIR / "try" / "tf-try"
SMTPD = Path(__file__).resolve().parent / "mail" / "smtpd.py"
SENDMAIL = Path(__file__).resolve().parent / "mail" / "fake_sendmail.py"
PYTHON = "/usr/bin/python3"

pytestmark = pytest.mark.skipif(
    subprocess.run([PYTHON, "-c", "import aiosmtpd"],
                   capture_output=True).returncode != 0,
    reason="python3-aiosmtpd is not installed (scripts/deps)")

# The failing step: a first error early, a long middle, a verdict at the end.
# Its marker line gives the step an info text (docs/config.md, command
# modifiers) that the report must show next to the excerpt.
FAIL_INFO = "frob: 1 of 20000 checks broken"
FAIL_CMD = (f"echo '@@@TF_INFO {FAIL_INFO}@@@'; "
            "echo 'compiling'; echo 'src/frob.c:42: error: THE FIRST ERROR'; "
            "i=0; while [ $i -lt 20000 ]; do "
            "echo \"noise line $i with some padding to make it long enough\"; "
            "i=$((i + 1)); done; echo 'FAIL: the final verdict'; exit 1")


# --- helpers ---

class Smtpd:
    """The SMTP server process and the messages it stored."""

    def __init__(self, farm, port=None, args=()):
        self.farm = farm
        self.port = port or free_port()
        self.out = farm.tmp / f"smtpd-{self.port}"
        self.args = list(args)
        self.proc = None

    def start(self):
        argv = [PYTHON, SMTPD, "--port", self.port, "--out", self.out] + \
            self.args
        self.proc = Proc(self.farm, f"smtpd {self.port}", argv,
                         self.farm.tmp / f"smtpd-{self.port}.log")
        self.proc.start()

        def up():
            if not self.proc.running():
                raise AssertionError("smtpd exited\n" + self.farm.dump_logs())
            return "listening" in self.proc.log_text()
        wait_for(up, 20, f"smtpd on port {self.port}", self.farm)
        return self

    def messages(self):
        """[(parsed message, raw bytes, envelope dict)] in arrival order."""
        out = []
        for p in sorted(self.out.glob("*.eml")):
            raw = p.read_bytes()
            meta = json.loads(p.with_suffix(".json").read_text())
            out.append((email.message_from_bytes(raw,
                                                 policy=email.policy.default),
                        raw, meta))
        return out

    def wait_count(self, n, timeout=30):
        wait_for(lambda: len(self.messages()) >= n, timeout,
                 f"{n} mail(s) at smtpd {self.port}", self.farm,
                 interval=0.2)
        return self.messages()


def mail_config(smtp_port, **extra):
    cfg = {"from": "ci@example.org", "from_name": "TestFarm CI",
           "smtp": {"host": "127.0.0.1", "port": smtp_port},
           "retry_initial_s": 1, "retry_max_s": 2, "connect_timeout_s": 5,
           "timeout_s": 20}
    cfg.update(extra)
    return cfg


def builders(**mail):
    bs = [{"name": "pass", "steps": [{"name": "ok",
                                      "command": "echo all good"}]},
          {"name": "fail", "steps": [{"name": "prep", "command": "echo prep"},
                                     {"name": "check", "command": FAIL_CMD}]}]
    for b in bs:
        if b["name"] in mail:
            b["mail"] = mail[b["name"]]
    return bs


def start_master(farm, mail, extra_builders=(), slaves=("s1",), **top):
    cfg = {"name": "it", "heartbeat_s": 2, "lost_after_s": 6,
           "slaves": [{"name": s, "max_builds": 2} for s in slaves],
           "builders": builders() + list(extra_builders), "mail": mail}
    cfg.update(top)
    m = farm.master(cfg)
    for s in slaves:
        farm.slave(m, s)
    return m


def add_user(farm, m, email_addr, name):
    r = farm.run([TF_MASTER, "user", "add", email_addr, "--name", name,
                  "-d", m.dir])
    assert r.returncode == 0, f"user add: {r.stdout} {r.stderr}"
    return r.stdout.strip().splitlines()[-1].strip()


def submit(m, token, builders_, **fields):
    body = {"builders": builders_, "patch": ""}
    body.update(fields)
    r = m.request("POST", "/api/v1/jobs", body=body, token=token)
    assert r.status == 201, f"submit: {r!r}"
    return r.json()["job_id"]


def wait_job(m, job_id, timeout=60):
    def done():
        j = m.get_json(f"/jobs/{job_id}")
        return j["state"] in ("finished", "cancelled") and j
    return wait_for(done, timeout, f"job {job_id} to finish", m.farm,
                    interval=0.2)


def outbox(m, **args):
    q = "&".join(f"{k}={v}" for k, v in args.items())
    return m.get_json("/mail" + (f"?{q}" if q else ""), token=True)["mail"]


def mail_of(m, kind, ref):
    key = "job_id" if kind == "job" else "build_id"
    rows = [r for r in outbox(m, limit=200) if r["kind"] == kind and
            r.get(key) == ref]
    assert len(rows) <= 1, rows
    return rows[0] if rows else None


def wait_mail_row(m, kind, ref, pred, what, timeout=30):
    def ok():
        row = mail_of(m, kind, ref)
        return row is not None and pred(row) and row
    return wait_for(ok, timeout, what, m.farm, interval=0.2)


def parts(msg):
    """(text, html) of a multipart/alternative message, decoded."""
    assert msg.get_content_type() == "multipart/alternative", \
        msg.get_content_type()
    sub = list(msg.iter_parts())
    assert [p.get_content_type() for p in sub] == ["text/plain",
                                                    "text/html"], sub
    for p in sub:
        assert p.get_content_charset() == "utf-8"
        assert p["Content-Transfer-Encoding"] in ("quoted-printable",
                                                  "base64")
    # Decoded text keeps the CRLF line ends of the wire.
    return tuple(p.get_content().replace("\r\n", "\n") for p in sub)


def excerpt_of(text, builder):
    """The excerpt lines of builder's failed step in the text part, without
    their indentation."""
    start = text.index(f"{builder}: FAILURE in step")
    lines = text[start:].split("\n")
    out = []
    for line in lines[1:]:
        if line.startswith("-- ") or (line and not line.startswith(" ")):
            break
        if line.startswith("    "):
            out.append(line[4:])
    return "\n".join(out) + "\n"


def duration_text(ms):
    """A duration as the mail writes it (tf_mail_duration)."""
    if ms < 1000:
        return f"{ms} ms"
    if ms < 60000:
        return f"{ms // 1000}.{ms % 1000 // 100} s"
    s = ms // 1000
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def assert_stays(pred, seconds, what):
    end = time.monotonic() + scaled(seconds)
    while time.monotonic() < end:
        assert pred(), what
        time.sleep(0.2)


GIT_ENV = {"GIT_AUTHOR_NAME": "Ann Example",
           "GIT_AUTHOR_EMAIL": "ann@example.org",
           "GIT_COMMITTER_NAME": "Ann Example",
           "GIT_COMMITTER_EMAIL": "ann@example.org",
           "GIT_CONFIG_NOSYSTEM": "1"}


def git(cwd, *args, author=None):
    """Runs git in cwd with a fixed identity (author: (name, email) of the
    commit's author) and no ~/.gitconfig; returns its stripped stdout."""
    env = dict(os.environ)
    env.update(GIT_ENV)
    env["HOME"] = str(cwd)
    if author:
        env["GIT_AUTHOR_NAME"], env["GIT_AUTHOR_EMAIL"] = author
    r = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True,
                       timeout=scaled(60))
    assert r.returncode == 0, \
        f"git {' '.join(args)} in {cwd}: {r.stderr.decode(errors='replace')}"
    return r.stdout.decode().strip()


def make_repos(tmp):
    """A bare upstream repository whose main branch has a file `verdict`
    saying "fail", and a clone of it to work in: (upstream, work)."""
    up, work = tmp / "upstream.git", tmp / "work"
    git(tmp, "init", "-q", "--bare", "-b", "main", str(up))
    git(tmp, "clone", "-q", str(up), str(work))
    git(work, "checkout", "-q", "-b", "main")
    (work / "verdict").write_text("fail\n")
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", "base")
    git(work, "push", "-q", "-u", "origin", "main")
    return up, work


def commit(work, path, message, author):
    (work / path).write_text(message + "\n")
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", message, author=author)
    return git(work, "rev-parse", "HEAD")


def addresses(msg, header):
    """[(display name, address)] of an address header ([] when absent)."""
    if msg[header] is None:
        return []
    return [(a.display_name, a.addr_spec) for a in msg[header].addresses]


def check_notice(msg, raw, env, build, subject, rcpts):
    """A continuous build's notice: its subject, envelope recipients (each
    exactly once), the same addresses in To (and no Cc), and the build it
    is about."""
    assert msg["Subject"] == subject, (msg["Subject"], subject)
    assert env["mail_from"] == "ci@example.org", env
    assert sorted(env["rcpt_tos"]) == sorted(rcpts), (subject, env)
    assert len(env["rcpt_tos"]) == len(set(env["rcpt_tos"])), env
    assert sorted(a for _, a in addresses(msg, "To")) == sorted(rcpts), \
        (subject, msg["To"])
    assert msg["Cc"] is None and msg["Bcc"] is None, raw[:2000]
    assert int(msg["X-TestFarm-Build"]) == build["id"], raw[:2000]
    assert msg["X-TestFarm-Result"] == build["result"], raw[:2000]
    assert msg["Auto-Submitted"] == "auto-generated"
    text, html = parts(msg)
    assert f"Builder {build['builder']}, build #{build['number']}: " \
        f"{build['result']} (" in text, text[:2000]
    for label, value in (("Build:", build["url"]),
                         ("Slave:", build["slave"]),
                         ("Duration:", duration_text(build["duration_ms"]))):
        assert f"\n  {label:<12} {value}\n" in text, (label, text[:2000])
    return text, html


def check_headers(msg, raw, m, row):
    for h in ("Date", "From", "To", "Subject", "Message-ID", "MIME-Version"):
        assert msg[h], f"no {h} header:\n{raw[:2000]!r}"
    assert msg["Message-ID"] == row["message_id"], (msg["Message-ID"], row)
    assert msg["Subject"] == row["subject"], (msg["Subject"], row)
    assert msg["From"].addresses[0].addr_spec == "ci@example.org"
    assert msg["From"].addresses[0].display_name == "TestFarm CI"
    email.utils.parsedate_to_datetime(str(msg["Date"]))
    head = raw.split(b"\r\n\r\n", 1)[0]
    assert all(b < 128 for b in head), "a raw header is not ASCII"
    assert b"\n" not in raw.replace(b"\r\n", b""), "a bare LF in the message"


# --- the tests ---

@pytest.mark.timeout(150)
def test_pass_and_fail_jobs_one_mail_each_with_excerpt_and_caps(farm):
    smtp = Smtpd(farm).start()
    m = start_master(farm, mail_config(smtp.port, excerpt_max_bytes=8192,
                                       message_max_bytes=200000))
    token = add_user(farm, m, "ann@example.org", "Ann Example")

    ok = submit(m, token, ["pass"], description="a passing change")
    wait_job(m, ok)
    bad = submit(m, token, ["pass", "fail"], description="a failing change",
                 review_url="https://review.example.org/c/42", patchset="3")
    wait_job(m, bad)
    quiet = submit(m, token, ["pass"], description="no mail please",
                   notify=False)
    wait_job(m, quiet)

    msgs = smtp.wait_count(2)
    assert_stays(lambda: len(smtp.messages()) == 2, 3,
                 "more than one mail per job")
    assert mail_of(m, "job", quiet) is None, "notify=false still queued mail"
    by_job = {int(msg["X-TestFarm-Job"]): (msg, raw, env)
              for msg, raw, env in msgs}
    assert set(by_job) == {ok, bad}, by_job.keys()

    # The passing job.
    msg, raw, env = by_job[ok]
    row = mail_of(m, "job", ok)
    assert row["state"] == "sent" and row["attempts"] == 1, row
    assert row["recipients"] == ["ann@example.org"], row
    check_headers(msg, raw, m, row)
    assert msg["Subject"] == f"[it] PASS: try job {ok}: a passing change"
    to = msg["To"].addresses
    assert [(a.display_name, a.addr_spec) for a in to] == \
        [("Ann Example", "ann@example.org")]
    assert env["rcpt_tos"] == ["ann@example.org"]
    assert env["mail_from"] == "ci@example.org"
    assert msg["In-Reply-To"] is None and msg["References"] is None
    text, html = parts(msg)
    assert f"Try job {ok}: SUCCESS" in text, text
    assert "pass " in text and "SUCCESS" in text
    assert f"{m.url}/api/v1/jobs/{ok}" in text
    assert "<table" in html and "SUCCESS" in html

    # The failing job: threading headers, per-builder table, the excerpt.
    msg, raw, env = by_job[bad]
    row = mail_of(m, "job", bad)
    check_headers(msg, raw, m, row)
    assert msg["Subject"] == f"[it] FAIL: try job {bad}: a failing change"
    thread = msg["In-Reply-To"]
    assert thread and thread.startswith("<tf-review.") and \
        thread.endswith("@example.org>"), thread
    assert msg["References"] == thread
    text, html = parts(msg)
    job = m.get_json(f"/jobs/{bad}")
    for b in job["builders"]:
        # Builder, result, duration, slave and link, in the text's table and
        # in the HTML's.
        build = m.build(b["build"]["id"])
        dur = duration_text(build["duration_ms"])
        assert build["slave"] == "s1", build
        assert re.search(rf"^  {b['name']} +{b['result']} +{re.escape(dur)} "
                         rf"+s1 +{re.escape(build['url'])}$", text,
                         re.M), (dur, text[:3000])
        assert re.search(rf">{b['name']}</td>.*>{b['result']}</td>"
                         rf"<td[^>]*>{re.escape(dur)}</td><td[^>]*>s1</td>",
                         html), (dur, html[:3000])
    fail_build = [b["build"] for b in job["builders"]
                  if b["name"] == "fail"][0]
    assert 'fail: FAILURE in step 1 "check"' in text, text[:3000]
    assert f"{fail_build['url']}/steps/1/log" in text
    # The failing step's text and info, as the API has them.
    step = m.build(fail_build["id"])["steps"][1]
    assert step["name"] == "check" and step["info"] == FAIL_INFO, step
    assert f"\n  Info:      {FAIL_INFO}\n" in text, text[:3000]
    assert f"Info: {FAIL_INFO}<br>" in html, html[:3000]
    assert step["text"] == "exit 1", step
    assert "\n  Step text: exit 1\n" in text, text[:3000]
    assert "Step text: exit 1<br>" in html, html[:3000]
    ex = excerpt_of(text, "fail")
    assert "src/frob.c:42: error: THE FIRST ERROR" in ex, ex
    assert "FAIL: the final verdict" in ex, ex
    assert "noise line 19999 " in ex, ex[-500:]
    assert ex.index("THE FIRST ERROR") < ex.index("the final verdict")
    assert len(ex.encode()) <= 8192, len(ex.encode())
    assert len(raw) <= 200000, len(raw)
    assert "THE FIRST ERROR" in html and "<pre" in html
    assert "@@@TF_INFO" not in ex, ex
    assert "noise line 500 " not in text, "the whole log was mailed"

    # The stored message is the one that was sent.
    r = m.api_get(f"/mail/{row['id']}/message", token=True)
    assert r.status == 200 and r.headers["content-type"].startswith(
        "message/rfc822"), r
    assert r.body == raw

    # Reading the outbox needs a token (it shows addresses).
    assert "GET /api/v1/mail/{id}/message" in m.get_json("")["endpoints"]
    assert m.api_get("/mail").status == 401
    assert m.api_get(f"/mail/{row['id']}").status == 401
    assert m.api_get(f"/mail/{row['id']}", token=token).status == 200

    # The preview prints the same mail (another Date and Message-ID).
    r = farm.run([TF_MASTER, "mail", "preview", f"job:{bad}", "-d", m.dir])
    assert r.returncode == 0, r.stderr
    pv = email.message_from_string(r.stdout, policy=email.policy.default)
    assert pv["Subject"] == msg["Subject"]
    assert pv["To"] == msg["To"]
    assert excerpt_of(parts(pv)[0], "fail") == ex
    assert len(smtp.messages()) == 2, "the preview sent mail"
    r = farm.run([TF_MASTER, "mail", "preview", f"build:{fail_build['id']}",
                  "-d", m.dir])
    assert r.returncode == 0, r.stderr
    pv = email.message_from_string(r.stdout, policy=email.policy.default)
    assert pv["Subject"] == "[it] FAIL: fail build #1 (failed)", pv["Subject"]
    assert "belongs to a try job" in r.stderr
    for bad_arg in ("job", "job:x", "nope:1", "job:0"):
        r = farm.run([TF_MASTER, "mail", "preview", bad_arg, "-d", m.dir])
        assert r.returncode == 2, (bad_arg, r.stdout, r.stderr)
    r = farm.run([TF_MASTER, "mail", "preview", "job:999", "-d", m.dir])
    assert r.returncode == 1 and "no try job 999" in r.stderr, r.stderr
    m.stop()  # the sender stops cleanly (the sanitizer pass checks leaks)


@pytest.mark.timeout(120)
def test_smtp_down_when_the_job_ends_then_up_mail_arrives_once(farm):
    smtp = Smtpd(farm)  # not started yet
    m = start_master(farm, mail_config(smtp.port))
    token = add_user(farm, m, "bob@example.org", "Bob")
    job = submit(m, token, ["fail"], description="while smtp is down")
    wait_job(m, job)
    row = wait_mail_row(m, "job", job, lambda r: r["attempts"] >= 2,
                        "two failed attempts")
    assert row["state"] == "pending", row
    assert f"cannot connect to SMTP server 127.0.0.1:{smtp.port}" in \
        row["last_error"], row
    assert row["message_id"] and row["next_attempt_ms"], row
    assert f"cannot connect to SMTP server 127.0.0.1:{smtp.port}" in \
        m.log_text()

    smtp.start()
    msgs = smtp.wait_count(1)
    assert_stays(lambda: len(smtp.messages()) == 1, 4, "mail sent twice")
    msg = msgs[0][0]
    assert msg["Message-ID"] == row["message_id"]
    row = wait_mail_row(m, "job", job, lambda r: r["state"] == "sent",
                        "the row to be sent")
    assert row["attempts"] >= 3 and row["last_error"] is None, row


@pytest.mark.timeout(150)
def test_master_killed_with_mail_pending_sends_it_once_after_restart(farm):
    smtp = Smtpd(farm)
    m = start_master(farm, mail_config(smtp.port))
    token = add_user(farm, m, "cy@example.org", "Cy")
    job = submit(m, token, ["pass"], description="survives kill -9")
    wait_job(m, job)
    row = wait_mail_row(m, "job", job,
                        lambda r: r["attempts"] >= 1 and r["message_id"],
                        "a failed attempt")
    m.kill9()
    smtp.start()
    m.start()
    msgs = smtp.wait_count(1, timeout=40)
    assert_stays(lambda: len(smtp.messages()) == 1, 4, "mail sent twice")
    assert msgs[0][0]["Message-ID"] == row["message_id"], \
        "the mail was rendered again after the restart"
    row = wait_mail_row(m, "job", job, lambda r: r["state"] == "sent",
                        "the row to be sent")
    # A second restart sends nothing more.
    m.stop()
    m.start()
    assert_stays(lambda: len(smtp.messages()) == 1, 3, "sent again")


@pytest.mark.timeout(120)
def test_non_ascii_name_and_subject_encode_and_decode(farm):
    smtp = Smtpd(farm).start()
    m = start_master(farm, mail_config(smtp.port,
                                       from_name="Ferme de tests — CI"))
    name = "Zoë Ünïcödé 山田"
    desc = "Fix naïve café — 日本語のテキスト ✓ and a long tail to fold"
    token = add_user(farm, m, "zoe@example.org", name)
    job = submit(m, token, ["pass"], description=desc)
    wait_job(m, job)
    msg, raw, _ = smtp.wait_count(1)[0]
    head = raw.split(b"\r\n\r\n", 1)[0]
    assert all(b < 128 for b in head), head
    assert b"=?UTF-8?B?" in head
    assert all(len(line) <= 998 for line in head.split(b"\r\n"))
    assert msg["Subject"] == f"[it] PASS: try job {job}: {desc}"
    to = msg["To"].addresses[0]
    assert (to.display_name, to.addr_spec) == (name, "zoe@example.org")
    frm = msg["From"].addresses[0]
    assert frm.display_name == "Ferme de tests — CI"
    text, html = parts(msg)
    assert desc in text and name in text
    assert desc in html


@pytest.mark.timeout(120)
@pytest.mark.parametrize("security", ["starttls", "tls"])
def test_tls_with_a_self_signed_certificate_and_auth(farm, security):
    cert, key = farm.tmp / "cert.pem", farm.tmp / "key.pem"
    r = subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "2",
         "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        capture_output=True, text=True, timeout=scaled(60))
    assert r.returncode == 0, r.stderr
    tls = (["--starttls", str(cert), str(key), "--require-starttls"]
           if security == "starttls" else
           # aiosmtpd 1.4 counts only STARTTLS as TLS for AUTH.
           ["--tls", str(cert), str(key), "--auth-plain"])
    smtp = Smtpd(farm, args=tls + ["--auth", "ci:s3cret",
                                   "--auth-required"]).start()
    pw = farm.tmp / "smtp-password"
    pw.write_text("s3cret\n")
    pw.chmod(0o600)
    m = start_master(farm, mail_config(
        smtp.port, smtp={"host": "127.0.0.1", "port": smtp.port,
                         "security": security, "ca_file": str(cert),
                         "username": "ci", "password_file": str(pw)}))
    token = add_user(farm, m, "dee@example.org", "Dee")
    job = submit(m, token, ["pass"], description="over TLS")
    wait_job(m, job)
    msg, _, env = smtp.wait_count(1)[0]
    assert env["tls"] is True and env["login"] == "ci", env
    assert msg["Subject"] == f"[it] PASS: try job {job}: over TLS"
    assert "s3cret" not in m.log_text()
    assert ("STARTTLS" if security == "starttls" else "implicit TLS") + \
        ", AUTH as ci" in m.log_text()
    m.stop()


@pytest.mark.timeout(120)
def test_auth_failure_is_reported_in_the_api_and_the_log(farm):
    smtp = Smtpd(farm, args=["--auth", "alice:right", "--auth-required",
                             "--auth-plain"]).start()
    pw = farm.tmp / "pw"
    pw.write_text("wrong\n")
    m = start_master(farm, mail_config(
        smtp.port, retry_horizon_s=4,
        smtp={"host": "127.0.0.1", "port": smtp.port, "username": "alice",
              "password_file": str(pw)}))
    token = add_user(farm, m, "eve@example.org", "Eve")
    job = submit(m, token, ["pass"], description="bad password")
    wait_job(m, job)
    want = (f"SMTP server 127.0.0.1:{smtp.port} refused authentication for "
            "user alice: 535")
    row = wait_mail_row(m, "job", job, lambda r: r["attempts"] >= 1,
                        "an attempt")
    assert want in row["last_error"], row
    row = wait_mail_row(m, "job", job, lambda r: r["state"] == "failed",
                        "the mail to fail for good", timeout=30)
    assert want in row["last_error"] and row["next_attempt_ms"] is None, row
    assert m.get_json("/mail?state=failed", token=True)["mail"][0]["id"] == \
        row["id"]
    assert m.get_json("/mail?state=pending", token=True)["mail"] == []
    log = m.log_text()
    assert want in log, log[-3000:]
    assert "failed for good after" in log
    assert "wrong" not in log.replace("wrong token", "")
    assert smtp.messages() == []
    assert m.api_get("/mail?state=nope", token=True).status == 400


@pytest.mark.timeout(120)
def test_fixing_the_password_and_reloading_sends_the_pending_mail(farm):
    smtp = Smtpd(farm, args=["--auth", "alice:right", "--auth-required",
                             "--auth-plain"]).start()
    pw = farm.tmp / "pw"
    pw.write_text("wrong\n")
    m = start_master(farm, mail_config(
        smtp.port, smtp={"host": "127.0.0.1", "port": smtp.port,
                         "username": "alice", "password_file": str(pw)}))
    token = add_user(farm, m, "gil@example.org", "Gil")
    job = submit(m, token, ["pass"], description="fixed by a reload")
    wait_job(m, job)
    wait_mail_row(m, "job", job, lambda r: r["attempts"] >= 1 and
                  "refused authentication" in (r["last_error"] or ""),
                  "a refused attempt")
    pw.write_text("right\n")
    m.sighup()
    smtp.wait_count(1)
    row = wait_mail_row(m, "job", job, lambda r: r["state"] == "sent",
                        "sent")
    assert row["attempts"] >= 2 and row["last_error"] is None, row


@pytest.mark.timeout(180)
def test_continuous_notifier_modes_problem_and_change(farm):
    smtp = Smtpd(farm).start()
    verdict = farm.tmp / "verdict"
    step = [{"name": "check",
             "command": f"v=$(cat {verdict}); echo \"verdict: $v\"; "
                        "test \"$v\" = pass || { echo 'error: it broke'; "
                        "exit 1; }"}]
    extra = [{"name": "c-problem", "steps": step,
              "mail": {"mode": "problem",
                       "extra_recipients": ["ops@example.org"]}},
             {"name": "c-change", "steps": step,
              "mail": {"mode": "change",
                       "extra_recipients": ["dev@example.org",
                                            "ops@example.org"],
                       "error_patterns": ["it broke"]}},
             {"name": "c-none", "steps": step}]
    m = start_master(farm, mail_config(smtp.port), extra_builders=extra)
    sequence = ["pass", "fail", "fail", "pass", "fail"]
    builds = {"c-problem": [], "c-change": [], "c-none": []}
    for v in sequence:
        verdict.write_text(v + "\n")
        reqs = {b: m.force(b) for b in builds}
        for b, req in reqs.items():
            build = m.wait_request_done(req)
            assert build["result"] == ("SUCCESS" if v == "pass"
                                       else "FAILURE"), build
            builds[b].append(build)
    # Decided in the build's own transaction: the rows exist by now.
    rows = [r for r in outbox(m, limit=200) if r["kind"] == "build"]
    noticed = {(b, n) for b, lst in builds.items()
               for n, build in enumerate(lst, 1)
               if any(r["build_id"] == build["id"] for r in rows)}
    assert noticed == {("c-problem", 2), ("c-problem", 5), ("c-change", 2),
                       ("c-change", 4), ("c-change", 5)}, noticed
    msgs = smtp.wait_count(5)
    assert_stays(lambda: len(smtp.messages()) == 5, 2, "extra notices")
    subjects = sorted(msg["Subject"] for msg, _, _ in msgs)
    assert subjects == sorted([
        "[it] FAIL: c-problem build #2 (broken)",
        "[it] FAIL: c-problem build #5 (broken)",
        "[it] FAIL: c-change build #2 (broken)",
        "[it] PASS: c-change build #4 (fixed)",
        "[it] FAIL: c-change build #5 (broken)"]), subjects
    for msg, raw, env in msgs:
        if "c-change" in msg["Subject"]:
            assert sorted(env["rcpt_tos"]) == ["dev@example.org",
                                               "ops@example.org"], env
        else:
            assert env["rcpt_tos"] == ["ops@example.org"], env
        text, _ = parts(msg)
        assert msg["References"].startswith("<tf-builder."), msg["References"]
        if "FAIL" in msg["Subject"]:
            ex = excerpt_of(text, msg["Subject"].split()[2])
            assert "error: it broke" in ex, text
    # The preview of a notice works for a build that got none, too.
    r = farm.run([TF_MASTER, "mail", "preview",
                  f"build:{builds['c-problem'][2]['id']}", "-d", m.dir])
    assert r.returncode == 0, r.stderr
    pv = email.message_from_string(r.stdout, policy=email.policy.default)
    assert pv["Subject"] == "[it] FAIL: c-problem build #3 (still failing)"


# A leak report in the middle of a long log, as LeakSanitizer prints it,
# and a ctest failure line in ctest's own case ("***Failed").
LSAN_CMD = (
    "i=0; while [ $i -lt 3000 ]; do echo \"step output $i\"; "
    "i=$((i + 1)); done; "
    "echo '=================================================================';"
    "echo '==4242==ERROR: LeakSanitizer: detected memory leaks'; echo; "
    "echo 'Direct leak of 16 byte(s) in 1 object(s) allocated from:'; "
    "echo '    #0 0x7f00 in malloc (/lib/libasan.so.8+0xd9)'; "
    "echo '    #1 0x5500 in json_pack_leaky src/pack.c:123'; "
    "echo '    #2 0x5501 in test_pack_main test/test_pack.c:89'; "
    "echo '    #3 0x7f01 in __libc_start_main'; echo; "
    "echo 'SUMMARY: AddressSanitizer: 16 byte(s) leaked in 1 allocation(s).';"
    "i=0; while [ $i -lt 3000 ]; do echo \"more output $i\"; "
    "i=$((i + 1)); done; "
    "echo '14/215 Test #14: test_pack ........***Failed    0.02 sec'; "
    "i=0; while [ $i -lt 100 ]; do echo \"tail $i\"; i=$((i + 1)); done; "
    "exit 1")


@pytest.mark.timeout(120)
def test_excerpt_keeps_a_sanitizer_stack_and_ctest_failures(farm):
    """The default error patterns match without regard to case (ctest's
    "***Failed") and each match keeps the lines after it (context_after,
    default 25), so a LeakSanitizer report in the middle of a log reaches
    the mail with its whole stack (admins.md, "Builders: error patterns")."""
    smtp = Smtpd(farm).start()
    extra = [{"name": "leaky", "steps": [{"name": "test",
                                          "command": LSAN_CMD}],
              "mail": {"mode": "failing",
                       "extra_recipients": ["ops@example.org"]}}]
    m = start_master(farm, mail_config(smtp.port), extra_builders=extra)
    build = m.wait_request_done(m.force("leaky"))
    assert build["result"] == "FAILURE", build
    (msg, _, _), = smtp.wait_count(1)
    ex = excerpt_of(parts(msg)[0], "leaky")
    for want in ["ERROR: LeakSanitizer: detected memory leaks",
                 "Direct leak of 16 byte(s)",
                 "#1 0x5500 in json_pack_leaky src/pack.c:123",
                 "#2 0x5501 in test_pack_main test/test_pack.c:89",
                 "SUMMARY: AddressSanitizer: 16 byte(s) leaked",
                 "Test #14: test_pack ........***Failed"]:
        assert want in ex, f"{want!r} not in the excerpt:\n{ex}"
    # The lines around are not mailed: context is after a match, bounded.
    assert "step output 2990" not in ex and "more output 100 " not in ex, ex
    assert ex.index("LeakSanitizer") < ex.index("***Failed"), ex


@pytest.mark.timeout(150)
def test_notifier_modes_failing_and_all(farm):
    """Forced builds are continuous builds: "failing" mails each failed
    one and nothing for a pass, "all" mails every build; each notice goes
    to the builder's extra recipients only (a forced build has no
    blamelist)."""
    smtp = Smtpd(farm).start()
    verdict = farm.tmp / "verdict"
    step = [{"name": "check",
             "command": f"v=$(cat {verdict}); echo \"verdict: $v\"; "
                        "test \"$v\" = pass || { echo 'error: it broke'; "
                        "exit 1; }"}]
    rcpts = {"n-failing": ["watch@example.org"],
             "n-all": ["all-a@example.org", "all-b@example.org"]}
    extra = [{"name": "n-failing", "steps": step,
              "mail": {"mode": "failing",
                       "extra_recipients": rcpts["n-failing"]}},
             {"name": "n-all", "steps": step,
              "mail": {"mode": "all", "extra_recipients": rcpts["n-all"]}}]
    m = start_master(farm, mail_config(smtp.port), extra_builders=extra)
    builds = {b: [] for b in rcpts}
    for v in ["pass", "fail", "fail", "pass"]:
        verdict.write_text(v + "\n")
        reqs = {b: m.force(b) for b in builds}
        for b, req in reqs.items():
            build = m.wait_request_done(req)
            assert build["result"] == ("SUCCESS" if v == "pass"
                                       else "FAILURE"), build
            builds[b].append(m.build(build["id"]))
    change = ["passed", "broken", "still failing", "fixed"]
    want = {}  # build id -> (builder, build, subject)
    for b, lst in builds.items():
        for n, build in enumerate(lst, 1):
            if b == "n-failing" and build["result"] != "FAILURE":
                continue
            verdict_word = "PASS" if build["result"] == "SUCCESS" else "FAIL"
            want[build["id"]] = (b, build, f"[it] {verdict_word}: {b} build "
                                 f"#{n} ({change[n - 1]})")
    assert len(want) == 6, want
    # The rows were queued in the builds' own transactions: none for the
    # passing builds of n-failing.
    rows = [r for r in outbox(m, limit=200) if r["kind"] == "build"]
    assert sorted(r["build_id"] for r in rows) == sorted(want), rows
    msgs = smtp.wait_count(6)
    assert_stays(lambda: len(smtp.messages()) == 6, 2, "extra notices")
    got, threads = {}, {}
    for msg, raw, env in msgs:
        bid = int(msg["X-TestFarm-Build"])
        assert bid not in got, f"two notices for build {bid}"
        got[bid] = msg
        b, build, subject = want[bid]
        text, _ = check_notice(msg, raw, env, build, subject, rcpts[b])
        if build["result"] == "FAILURE":
            assert "error: it broke" in excerpt_of(text, b), text
        else:
            assert "FAILURE in step" not in text, text
        threads.setdefault(b, set()).add(msg["References"])
    assert set(got) == set(want)
    # One thread per builder: a builder's notices share their References.
    assert all(len(t) == 1 for t in threads.values()), threads
    assert threads["n-failing"] != threads["n-all"], threads
    assert all(t.startswith("<tf-builder.") for ts in threads.values()
               for t in ts), threads
    row_rcpts = {r["build_id"]: sorted(r["recipients"]) for r in
                 outbox(m, limit=200) if r["kind"] == "build"}
    assert row_rcpts == {bid: sorted(rcpts[b]) for bid, (b, _, _) in
                         want.items()}, row_rcpts


@pytest.mark.timeout(150)
def test_blamelist_authors_receive_the_mail(farm):
    """Three commits by two authors, pushed at once, make one build from
    the change scheduler; its failure notice goes to both authors and the
    builder's extra address, each once, with the authors' names."""
    up, work = make_repos(farm.tmp)
    smtp = Smtpd(farm).start()
    blame = {"name": "blame", "repository": str(up), "branch": "main",
             "steps": [{"name": "check",
                        "command": "git rev-parse HEAD; "
                                   "echo 'error: broken by the change'; "
                                   "exit 1"}],
             "mail": {"mode": "failing",
                      "extra_recipients": ["ops@example.org"]}}
    m = start_master(farm, mail_config(smtp.port), extra_builders=[blame],
                     poll_interval_s=1,
                     schedulers=[{"name": "on-main", "type": "change",
                                  "builders": ["blame"],
                                  "tree_stable_s": 0}])

    def polled(rev):
        ps = [p for p in m.get_json("/pollers")["pollers"]
              if p["repository"] == str(up)]
        return ps and ps[0]["state"] == "ok" and not ps[0]["polling"] and \
            ps[0]["last_revision"] == rev
    base = git(work, "rev-parse", "HEAD")
    wait_for(lambda: polled(base), 30, "the first poll", farm)

    bob = ("Bob Coder", "bob@example.org")
    cy = ("Cy Writer", "cy@example.org")
    revs = [commit(work, "one.txt", "one", bob),
            commit(work, "two.txt", "two", cy),
            commit(work, "three.txt", "three", bob)]
    git(work, "push", "-q", "origin", "main")

    def finished():
        bs = m.get_json("/builders/blame/builds")["builds"]
        return len(bs) == 1 and bs[0]["state"] == "finished" and bs[0]
    build = m.build(wait_for(finished, 40, "the build of the changes", farm,
                             interval=0.2)["id"])
    assert build["result"] == "FAILURE", build
    assert [c["revision"] for c in build["changes"]] == revs, \
        build["changes"]

    [(msg, raw, env)] = smtp.wait_count(1)
    text, html = check_notice(
        msg, raw, env, build, "[it] FAIL: blame build #1 (failed)",
        ["ops@example.org", "bob@example.org", "cy@example.org"])
    # The extra address first, then the authors in the order of their
    # first change, named as in the commits.
    assert addresses(msg, "To") == [("", "ops@example.org"),
                                    bob, cy], msg["To"]
    assert "\nChanges (3):\n" in text, text[:3000]
    for rev, who, what in zip(revs, (bob, cy, bob), ("one", "two", "three")):
        assert f"  {rev[:12]}  {who[0]} <{who[1]}>  {what}\n" in text, \
            text[:3000]
    assert "error: broken by the change" in excerpt_of(text, "blame")
    row = mail_of(m, "build", build["id"])
    assert row["recipients"] == ["ops@example.org", "bob@example.org",
                                 "cy@example.org"], row
    assert_stays(lambda: len(smtp.messages()) == 1, 2, "a second notice")


def tf_try(farm, m, cwd, *args, token):
    """tf-try in cwd with a private HOME and the token in $TF_TRY_TOKEN;
    waits for the job (--wait) so its exit status is the job's."""
    env = dict(os.environ)
    env.update(GIT_ENV)
    home = farm.tmp / "home"
    home.mkdir(exist_ok=True)
    env["HOME"] = str(home)
    env.pop("XDG_CONFIG_HOME", None)
    env["TF_TRY_TOKEN"] = token
    r = farm.run([TF_TRY, "--url", m.url, "--wait", "--poll-ms", "200",
                  *args], cwd=cwd, env=env, timeout=scaled(90))
    found = re.search(r"^job (\d+): http", r.stdout, re.M)
    assert found, f"exit {r.returncode}\n{r.stdout}\n{r.stderr}"
    return r, int(found.group(1))


@pytest.mark.timeout(150)
@pytest.mark.skipif(not os.access(TF_TRY, os.X_OK),
                    reason=f"{TF_TRY} is not built")
def test_tf_try_email_and_no_email(farm):
    """`tf-try --email ADDR` sends the report to ADDR, not to the account's
    address; `tf-try --no-email` sends none."""
    up, work = make_repos(farm.tmp)
    smtp = Smtpd(farm).start()
    t = {"name": "t", "repository": str(up), "branch": "main",
         "steps": [{"name": "check",
                    "command": "v=$(cat verdict); echo \"verdict: $v\"; "
                               "test \"$v\" = pass"}]}
    m = start_master(farm, mail_config(smtp.port), extra_builders=[t])
    token = add_user(farm, m, "ann@example.org", "Ann Example")
    (work / "verdict").write_text("pass\n")

    r, job = tf_try(farm, m, work, "-b", "t", "-m", "mail elsewhere",
                    "--email", "other@example.org", token=token)
    assert r.returncode == 0, f"{r.stdout}\n{r.stderr}"
    [(msg, raw, env)] = smtp.wait_count(1)
    assert env["rcpt_tos"] == ["other@example.org"], env
    assert addresses(msg, "To") == [("", "other@example.org")], msg["To"]
    assert msg["Cc"] is None
    assert msg["Subject"] == f"[it] PASS: try job {job}: mail elsewhere"
    assert int(msg["X-TestFarm-Job"]) == job
    text, _ = parts(msg)
    # The report still names its author; only the address changed.
    assert "Ann Example <ann@example.org>" in text, text[:2000]
    row = wait_mail_row(m, "job", job, lambda r: r["state"] == "sent",
                        "the report to be sent")
    assert row["recipients"] == ["other@example.org"], row
    assert m.get_json(f"/jobs/{job}")["email"] == "ann@example.org"

    r, quiet = tf_try(farm, m, work, "-b", "t", "-m", "no mail please",
                      "--no-email", token=token)
    assert r.returncode == 0, f"{r.stdout}\n{r.stderr}"
    wait_job(m, quiet)
    # The job's end and its mail row (if any) commit together: once the job
    # is finished and nothing is pending, there will be no mail.
    wait_for(lambda: all(x["state"] != "pending" for x in outbox(m)), 20,
             "the outbox to be idle", farm)
    assert mail_of(m, "job", quiet) is None, outbox(m)
    assert_stays(lambda: len(smtp.messages()) == 1, 2,
                 "a mail for the --no-email job")
    assert [x["job_id"] for x in outbox(m) if x["kind"] == "job"] == [job]


@pytest.mark.timeout(120)
def test_sendmail_command_gets_the_message_on_stdin(farm):
    out = farm.tmp / "sendmail-out"
    mail = {"from": "ci@example.org",
            "sendmail": [PYTHON, str(SENDMAIL), str(out)],
            "retry_initial_s": 1, "retry_max_s": 2}
    m = start_master(farm, mail)
    token = add_user(farm, m, "fay@example.org", "Fay")
    job = submit(m, token, ["fail"], description="via sendmail")
    wait_job(m, job)
    wait_for(lambda: len(list(out.glob("*.eml"))) == 1, 30,
             "the sendmail command to run", farm)
    eml = sorted(out.glob("*.eml"))[0]
    argv = json.loads(eml.with_suffix(".json").read_text())
    assert argv[-1] == "fay@example.org", argv
    msg = email.message_from_bytes(eml.read_bytes(),
                                   policy=email.policy.default)
    assert msg["Subject"] == f"[it] FAIL: try job {job}: via sendmail"
    row = wait_mail_row(m, "job", job, lambda r: r["state"] == "sent",
                        "sent")
    assert row["attempts"] == 1


@pytest.mark.timeout(60)
def test_bad_mail_config_is_refused_with_every_error(farm):
    cfg = {"name": "it", "slaves": [], "builders": builders(
        fail={"mode": "sometimes", "extra_recipients": ["not an address"]}),
        "mail": {"smtp": {"security": "ssl", "username": "u"},
                 "sendmail": ["/usr/sbin/sendmail"], "retry_initial_s": 10,
                 "retry_max_s": 5, "bogus": 1}}
    m = farm.master(cfg, start=False)
    r = farm.run([TF_MASTER, "checkconfig", m.config_path])
    assert r.returncode == 1, r
    err = r.stdout + r.stderr
    for want in ('missing required key "from"', 'unknown key "bogus"',
                 'unknown security "ssl"', '"username" needs '
                 '"password_file"', 'give either "smtp" or "sendmail"',
                 "must be at least retry_initial_s (10)",
                 'unknown mode "sometimes"',
                 '"not an address" is not a plain email address'):
        assert want in err, f"{want!r} not in:\n{err}"


@pytest.mark.valgrind
@pytest.mark.timeout(300)
def test_mail_under_valgrind_leaks_nothing(farm):
    """The sender thread, libcurl and the outbox under valgrind: one report
    rendered and sent, then a clean SIGTERM (scripts/test runs the tests
    marked valgrind in its valgrind stage, on a build without sanitizers)."""
    opts = BUILD_DIR / "meson-info" / "intro-buildoptions.json"
    if opts.exists():
        san = next((o["value"] for o in json.loads(opts.read_text())
                    if o["name"] == "b_sanitize"), "none")
        if san != "none":
            pytest.skip(f"{BUILD_DIR} is built with -Db_sanitize={san}")
    vg = shutil.which("valgrind")
    assert vg, "valgrind is not installed (scripts/deps installs it)"
    log = farm.tmp / "valgrind-master.%p.log"
    wrapper = [vg, "--leak-check=full", "--show-leak-kinds=definite,indirect",
               "--errors-for-leak-kinds=definite,indirect",
               "--error-exitcode=99",
               f"--suppressions={REPO / 'tests' / 'valgrind.supp'}",
               "--num-callers=30", f"--log-file={log}"]
    smtp = Smtpd(farm).start()
    cfg = {"name": "it", "heartbeat_s": 10, "lost_after_s": 120,
           "slaves": [{"name": "s1"}],
           "builders": [{"name": "fail", "steps": [
               {"name": "check", "command": "seq 1 3000; echo 'error: x'; "
                                            "exit 1"}]}],
           "mail": mail_config(smtp.port)}
    m = farm.master(cfg, start=False, wrapper=wrapper)
    m.start(timeout=120)
    farm.slave(m, "s1", start=False).start(timeout=120)
    token = add_user(farm, m, "vg@example.org", "Valgrind Ünïcode")
    job = submit(m, token, ["fail"], description="under valgrind ✓")
    wait_job(m, job, timeout=180)
    msg = smtp.wait_count(1, timeout=120)[0][0]
    assert msg["Subject"] == f"[it] FAIL: try job {job}: under valgrind ✓"
    rc = m.stop(expect=None, timeout=120)
    reports = "\n".join(p.read_text(errors="replace")[-20000:]
                        for p in farm.tmp.glob("valgrind-master.*.log"))
    assert rc == 0, f"tf-master under valgrind exited {rc}:\n{reports}"
