"""test_indicator.py - tf-indicator, the tray applet, on a real X display
against real masters.

Each test starts an X server (Xvfb), an XEmbed system tray (trayer) in the
screen's top right corner, a D-Bus session bus (dbus-daemon) and a
notification daemon (dunst), then real tf-master and tf-slave processes and
tf-indicator. What a user sees is checked where a user sees it:

- the tray icon's colour, from a screenshot (ImageMagick's `import`) of the
  tray: the pixels of the icon are counted by colour class (green, amber,
  red, grey), since fonts and themes shift exact pixels;
- the notifications, from dunst's own history (`dunstctl history`);
- the menu, by clicking the icon with xdotool and choosing the first
  failing builder with the keyboard: the page it opens reaches the
  --browser command; and by the --dump-state file, whose "menu" is read
  back from the GtkMenu's widgets.

Both ways the icon can go are run: through a StatusNotifier host on the
session bus (Debian's status-notifier-watcher and gtk-sni-tray-standalone:
the icon fetched by name, the menu exported by dbusmenu), and, where no
host runs, libayatana-appindicator3's own fallback to a GtkStatusIcon
(XEmbed, in trayer), with a session bus and without one, as
docs/indicator.md says.

Needs: tf-indicator built (GTK 3, libayatana-appindicator3, libnotify:
meson's `indicator` feature) and xvfb, trayer, dbus-daemon, dbus-bin,
dunst, imagemagick, xdotool, haskell-status-notifier-item-utils and
haskell-gtk-sni-tray-utils; scripts/deps installs them all. Without them the
tests are skipped with the reason (a failure under --ci).

Under an ASan build tf-indicator runs with LeakSanitizer on, and its leak
report is read: a leak whose allocation comes from TestFarm's own code
fails the test; leaks allocated inside GTK, GLib and the libraries they
load (one-time caches, type registrations: not freed by design) are not
counted (docs/indicator.md, "Memory checks").
"""

import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import threading
from pathlib import Path

import pytest

import tfharness
from tfharness import REPO, BUILD_DIR, wait_for

TF_INDICATOR = BUILD_DIR / "indicator" / "tf-indicator"
ICONS = REPO / "indicator" / "icons"
DOCS_IMAGES = REPO / "docs" / "images"

SCREEN_W, SCREEN_H = 640, 480
TRAY_W, TRAY_H = 200, 32

TOOLS = {
    "Xvfb": "xvfb", "trayer": "trayer", "dbus-daemon": "dbus-daemon",
    "dbus-send": "dbus-bin",
    "gtk-sni-tray-standalone": "haskell-gtk-sni-tray-utils",
    "status-notifier-watcher": "haskell-status-notifier-item-utils",
    "openssl": "openssl",
    "dunst": "dunst", "dunstctl": "dunst", "import": "imagemagick",
    "convert": "imagemagick", "xdotool": "xdotool",
}


def missing_reason():
    if not os.access(TF_INDICATOR, os.X_OK):
        return (f"tf-indicator was not built ({TF_INDICATOR} missing): it "
                "needs libgtk-3-dev, libayatana-appindicator3-dev and "
                "libnotify-dev (scripts/deps installs them), then "
                "meson setup --reconfigure with -Dindicator=auto or enabled")
    lacking = sorted({pkg for tool, pkg in TOOLS.items()
                      if shutil.which(tool) is None})
    if lacking:
        return ("the tray tests need these Debian packages: "
                + " ".join(lacking) + " (scripts/deps installs them)")
    return None


@pytest.fixture
def needs_desktop():
    reason = missing_reason()
    if reason:
        pytest.skip(reason)


def asan_build():
    try:
        return b"__asan_init" in TF_INDICATOR.read_bytes()
    except OSError:
        return False


# ---- colours ----

def classify(r, g, b):
    if r > 150 and g < 100 and b < 100:
        return "red"
    if g > 120 and r < 120 and b < 120 and g - r > 50:
        return "green"
    if r > 180 and 110 < g < 200 and b < 80:
        return "amber"
    if abs(r - g) < 10 and abs(g - b) < 10 and 100 <= r <= 170:
        return "grey"
    return None


