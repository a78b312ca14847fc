// Client side of the WebSocket protocol (docs/protocol.md), shared by the widget and the console.
//
// Connection: one socket that reconnects forever with capped, jittered backoff; it says hello
// first, matches responses to requests by `id`, treats silence longer than `deadAfterMs` as a
// dead socket (sleep, lost Wi-Fi), and reconnects at once when the browser comes back online or
// the tab becomes visible again. Requests made while it is down wait for the next connection
// (or fail at once with `queue: false`).
//
// Outbox: chat messages persisted in localStorage until the server acknowledged them, sent one at
// a time in order with their `client_msg_id`, so a retry after a lost acknowledgement is
// recognised by the server as a duplicate and stored once.

// docs/protocol.md "Versions": in 2 the result of one's own message carries its event (no echo);
// in 3 a burst of pushes comes as one message, a JSON array of frames.
const PROTOCOL = 3;
const BACKOFF_MIN_MS = 500;
const BACKOFF_MAX_MS = 15000;
const REQUEST_TIMEOUT_MS = 15000;
const DEAD_AFTER_MS = 50000; // server pings every 20 s (ws_ping_interval_s)

const RETRYABLE = new Set([
  "disconnected", "offline", "timeout", "rate_limited", "overloaded", "storage_unavailable",
  "shutting_down", "unavailable", "internal_error",
]);

export class ProtocolError extends Error {
  constructor(code, message, extra = {}) {
    super(message || code);
    this.code = code;
    Object.assign(this, extra);
  }
  // Worth sending again on the next connection (the socket went away, not the request).
  get retryable() {
    return RETRYABLE.has(this.code);
  }
}

