// health.js - whether the master answers, as the pages see it.
//
// Every fetch of api.js and the live feed's link report here: a fetch that
// could not reach the master (a network error, or 502/504 from a proxy in
// front of it) or a live link that closed makes the state "down" once a
// probe (GET api/v1/master) fails too; any answer from the master, or the
// live link opening, makes it "up" again. While down, a probe runs every
// PROBE_MS so the state clears itself as soon as the master is back, even
// on a page that does nothing else.
//
// app.js draws the banner from this state ("master unreachable, the data
// is stale, retrying"), ui.js stops the elapsed-time counters while it is
// down (a build shown as running for 5 min may have ended), and on the way
// back up app.js has every page refetch what it shows.

const PROBE_MS = 2000;

class Health {
  constructor() {
    this.down = false;
    this.downSince = null; // ms, our clock
    this.lastOkMs = Date.now(); // the last answer from the master
    this.listeners = new Set();
    this.timer = null;
    this.probing = null;
  }

  // f(down) after every change; returns the function that stops it.
  onChange(f) {
    this.listeners.add(f);
    return () => this.listeners.delete(f);
  }

  set(down) {
    if (this.down === down) return;
    this.down = down;
    this.downSince = down ? Date.now() : null;
    clearTimeout(this.timer);
    this.timer = null;
    if (down) this.schedule();
    for (const f of [...this.listeners]) {
      try {
        f(down);
      } catch (e) {
        console.error(e);
      }
    }
  }

  // The master answered something (any status it sends itself).
  ok() {
    this.lastOkMs = Date.now();
    this.set(false);
  }

  // A request did not reach the master: check with a probe before saying
  // so, so that one aborted request does not raise the banner.
  failed() {
    if (this.down) return;
    this.probe();
  }

  schedule() {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.probe(), PROBE_MS);
  }

  // One GET api/v1/master at a time; resolves to whether it answered.
  probe() {
    if (this.probing) return this.probing;
    const url = new URL("api/v1/master", document.baseURI);
    this.probing = fetch(url, { cache: "no-store" })
      .then(
        (r) => {
          // A proxy's 502/504 means the master behind it is not there.
          if (r.status === 502 || r.status === 504) throw new Error(String(r.status));
          this.ok();
          return true;
        },
        () => false,
      )
      .catch(() => false)
      .then((answered) => {
        this.probing = null;
        if (!answered) {
          this.set(true);
          this.schedule();
        }
        return answered;
      });
    return this.probing;
  }
}

export const health = new Health();