class Desktop:
    """Xvfb + trayer + a session bus + dunst, all registered with the farm
    so teardown kills them."""

    def __init__(self, farm, bus=True, tray="xembed"):
        self.farm = farm
        self.dir = farm.tmp / "desktop"
        self.dir.mkdir(exist_ok=True)
        self.display = self._free_display()
        self.shots = 0
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("DBUS_", "XDG_", "WAYLAND", "DISPLAY"))}
        env.update({
            "DISPLAY": f":{self.display}",
            "HOME": str(self.dir / "home"),
            "XDG_CONFIG_HOME": str(self.dir / "xdg"),
            "XDG_RUNTIME_DIR": str(self.dir / "run"),
            "NO_AT_BRIDGE": "1", "GDK_BACKEND": "x11",
        })
        for d in ("home", "xdg", "run"):
            (self.dir / d).mkdir(exist_ok=True)
        os.chmod(self.dir / "run", 0o700)
        bus_path = self.dir / "bus"
        env["DBUS_SESSION_BUS_ADDRESS"] = (
            f"unix:path={bus_path}" if bus else
            f"unix:path={self.dir / 'no-bus-here'}")
        self.env = env
        self.bus = bus

        self.xvfb = tfharness.Proc(farm, "Xvfb", [
            "Xvfb", f":{self.display}", "-screen", "0",
            f"{SCREEN_W}x{SCREEN_H}x24", "-nolisten", "tcp"],
            self.dir / "xvfb.log", env=env).start()
        # Stopped with SIGTERM before the harness's SIGKILLs, so that it
        # removes its lock file and socket.
        farm._closers.append(self._stop_xvfb)
        sock = Path(f"/tmp/.X11-unix/X{self.display}")
        wait_for(sock.exists, 20, f"Xvfb :{self.display} to listen", farm)
        if bus:
            tfharness.Proc(farm, "dbus-daemon", [
                "dbus-daemon", "--session", "--nofork",
                f"--address=unix:path={bus_path}"],
                self.dir / "dbus.log", env=env).start()
            wait_for(bus_path.exists, 20, "the session bus", farm)
            # Notifications at the bottom left, away from the tray.
            rc = self.dir / "dunstrc"
            rc.write_text("[global]\n    origin = bottom-left\n"
                          "    offset = 10x10\n")
            tfharness.Proc(farm, "dunst", ["dunst", "-config", str(rc)],
                           self.dir / "dunst.log", env=env).start()
            # Asked without activating: a call to the name itself would
            # make the bus start a second dunst from its service file.
            wait_for(lambda: self.name_owned(
                "org.freedesktop.Notifications"), 20,
                "dunst to own org.freedesktop.Notifications", farm)
        if tray == "sni":
            # A StatusNotifier watcher, then a host in a bar along the
            # top, icons at the right end: the D-Bus path. (The host's own
            # --watcher races its registration with it.)
            tfharness.Proc(farm, "sni-watcher", ["status-notifier-watcher"],
                           self.dir / "sni-watcher.log", env=env).start()
            wait_for(lambda: self.name_owned("org.kde.StatusNotifierWatcher"),
                     30, "the StatusNotifier watcher on the bus", farm)
            tfharness.Proc(farm, "gtk-sni-tray", [
                "gtk-sni-tray-standalone", "--top", "--end",
                "--size", str(TRAY_H), "--color", "white"],
                self.dir / "sni-tray.log", env=env).start()
            wait_for(self.sni_host_registered, 30,
                     "the StatusNotifier host to register", farm)
        else:
            tfharness.Proc(farm, "trayer", [
                "trayer", "--edge", "top", "--align", "right", "--widthtype",
                "pixel", "--width", str(TRAY_W), "--height", str(TRAY_H),
                "--transparent", "false", "--tint", "0xffffff"],
                self.dir / "trayer.log", env=env).start()

    def sni_host_registered(self):
        r = subprocess.run(
            ["dbus-send", "--session", "--print-reply",
             "--dest=org.kde.StatusNotifierWatcher", "/StatusNotifierWatcher",
             "org.freedesktop.DBus.Properties.Get",
             "string:org.kde.StatusNotifierWatcher",
             "string:IsStatusNotifierHostRegistered"],
            env=self.env, capture_output=True, timeout=10)
        return b"boolean true" in r.stdout

    def name_owned(self, name):
        """Whether a bus name has an owner (asked without activating)."""
        return b"boolean true" in subprocess.run(
            ["dbus-send", "--session", "--print-reply",
             "--dest=org.freedesktop.DBus", "/org/freedesktop/DBus",
             "org.freedesktop.DBus.NameHasOwner", f"string:{name}"],
            env=self.env, capture_output=True, timeout=10).stdout

    def _stop_xvfb(self):
        if self.xvfb.running():
            self.xvfb.signal(signal.SIGTERM)
            try:
                self.xvfb.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass

    @staticmethod
    def _free_display():
        for n in range(100 + os.getpid() % 200, 600):
            if not (Path(f"/tmp/.X{n}-lock").exists() or
                    Path(f"/tmp/.X11-unix/X{n}").exists()):
                return n
        raise RuntimeError("no free X display number")

    def run(self, argv, **kw):
        return subprocess.run([str(a) for a in argv], env=self.env,
                              capture_output=True, timeout=30, **kw)

    def screenshot(self, name=None):
        self.shots += 1
        path = self.dir / (name or f"shot-{self.shots:03d}.png")
        r = self.run(["import", "-window", "root", path])
        assert r.returncode == 0, r.stderr
        return path

    def tray(self):
        """(counts by colour class, bounding box of the icon's pixels) of
        the tray area in a fresh screenshot."""
        shot = self.screenshot("tray-latest.png")
        x0 = SCREEN_W - TRAY_W
        r = self.run(["convert", shot, "-crop", f"{TRAY_W}x{TRAY_H}+{x0}+0",
                      "+repage", "-depth", "8", "rgb:-"])
        assert r.returncode == 0, r.stderr
        data = r.stdout
        counts = {"red": 0, "green": 0, "amber": 0, "grey": 0}
        box = [None, None, None, None]
        for i in range(0, min(len(data), TRAY_W * TRAY_H * 3), 3):
            c = classify(data[i], data[i + 1], data[i + 2])
            if not c:
                continue
            counts[c] += 1
            px, py = (i // 3) % TRAY_W + x0, (i // 3) // TRAY_W
            box = [px if box[0] is None else min(box[0], px),
                   py if box[1] is None else min(box[1], py),
                   px if box[2] is None else max(box[2], px),
                   py if box[3] is None else max(box[3], py)]
        return counts, box

    def menu_shown(self):
        """True when the area under the tray is mostly light: an open menu
        (the root window is black)."""
        shot = self.screenshot("menu-latest.png")
        r = self.run(["convert", shot, "-crop",
                      f"150x60+{SCREEN_W - 160}+{TRAY_H + 4}", "+repage",
                      "-depth", "8", "gray:-"])
        assert r.returncode == 0, r.stderr
        light = sum(1 for v in r.stdout if v > 200)
        return light > len(r.stdout) // 2

    def icon_colour(self):
        counts, _ = self.tray()
        colour = max(counts, key=counts.get)
        # The flame's heart is orange (amber's class): red must dominate.
        if colour == "red" and counts["red"] < 2 * counts["amber"]:
            return None, counts
        return (colour if counts[colour] >= 80 else None), counts

    def wait_icon(self, colour, what, timeout=20):
        seen = {}

        def ok():
            c, counts = self.icon_colour()
            seen["last"] = counts
            return c == colour
        try:
            wait_for(ok, timeout, f"the tray icon to turn {colour} ({what})",
                     self.farm, interval=0.3)
        except tfharness.WaitTimeout as e:
            raise AssertionError(f"{e}\npixel counts: {seen.get('last')}") \
                from None
        path = self.screenshot(f"{colour}-{what.replace(' ', '-')}.png")
        return path

    def notifications(self):
        """Summaries of every notification dunst has shown (closing the
        ones on screen moves them to its history)."""
        self.run(["dunstctl", "close-all"])
        r = self.run(["dunstctl", "history"], text=True)
        if r.returncode != 0:
            return []
        data = json.loads(r.stdout)["data"][0]
        return [n["summary"]["data"] for n in data]


class Indicator:
    def __init__(self, farm, desk, args, name="tf-indicator"):
        self.farm = farm
        self.desk = desk
        self.dump_path = farm.tmp / f"{name}.json"
        self.opened_path = farm.tmp / f"{name}-opened.txt"
        opener = farm.tmp / f"{name}-open.sh"
        opener.write_text(f"#!/bin/sh\necho \"$1\" >> {self.opened_path}\n")
        opener.chmod(0o755)
        env = dict(desk.env)
        self.lsan_prefix = farm.tmp / f"{name}-lsan"
        if asan_build():
            env["ASAN_OPTIONS"] = "detect_leaks=1:abort_on_error=1"
            env["LSAN_OPTIONS"] = (f"exitcode=0:log_path={self.lsan_prefix}"
                                   ":malloc_context_size=30")
        argv = [TF_INDICATOR, "--dump-state", self.dump_path, "--icon-dir",
                ICONS, "--browser", opener, "--retry-max", "2",
                "--log-level", "debug"] + list(args)
        self.proc = tfharness.Proc(farm, name, argv, farm.tmp / f"{name}.log",
                                   env=env)
        self.proc.start()
        wait_for(self.dump_path.exists, 20, "tf-indicator's first state dump",
                 farm)

    def dump(self):
        try:
            return json.loads(self.dump_path.read_text())
        except (OSError, ValueError):
            return {}

    def wait(self, pred, what, timeout=20):
        return wait_for(lambda: pred(self.dump()), timeout, what, self.farm)

    def menu_labels(self):
        return [i.get("label") for i in self.dump().get("menu", [])
                if not i.get("separator")]

    def opened(self):
        try:
            return self.opened_path.read_text().split()
        except FileNotFoundError:
            return []

    def stop(self):
        self.proc.signal(signal.SIGTERM)
        rc = self.proc.wait_exit(20)
        assert rc == 0, f"tf-indicator exited {rc}\n" + self.farm.dump_logs()
        self.check_leaks()

    def check_leaks(self):
        """Under ASan: no leak allocated by TestFarm's own code."""
        ours = []
        for f in self.farm.tmp.glob(self.lsan_prefix.name + "*"):
            text = f.read_text(errors="replace")
            assert "ERROR: AddressSanitizer" not in text, text[-6000:]
            for block in re.split(r"\n(?=(?:Direct|Indirect) leak of )", text):
                if not block.startswith(("Direct", "Indirect")):
                    continue
                first = first_own_frame(block)
                if first and re.search(r"(indicator|common)/[a-z_]+\.c:\d+",
                                       first):
                    ours.append(block[:3000])
        assert not ours, "tf-indicator leaked memory it allocated:\n" + \
            "\n".join(ours)


ALLOCATORS = re.compile(
    r" in (__interceptor_|__libc_|)(malloc|calloc|realloc|strdup|strndup|"
    r"g_malloc0?|g_realloc|g_try_malloc0?|g_strdup|g_strndup|g_memdup2?|"
    r"g_slice_alloc0?|g_new|g_strdup_printf|g_strdup_vprintf|"
    r"g_vasprintf)\b")


def first_own_frame(block):
    """The first stack frame of a leak report that is not an allocator."""
    for line in block.splitlines():
        line = line.strip()
        if not line.startswith("#"):
            continue
        if ALLOCATORS.search(line) or "libasan" in line:
            continue
        return line
    return None


def fragile_master(farm, flag, extra_builders=()):
    gate = farm.tmp / "go"
    cfg = {"slaves": [{"name": "s1"}], "builders": [
        {"name": "fragile", "slaves": ["s1"], "steps": [
            {"name": "test", "command": f"test ! -e {flag}"}]},
        {"name": "slow", "slaves": ["s1"], "steps": [
            {"name": "wait", "command":
             f"i=0; while [ ! -e {gate} ] && [ $i -lt 600 ]; do "
             "sleep 0.1; i=$((i+1)); done"}]},
    ] + list(extra_builders)}
    m = farm.master(cfg)
    farm.slave(m, "s1")
    return m, gate


@pytest.mark.timeout(180)
def test_indicator_follows_a_master(farm, needs_desktop):
    desk = Desktop(farm, bus=True)
    flag = farm.tmp / "make-it-fail"
    m, gate = fragile_master(farm, flag)
    ind = Indicator(farm, desk, ["--master", m.url])

    # Connected, nothing built yet: all passing, green.
    ind.wait(lambda d: d.get("overall") == "passing", "all passing")
    desk.wait_icon("green", "at start")
    d = ind.dump()
    assert d["status_notifier"] is False  # no host here: the XEmbed icon
    assert d["masters"][0]["link"] == "live"
    assert ind.menu_labels() == ["TestFarm: all passing", "Open waterfall",
                                 "Quit"]

    # A build running: amber.
    req = m.force("slow")
    ind.wait(lambda d: d.get("overall") == "building", "building")
    desk.wait_icon("amber", "while building")
    assert "TestFarm: all passing, 1 building" in ind.menu_labels()
    gate.write_text("go")
    m.wait_request_done(req)
    ind.wait(lambda d: d.get("overall") == "passing", "passing again")
    desk.wait_icon("green", "after the slow build")

    # fragile fails: red, a notification, and the menu lists it.
    flag.write_text("fail")
    b = m.run_build("fragile")
    assert b["result"] == "FAILURE"
    ind.wait(lambda d: d.get("overall") == "failing", "failing")
    desk.wait_icon("red", "fragile failing")
    item = f"fragile: FAILURE (#{b['number']})"
    assert ind.menu_labels() == ["TestFarm: 1 failing", item,
                                 "Open waterfall", "Quit"]
    menu = ind.dump()["menu"]
    assert menu[1]["url"] == f"{m.url}/#/builders/fragile"
    assert menu[1]["sensitive"] is True and menu[0]["sensitive"] is False
    assert menu[2]["url"] == f"{m.url}/#/waterfall"
    note = ind.dump()["notifications"][-1]
    assert note["summary"] == "fragile is failing" and note["shown"], note
    assert note["body"] == f"TestFarm: build #{b['number']} FAILURE"
    wait_for(lambda: "fragile is failing" in desk.notifications(), 20,
             "dunst to have shown 'fragile is failing'", farm)

    # The menu as a user opens it: a click on the icon, then the first
    # failing builder from the keyboard opens its page.
    _, box = desk.tray()
    x, y = (box[0] + box[2]) // 2, (box[1] + box[3]) // 2
    r = desk.run(["xdotool", "mousemove", x, y, "click", "3"])
    assert r.returncode == 0, r.stderr
    wait_for(desk.menu_shown, 20, "the menu to open under the icon", farm,
             interval=0.2)
    shot = desk.screenshot("menu-open.png")
    if os.environ.get("TF_DOCS_IMAGES") == "1":
        DOCS_IMAGES.mkdir(exist_ok=True)
        r = desk.run(["convert", shot, "-crop",
                      f"240x150+{SCREEN_W - 240}+0", "+repage",
                      DOCS_IMAGES / "indicator-menu.png"])
        assert r.returncode == 0, r.stderr
    r = desk.run(["xdotool", "key", "Down", "Return"])
    assert r.returncode == 0, r.stderr
    wait_for(lambda: ind.opened() == [f"{m.url}/#/builders/fragile"], 20,
             "the failing builder's page to be opened", farm)

    # Fixed: green again, told so.
    flag.unlink()
    b2 = m.run_build("fragile")
    assert b2["result"] == "SUCCESS"
    ind.wait(lambda d: d.get("overall") == "passing", "passing after the fix")
    desk.wait_icon("green", "fragile fixed")
    assert ind.menu_labels() == ["TestFarm: all passing", "Open waterfall",
                                 "Quit"]
    note = ind.dump()["notifications"][-1]
    assert note["summary"] == "fragile passes again" and note["shown"], note
    wait_for(lambda: "fragile passes again" in desk.notifications(), 20,
             "dunst to have shown 'fragile passes again'", farm)
    assert len(ind.dump()["notifications"]) == 2  # once each, no repeats

    # The master goes away: grey, and the menu says so; it comes back:
    # the indicator reconnects by itself.
    m.stop()
    ind.wait(lambda d: d.get("overall") == "unknown", "the master gone")
    desk.wait_icon("grey", "master stopped")
    header = ind.menu_labels()[0]
    assert header.startswith("TestFarm: unreachable (") and \
        header.endswith("), retrying"), header
    m.start()
    ind.wait(lambda d: d.get("overall") == "passing" and
             d["masters"][0]["link"] == "live", "reconnected", timeout=30)
    desk.wait_icon("green", "master back")
    assert len(ind.dump()["notifications"]) == 2  # a reconnect is no news

    if os.environ.get("TF_DOCS_IMAGES") == "1":
        # The four states side by side, as the tray showed them.
        shots = [desk.dir / n for n in (
            "green-at-start.png", "amber-while-building.png",
            "red-fragile-failing.png", "grey-master-stopped.png")]
        r = desk.run(["convert"] + shots + [
            "-crop", f"40x{TRAY_H}+{SCREEN_W - 40}+0", "+repage",
            "+append", "-scale", "200%", DOCS_IMAGES /
            "indicator-states.png"])
        assert r.returncode == 0, r.stderr

    ind.stop()


@pytest.mark.timeout(180)
def test_indicator_worst_of_three_masters_without_a_session_bus(
        farm, needs_desktop):
    desk = Desktop(farm, bus=False)
    flag = farm.tmp / "make-it-fail"
    a, _ = fragile_master(farm, flag)
    b_port = tfharness.free_port()  # nobody there yet
    cfg = farm.tmp / "indicator.json"
    cfg.write_text(json.dumps({"masters": [
        {"url": a.url, "name": "Alpha"},
        {"url": f"http://127.0.0.1:{b_port}/", "name": "Beta"},
        {"url": "http://nonexistent.invalid:8010", "name": "Gamma"}]}))
    ind = Indicator(farm, desk, ["--config", cfg])

    # Alpha passes, Beta cannot be reached: we do not know, grey.
    ind.wait(lambda d: [m["link"] for m in d.get("masters", [])]
             == ["live", "down", "down"], "Alpha live, Beta and Gamma down")
    assert ind.dump()["overall"] == "unknown"
    desk.wait_icon("grey", "Beta unreachable")
    labels = ind.menu_labels()
    assert labels[0] == "Alpha: all passing"
    assert labels[2].startswith("Beta: unreachable ("), labels
    assert labels[4].startswith(
        "Gamma: unreachable (cannot resolve nonexistent.invalid: "), labels

    # A failure on Alpha outranks not knowing about Beta: red.
    flag.write_text("fail")
    assert a.run_build("fragile")["result"] == "FAILURE"
    ind.wait(lambda d: d.get("overall") == "failing", "failing")
    desk.wait_icon("red", "Alpha failing, Beta down")
    # Without a session bus the icon still shows (the XEmbed fallback) and
    # the notification is recorded as not shown, with libnotify's reason.
    note = ind.dump()["notifications"][-1]
    assert note["summary"] == "fragile is failing"
    assert note["shown"] is False and note["error"], note
    assert ind.dump()["status_notifier"] is False

    # Beta comes up (on the port the indicator has been retrying).
    beta = farm.master({"slaves": [], "builders": [
        {"name": "docs", "steps": [{"name": "x", "command": "true"}]}]},
        name="beta", port=b_port)
    ind.wait(lambda d: [m["link"] for m in d.get("masters", [])]
             == ["live", "live", "down"], "Beta reconnected", timeout=30)
    labels = ind.menu_labels()
    assert labels[:5] == ["Alpha: 1 failing", "fragile: FAILURE (#1)",
                          "Open waterfall", "Beta: all passing",
                          "Open waterfall"], labels
    assert labels[5].startswith("Gamma: unreachable (") and \
        labels[6:] == ["Open waterfall", "Quit"], labels
    assert ind.dump()["overall"] == "failing"
    beta.stop()
    ind.stop()


@pytest.mark.timeout(180)
def test_indicator_through_a_status_notifier_host(farm, needs_desktop):
    """The desktop path: a StatusNotifier host on the session bus shows the
    icon (fetched by name through IconThemePath) and the menu (exported
    over D-Bus by dbusmenu)."""
    desk = Desktop(farm, bus=True, tray="sni")
    flag = farm.tmp / "make-it-fail"
    m, _ = fragile_master(farm, flag)
    ind = Indicator(farm, desk, ["--master", m.url])
    ind.wait(lambda d: d.get("status_notifier") is True and
             d.get("overall") == "passing",
             "the icon registered with the StatusNotifier host, passing")
    desk.wait_icon("green", "through the host")

    flag.write_text("fail")
    assert m.run_build("fragile")["result"] == "FAILURE"
    ind.wait(lambda d: d.get("overall") == "failing", "failing")
    desk.wait_icon("red", "through the host")
    wait_for(lambda: "fragile is failing" in desk.notifications(), 20,
             "dunst to have shown 'fragile is failing'", farm)

    # The host draws the menu from what dbusmenu exports: open it, take
    # the first failing builder from the keyboard.
    _, box = desk.tray()
    x, y = (box[0] + box[2]) // 2, (box[1] + box[3]) // 2
    r = desk.run(["xdotool", "mousemove", x, y, "click", "3"])
    assert r.returncode == 0, r.stderr
    wait_for(desk.menu_shown, 20, "the host's menu to open", farm,
             interval=0.2)
    desk.screenshot("sni-menu-open.png")
    r = desk.run(["xdotool", "key", "Down", "Return"])
    assert r.returncode == 0, r.stderr
    wait_for(lambda: ind.opened() == [f"{m.url}/#/builders/fragile"], 20,
             "the failing builder's page to be opened", farm)

    # Quitting while registered with the host is clean (the host's
    # "connection-changed" on the way out must not touch freed state).
    ind.stop()


class TLSProxy:
    """https in front of a master, as a reverse proxy would be: TLS on its
    own port, plain bytes to the master (HTTP and the websocket alike)."""

    def __init__(self, farm, target_port, cert, key):
        self.target = target_port
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(cert, key)
        self.lsock = socket.socket()
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(16)
        self.port = self.lsock.getsockname()[1]
        self.socks = []
        self.stopped = False
        farm._closers.append(self.stop)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.stopped:
            try:
                conn, _ = self.lsock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,),
                             daemon=True).start()

    def _serve(self, conn):
        try:
            conn.settimeout(10)
            tls = self.ctx.wrap_socket(conn, server_side=True)
            tls.settimeout(None)
            up = socket.create_connection(("127.0.0.1", self.target), 10)
        except (OSError, ssl.SSLError):
            conn.close()
            return
        self.socks += [tls, up]
        threading.Thread(target=self._pump, args=(up, tls),
                         daemon=True).start()
        self._pump(tls, up)

    @staticmethod
    def _pump(src, dst):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except (OSError, ssl.SSLError):
            pass
        for s in (src, dst):
            try:
                s.close()
            except OSError:
                pass

    def stop(self):
        self.stopped = True
        self.lsock.close()
        for s in self.socks:
            try:
                s.close()
            except OSError:
                pass