export function newId() {
  if (globalThis.crypto && crypto.randomUUID) {
    try {
      return crypto.randomUUID();
    } catch (_) {
      /* insecure context */
    }
  }
  const b = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

export function wsUrl(path) {
  const u = new URL(path, location.href);
  u.protocol = u.protocol === "https:" ? "wss:" : "ws:";
  return u.href;
}

export class Connection {
  /**
   * @param {object} opts
   * @param {() => string} opts.url            where to connect (called on every attempt)
   * @param {() => object|null} opts.hello     first frame, or null to send none
   * @param {(frame: object) => void} opts.onPush        pushes (frames without a pending id)
   * @param {(status: string, info?: any) => void} opts.onStatus connecting|online|offline|closed
   */
  constructor(opts) {
    this.opts = opts;
    this.ws = null;
    this.status = "idle";
    this.ready = false;
    this.pending = new Map(); // id -> {resolve, reject, timer, frame}
    this.waiting = []; // requests made while not ready: {frame, resolve, reject, timeoutMs}
    this.attempt = 0;
    this.retryTimer = null;
    this.lastFrameAt = 0;
    this.stopped = false;
    this.seq = 0;
    this._watchdog = setInterval(() => this._checkAlive(), 5000);
    this._online = () => this.reconnectNow();
    this._offline = () => this._drop("offline");
    this._visible = () => {
      if (document.visibilityState === "visible") this._checkAlive(true);
    };
    addEventListener("online", this._online);
    addEventListener("offline", this._offline);
    document.addEventListener("visibilitychange", this._visible);
  }

  start() {
    this.stopped = false;
    this._open();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    clearInterval(this._watchdog);
    removeEventListener("online", this._online);
    removeEventListener("offline", this._offline);
    document.removeEventListener("visibilitychange", this._visible);
    if (this.ws) this.ws.close(1000);
    this._failAll("closed");
    this._setStatus("closed");
  }

  reconnectNow() {
    if (this.stopped) return;
    if (this.ws && (this.ws.readyState === 0 || this.ws.readyState === 1)) return;
    clearTimeout(this.retryTimer);
    this.attempt = 0;
    this._open();
  }

  _setStatus(status, info) {
    if (this.status === status && info === undefined) return;
    this.status = status;
    if (this.opts.onStatus) this.opts.onStatus(status, info);
  }

  _open() {
    if (this.stopped) return;
    if (navigator.onLine === false) {
      this._setStatus("offline");
      return; // the "online" event brings us back
    }
    this._setStatus("connecting");
    let ws;
    try {
      ws = new WebSocket(this.opts.url());
    } catch (err) {
      this._scheduleRetry();
      return;
    }
    this.ws = ws;
    this.ready = false;
    ws.onopen = () => {
      this.lastFrameAt = Date.now();
      const hello = this.opts.hello ? this.opts.hello() : null;
      if (hello) this._sendHello(ws, hello);
      else this._becomeReady();
    };
    ws.onmessage = (ev) => {
      if (ws !== this.ws) return;
      this.lastFrameAt = Date.now();
      let frame;
      try {
        frame = JSON.parse(ev.data);
      } catch (_) {
        return;
      }
      if (Array.isArray(frame)) {
        for (const f of frame) this._dispatch(f);
      } else {
        this._dispatch(frame);
      }
    };
    ws.onclose = (ev) => {
      if (ws !== this.ws) return;
      this.ws = null;
      this.ready = false;
      this._failAll("disconnected");
      if (this.opts.onClose) {
        // Permanent refusals (bad key, banned, logged out) stop the retries.
        const verdict = this.opts.onClose(ev.code, ev.reason);
        if (verdict === "stop") {
          this.stopped = true;
          this._setStatus("closed", { code: ev.code, reason: ev.reason });
          return;
        }
      }
      this._setStatus(navigator.onLine === false ? "offline" : "connecting");
      this._scheduleRetry();
    };
    ws.onerror = () => {
      /* onclose follows */
    };
  }

  _scheduleRetry() {
    if (this.stopped) return;
    clearTimeout(this.retryTimer);
    const cap = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** this.attempt);
    this.attempt += 1;
    const delay = cap / 2 + Math.random() * (cap / 2);
    this.retryTimer = setTimeout(() => this._open(), delay);
  }

  _drop(status) {
    if (this.ws) {
      const ws = this.ws;
      this.ws = null;
      this.ready = false;
      try {
        ws.close(4000, status);
      } catch (_) {
        /* already closing */
      }
      this._failAll("disconnected");
    }
    this._setStatus(status);
    if (status !== "offline") this._scheduleRetry();
  }

  _checkAlive(force) {
    if (!this.ws || this.ws.readyState !== 1) return;
    const silent = Date.now() - this.lastFrameAt;
    // After sleep the socket may look open but be dead: ask the server, drop it if it is silent.
    if (silent > (this.opts.deadAfterMs || DEAD_AFTER_MS)) this._drop("connecting");
    else if (force && silent > 5000 && this.ready) {
      this.send({ type: "ping", id: "ping" + ++this.seq });
    }
  }

  _becomeReady() {
    this.ready = true;
    this.attempt = 0;
    this._setStatus("online");
    const waiting = this.waiting;
    this.waiting = [];
    for (const w of waiting) this._sendRequest(w);
  }

  _dispatch(frame) {
    if (frame.type === "ping") {
      this.send({ type: "pong", id: frame.id == null ? null : frame.id });
      return;
    }
    if (frame.type === "pong") return;
    // Only "result" and "error" answer a request; a push may carry the id of the request
    // that caused it (the echo of one's own message), and stays a push.
    const isAnswer = frame.type === "result" || frame.type === "error";
    const id = isAnswer ? frame.id : null;
    if (!this.ready && id != null && id === this.helloId) {
      // The handshake's answer: a result carrying the welcome, or a refusal (the server closes).
      if (frame.type === "error") {
        // The owner may drop what was refused (a stale token, a bad identity) and say hello again.
        const retry = this.opts.onHelloError ? this.opts.onHelloError(frame) : false;
        const hello = retry && this.opts.hello ? this.opts.hello() : null;
        if (hello && this.ws && this.ws.readyState === 1) this._sendHello(this.ws, hello);
      } else {
        this.opts.onPush(frame.type === "result" && frame.result ? frame.result : frame);
        this._becomeReady();
      }
      return;
    }
    if (id != null && this.pending.has(id)) {
      const p = this.pending.get(id);
      this.pending.delete(id);
      clearTimeout(p.timer);
      if (frame.type === "result" && frame.result && frame.result.event) {
        // Protocol 2: one's own message comes back inside its result, not as an echo push.
        this.opts.onPush({ type: "event", id: frame.id, event: frame.result.event });
      }
      if (frame.type === "error") {
        p.reject(new ProtocolError(frame.code || "error", frame.message, frame));
      } else {
        p.resolve(frame.type === "result" && frame.result ? frame.result : frame);
      }
      return;
    }
    this.opts.onPush(frame);
  }

  _sendHello(ws, hello) {
    hello.id = "hello" + ++this.seq;
    hello.protocol = PROTOCOL;
    this.helloId = hello.id;
    ws.send(JSON.stringify(hello));
  }

  _failAll(code) {
    for (const [, p] of this.pending) {
      clearTimeout(p.timer);
      p.reject(new ProtocolError(code, "connection lost"));
    }
    this.pending.clear();
  }

  /** Fire-and-forget frame (typing, pong); dropped when not connected. */
  send(frame) {
    if (this.ws && this.ws.readyState === 1) {
      this.ws.send(JSON.stringify(frame));
      return true;
    }
    return false;
  }

  /**
   * Send a command and wait for its result frame. Rejects with ProtocolError.
   * queue (default true): if not connected, wait for the connection instead of failing.
   */
  request(type, fields = {}, { queue = true, timeoutMs = REQUEST_TIMEOUT_MS } = {}) {
    return new Promise((resolve, reject) => {
      const frame = Object.assign({}, fields, { type, id: "r" + ++this.seq });
      const w = { frame, resolve, reject, timeoutMs };
      if (this.ready && this.ws && this.ws.readyState === 1) this._sendRequest(w);
      else if (queue) this.waiting.push(w);
      else reject(new ProtocolError("offline", "not connected"));
    });
  }

  _sendRequest(w) {
    const timer = setTimeout(() => {
      if (this.pending.delete(w.frame.id)) w.reject(new ProtocolError("timeout", "no answer"));
    }, w.timeoutMs);
    this.pending.set(w.frame.id, { resolve: w.resolve, reject: w.reject, timer });
    try {
      this.ws.send(JSON.stringify(w.frame));
    } catch (err) {
      clearTimeout(timer);
      this.pending.delete(w.frame.id);
      w.reject(new ProtocolError("disconnected", String(err)));
    }
  }
}

