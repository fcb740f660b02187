// live.js - the pages' one websocket to the master's live feed (/live,
// subprotocol "testfarm-live", docs/api.md "Live feed").
//
// Pages subscribe to topics with a handler and get back a function that
// unsubscribes; topics are reference-counted so two parts of a page can
// watch "builds" without stepping on each other. The link reconnects by
// itself (backoff 0.5 s .. 5 s), subscribes again to every topic, and then
// calls each handler with {type: "reconnected"} so the page refetches what
// it may have missed; an "overflow" from the master reaches the handlers
// of the dropped topics the same way, as {type: "overflow"}. The link's
// opening and closing also tell health.js whether the master is there.

import { health } from "./health.js";

function topicOf(ev) {
  switch (ev.type) {
    case "build":
    case "step":
      return "builds";
    case "slave":
      return "slaves";
    case "request":
      return "requests";
    case "log":
      return `log:${ev.build_id}:${ev.step}`;
    default:
      return null;
  }
}

class Live {
  constructor() {
    this.ws = null;
    this.handlers = new Map(); // topic -> Set of handlers
    this.backoff = 500;
    this.timer = null;
    this.confirmed = new Set(); // topics the master said it subscribed
    this.waiters = []; // [topic, resolve]
    this.statusListeners = new Set();
    this.state = "connecting";
  }

  url() {
    const u = new URL("live", document.baseURI);
    u.protocol = u.protocol === "https:" ? "wss:" : "ws:";
    return u.href;
  }

  setState(s) {
    this.state = s;
    for (const f of this.statusListeners) f(s);
  }

  onStatus(f) {
    this.statusListeners.add(f);
    f(this.state);
    return () => this.statusListeners.delete(f);
  }

  connect() {
    if (this.ws) return;
    let ws;
    try {
      ws = new WebSocket(this.url(), "testfarm-live");
    } catch {
      this.retry();
      return;
    }
    this.ws = ws;
    this.setState("connecting");
    ws.onopen = () => {
      this.backoff = 500;
      health.ok();
      this.setState("open");
      const topics = [...this.handlers.keys()];
      if (topics.length) this.send({ subscribe: topics });
      if (this.wasOpen) this.notifyAll({ type: "reconnected" });
      this.wasOpen = true;
    };
    ws.onmessage = (m) => this.dispatch(m.data);
    ws.onclose = () => {
      this.ws = null;
      this.confirmed.clear();
      this.setState("closed");
      health.failed();
      this.retry();
    };
    ws.onerror = () => {
      /* onclose follows and retries */
    };
  }

  retry() {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.connect(), this.backoff);
    this.backoff = Math.min(5000, this.backoff * 2);
  }

  send(obj) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(obj));
  }

  dispatch(text) {
    let ev;
    try {
      ev = JSON.parse(text);
    } catch {
      return;
    }
    if (ev.type === "subscribed") {
      for (const t of ev.topics || []) this.confirmed.add(t);
      this.waiters = this.waiters.filter(([t, resolve]) => {
        if (!this.confirmed.has(t)) return true;
        resolve();
        return false;
      });
      return;
    }
    if (ev.type === "overflow") {
      for (const t of ev.topics || []) this.notify(t, { type: "overflow" });
      return;
    }
    if (ev.type === "error") {
      console.warn("live feed:", ev.message);
      return;
    }
    const t = topicOf(ev);
    if (t) this.notify(t, ev);
  }

  notify(topic, ev) {
    const set = this.handlers.get(topic);
    if (!set) return;
    for (const f of [...set]) {
      try {
        f(ev);
      } catch (e) {
        console.error(e);
      }
    }
  }

  notifyAll(ev) {
    for (const t of this.handlers.keys()) this.notify(t, ev);
  }

  // Calls handler(event) for every event of topic; returns the function
  // that stops it.
  subscribe(topic, handler) {
    this.connect();
    let set = this.handlers.get(topic);
    if (!set) {
      set = new Set();
      this.handlers.set(topic, set);
      this.send({ subscribe: [topic] });
    }
    set.add(handler);
    return () => {
      const s = this.handlers.get(topic);
      if (!s) return;
      s.delete(handler);
      if (s.size === 0) {
        this.handlers.delete(topic);
        this.confirmed.delete(topic);
        this.send({ unsubscribe: [topic] });
      }
    };
  }

  // Resolves once the master confirmed the topic (or after timeoutMs, so
  // a page without a live link still loads).
  ready(topic, timeoutMs = 2000) {
    if (this.confirmed.has(topic)) return Promise.resolve();
    return new Promise((resolve) => {
      this.waiters.push([topic, resolve]);
      setTimeout(resolve, timeoutMs);
    });
  }
}

export const live = new Live();