def make_certs(d):
    """A CA and a server certificate for 127.0.0.1 signed by it."""
    def openssl(*args):
        r = subprocess.run(["openssl"] + [str(a) for a in args], cwd=d,
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
            "ca.key", "-out", "ca.pem", "-days", "2", "-subj",
            "/CN=TestFarm test CA")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "srv.key",
            "-out", "srv.csr", "-subj", "/CN=127.0.0.1")
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl("x509", "-req", "-in", "srv.csr", "-CA", "ca.pem", "-CAkey",
            "ca.key", "-CAcreateserial", "-out", "srv.pem", "-days", "2",
            "-extfile", "san.ext")
    return d / "ca.pem", d / "srv.pem", d / "srv.key"


@pytest.mark.timeout(120)
def test_indicator_follows_an_https_master(farm, needs_desktop):
    desk = Desktop(farm, bus=False)
    ca, cert, key = make_certs(farm.tmp)
    flag = farm.tmp / "make-it-fail"
    m, _ = fragile_master(farm, flag)
    proxy = TLSProxy(farm, m.port, cert, key)
    url = f"https://127.0.0.1:{proxy.port}"

    # Checked against the test CA: the feed and the API go over TLS.
    ind = Indicator(farm, desk, ["--master", url, "--ca-file", ca])
    ind.wait(lambda d: d.get("overall") == "passing", "passing over https")
    flag.write_text("fail")
    assert m.run_build("fragile")["result"] == "FAILURE"
    ind.wait(lambda d: d.get("overall") == "failing",
             "failing, heard over wss")
    menu = ind.dump()["menu"]
    assert menu[1] == {"label": "fragile: FAILURE (#1)", "sensitive": True,
                       "url": f"{url}/#/builders/fragile"}, menu
    desk.wait_icon("red", "https master failing")
    ind.stop()

    # Checked against the system's CAs, which do not know the test CA:
    # refused, shown as unreachable, and retried.
    other = Indicator(farm, desk, ["--master", url], name="system-cas")
    other.wait(lambda d: d.get("masters") and
               d["masters"][0]["link"] == "down", "the certificate refused")
    assert other.dump()["overall"] == "unknown"
    assert other.menu_labels()[0] == (
        f"{url}: unreachable (TLS: unable to get local issuer certificate), "
        "retrying"), other.menu_labels()
    other.stop()