/**
 * Messages not yet acknowledged, persisted under `storageKey` (shared by the tabs of one
 * origin). Items: {client_msg_id, conversation_id, text, kind, created_at, state, error}.
 * state: "sending" (will be sent when connected) or "failed" (refused; retry() resends).
 */
export class Outbox {
  // One localStorage key per item (`<key>:<client_msg_id>`), never one shared list: tabs of
  // the site share the outbox, and a read-modify-write of a shared list by one tab (say, on
  // its ack) would erase an item another tab added meanwhile, losing that message.
  constructor(storageKey, { send, onChange, lockName }) {
    this.key = storageKey;
    this.prefix = storageKey + ":";
    this.sendItem = send; // async (item) => ack frame; throws ProtocolError
    this.onChange = onChange || (() => {});
    this.lockName = lockName || storageKey;
    this.flushing = false;
    this.again = false;
    this.counter = 0;
    addEventListener("storage", (ev) => {
      if (ev.key === null || ev.key.startsWith(this.prefix)) this.onChange(null);
    });
  }

  /** Queued items, oldest first. */
  items() {
    const out = [];
    try {
      for (let i = 0; i < localStorage.length; i++) {
        const k = localStorage.key(i);
        if (!k || !k.startsWith(this.prefix)) continue;
        try {
          const v = JSON.parse(localStorage.getItem(k));
          if (v && typeof v === "object" && v.client_msg_id) out.push(v);
        } catch (_) {
          /* a corrupt entry is skipped, not fatal */
        }
      }
    } catch (_) {
      return [];
    }
    return out.sort((a, b) => a.order - b.order || (a.client_msg_id < b.client_msg_id ? -1 : 1));
  }

  _put(item) {
    try {
      localStorage.setItem(this.prefix + item.client_msg_id, JSON.stringify(item));
    } catch (_) {
      /* storage full or disabled: the in-flight send still happens */
    }
  }