def run_indicator(farm, args, env_extra=None, display=False):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("DISPLAY", "WAYLAND"))}
    env["HOME"] = str(farm.tmp / "home")
    env.pop("XDG_CONFIG_HOME", None)
    env.update(env_extra or {})
    return farm.run([TF_INDICATOR] + list(args), env=env, timeout=30)


def test_indicator_refuses_bad_input(farm):
    if not os.access(TF_INDICATOR, os.X_OK):
        pytest.skip(missing_reason())
    (farm.tmp / "home").mkdir()
    r = run_indicator(farm, ["--master", "ftp://ci:21"])
    assert r.returncode == 2
    assert "--master: master URL \"ftp://ci:21\" must start with http://" \
        in r.stderr
    r = run_indicator(farm, ["--master", "http://ci:8010", "--colour", "red"])
    assert r.returncode == 2 and "unknown option \"--colour\"" in r.stderr
    r = run_indicator(farm, [])
    assert r.returncode == 2
    assert "no masters to watch: give --master URL" in r.stderr
    bad = farm.tmp / "bad.json"
    bad.write_text('{"masters": ["http://ci:8010"],\n  "colour": "red"}\n')
    r = run_indicator(farm, ["--config", bad])
    assert r.returncode == 2
    assert f"{bad}:2:3: unknown key \"colour\"" in r.stderr, r.stderr
    r = run_indicator(farm, ["--config", farm.tmp / "none.json"])
    assert r.returncode == 2 and "no such configuration file" in r.stderr
    # The default file, as the docs say.
    d = farm.tmp / "home" / ".config" / "testfarm"
    d.mkdir(parents=True)
    (d / "indicator.json").write_text('{"masters": [1]}')
    r = run_indicator(farm, [])
    assert r.returncode == 2
    assert "indicator.json:1:14: masters[0] must be a URL string" in r.stderr
    (d / "indicator.json").unlink()
    # At login with nothing configured: quiet.
    r = run_indicator(farm, ["--autostart"])
    assert r.returncode == 0 and "not starting" in r.stderr
    # No display at all.
    r = run_indicator(farm, ["--master", "http://127.0.0.1:9"])
    assert r.returncode == 1 and "cannot open the display" in r.stderr
    r = run_indicator(farm, ["--help"])
    assert r.returncode == 0 and "--dump-state FILE" in r.stdout
    r = run_indicator(farm, ["--version"])
    assert r.returncode == 0 and r.stdout.startswith("tf-indicator ")
    # The login entry meson installs starts it with --autostart.
    desktop = (BUILD_DIR / "indicator" / "tf-indicator.desktop").read_text()
    assert re.search(r"^Exec=/\S+/tf-indicator --autostart$", desktop, re.M)
    assert "testfarm-passing.png" in desktop


@pytest.mark.timeout(180)
def test_try_builds_never_turn_the_tray_red(farm, needs_desktop):
    """A committer's try job fails on a builder: that is their patch, not
    the tree. The indicator follows the live feed's build kind (and the
    master's builders, whose last build is a continuous one), so the icon
    stays green and nobody is notified; the tree's own failure still
    turns it red."""
    desk = Desktop(farm, bus=False)
    flag = farm.tmp / "make-it-fail"
    m, gate = fragile_master(farm, flag)
    r = farm.run([tfharness.TF_MASTER, "user", "add", "ann@example.org",
                  "--name", "Ann", "-d", m.dir])
    assert r.returncode == 0, r.stderr
    token = r.stdout.strip().splitlines()[-1].strip()
    ind = Indicator(farm, desk, ["--master", m.url])
    ind.wait(lambda d: d.get("overall") == "passing", "all passing")
    desk.wait_icon("green", "at start")

    flag.write_text("fail")
    r = m.request("POST", "/api/v1/jobs", token=token,
                  body={"builders": ["fragile"], "patch": ""})
    assert r.status == 201, r
    job = r.json()["job_id"]
    wait_for(lambda: m.get_json(f"/jobs/{job}")["state"] == "finished", 60,
             "the try job to fail", farm)
    assert m.get_json(f"/jobs/{job}")["result"] == "FAILURE"
    # Events are applied in order: once the indicator has seen a later
    # continuous build come and go, it has seen the try build's too.
    req = m.force("slow")
    ind.wait(lambda d: d.get("overall") == "building", "slow building")
    gate.write_text("go")
    m.wait_request_done(req)
    ind.wait(lambda d: d.get("overall") == "passing", "passing after slow")
    desk.wait_icon("green", "after a failed try build")
    assert ind.menu_labels() == ["TestFarm: all passing", "Open waterfall",
                                 "Quit"]
    assert ind.dump()["notifications"] == []

    # A second indicator starting now reads the builders' snapshot: the
    # try build is no builder's last build there either.
    ind2 = Indicator(farm, desk, ["--master", m.url], name="tf-indicator-2")
    ind2.wait(lambda d: d.get("overall") == "passing" and
              d["masters"][0]["link"] == "live", "the snapshot: passing")
    ind2.stop()

    # The tree's own failure is news.
    b = m.run_build("fragile")
    assert b["result"] == "FAILURE"
    ind.wait(lambda d: d.get("overall") == "failing", "failing")
    desk.wait_icon("red", "fragile failing on the tree")
    assert ind.dump()["notifications"][-1]["summary"] == "fragile is failing"
    ind.stop()