  _update(id, fn) {
    let current = null;
    try {
      current = JSON.parse(localStorage.getItem(this.prefix + id) || "null");
    } catch (_) {
      current = null;
    }
    if (!current) return;
    const next = fn(current);
    if (next) this._put(next);
    else localStorage.removeItem(this.prefix + id);
  }

  add(item) {
    const now = Date.now();
    const full = Object.assign(
      { created_at: now / 1000, order: now * 1000 + (this.counter++ % 1000), state: "sending" },
      item,
    );
    this._put(full);
    this.onChange(full);
    this.flush();
    return full;
  }

  retry(id) {
    this._update(id, (it) => Object.assign({}, it, { state: "sending", error: null }));
    this.onChange(null);
    this.flush();
  }

  discard(id) {
    this._update(id, () => null);
    this.onChange(null);
  }

  /** Send every "sending" item in order; stops at the first one that fails retryably. */
  flush() {
    if (this.flushing) {
      this.again = true;
      return Promise.resolve();
    }
    this.flushing = true;
    const run = async () => {
      do {
        this.again = false;
        for (;;) {
          const item = this.items().find((it) => it.state === "sending");
          if (!item) break;
          try {
            const ack = await this.sendItem(item);
            this._update(item.client_msg_id, () => null);
            this.onChange(Object.assign({}, item, { state: "sent", ack }));
          } catch (err) {
            if (err && err.retryable) {
              // Lost connection: the next one flushes. Still connected (rate limit, overload):
              // try again after the delay the server asked for.
              if (err.code !== "disconnected" && err.code !== "offline") {
                const delayS = Math.min(30, err.retry_after_s || 2);
                clearTimeout(this.retryTimer);
                this.retryTimer = setTimeout(() => this.flush(), delayS * 1000);
              }
              return;
            }
            this._update(item.client_msg_id, (it) =>
              Object.assign({}, it, { state: "failed", error: (err && err.message) || "failed" }),
            );
            this.onChange(null);
          }
        }
      } while (this.again);
    };
    const locked =
      navigator.locks && navigator.locks.request
        ? navigator.locks.request(this.lockName, run)
        : run();
    return locked.finally(() => {
      this.flushing = false;
    });
  }
}

/** Append text to `parent`, turning http(s) URLs into safe links. Never parses HTML. */
export function appendLinkified(parent, text) {
  const re = /\bhttps?:\/\/[^\s<>"']+/gi;
  let last = 0;
  let m;
  const s = String(text == null ? "" : text);
  while ((m = re.exec(s))) {
    let url = m[0].replace(/[.,;:!?)\]]+$/, "");
    if (m.index > last) parent.appendChild(document.createTextNode(s.slice(last, m.index)));
    let href = null;
    try {
      const u = new URL(url);
      if (u.protocol === "http:" || u.protocol === "https:") href = u.href;
    } catch (_) {
      href = null;
    }
    if (href) {
      const a = document.createElement("a");
      a.href = href;
      a.textContent = url;
      a.target = "_blank";
      a.rel = "noopener noreferrer nofollow";
      parent.appendChild(a);
    } else {
      parent.appendChild(document.createTextNode(url));
    }
    last = m.index + url.length;
    re.lastIndex = last;
  }
  if (last < s.length) parent.appendChild(document.createTextNode(s.slice(last)));
}

/** document.createElement with properties, attributes (aria-*, data-*) and children. */
export function h(tag, props, ...children) {
  const el = document.createElement(tag);
  if (props) {
    for (const [k, v] of Object.entries(props)) {
      if (v == null || v === false) continue;
      if (k === "class") el.className = v;
      else if (k === "text") el.textContent = v;
      else if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
      else if (k.startsWith("aria-") || k.startsWith("data-") || k === "role" || k === "for")
        el.setAttribute(k, v === true ? "true" : String(v));
      else el[k] = v;
    }
  }
  for (const c of children.flat()) {
    if (c == null || c === false) continue;
    el.appendChild(typeof c === "string" ? document.createTextNode(c) : c);
  }
  return el;
}

export function formatTime(seconds) {
  const d = new Date(seconds * 1000);
  return d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}