@pytest.mark.timeout(300)
def test_indicator_is_optional_at_build_time(tmp_path):
    """meson's `indicator` feature: with -Dindicator=disabled a server's
    build has no tf-indicator and needs no GTK, libayatana-appindicator3
    or libnotify, while tf-master, tf-slave and the indicator's state
    tests (plain C) are still built."""
    meson = shutil.which("meson")
    if not meson:
        pytest.skip("meson is not installed")
    bdir = tmp_path / "build-noind"
    r = subprocess.run([meson, "setup", str(bdir), "-Dindicator=disabled"],
                       cwd=REPO, capture_output=True, text=True,
                       timeout=tfharness.scaled(240),
                       stdin=subprocess.DEVNULL)
    assert r.returncode == 0, f"meson setup:\n{r.stdout}\n{r.stderr}"
    assert re.search(r"tf-indicator\s*:\s*NO", r.stdout), r.stdout[-2000:]
    targets = json.loads(subprocess.run(
        [meson, "introspect", "--targets", str(bdir)], capture_output=True,
        text=True, check=True, timeout=60).stdout)
    names = {t["name"] for t in targets}
    assert "tf-indicator" not in names
    assert {"tf-master", "tf-slave", "test_ind_state",
            "test_ind_config"} <= names, sorted(names)
    deps = json.loads(subprocess.run(
        [meson, "introspect", "--dependencies", str(bdir)],
        capture_output=True, text=True, check=True, timeout=60).stdout)
    used = {d["name"] for d in deps}
    for lib in ("gtk+-3.0", "ayatana-appindicator3-0.1", "libnotify"):
        assert lib not in used, (lib, sorted(used))
