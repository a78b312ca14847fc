// The widget app, running in its own iframe on the chat server's origin (see loader.js).
// State that must survive reloads, sleep and network loss lives in this origin's localStorage:
// the visitor token, the last sequence number seen per conversation, and the outbox of messages
// not yet acknowledged. Tabs of the same site share them and talk over a BroadcastChannel.
import {
  Connection, Outbox, newId, wsUrl, h,
} from "./client.js";
import { initFiles } from "./files.js";
import { departmentsOf } from "./departments.js";
import { hideInvitation, invitationShown, showInvitation } from "./invite.js";
import { clearGreeting, greetingId, initGreeting, showGreeting } from "./greeting.js";
import { $, HOST, KEY, NS, PREVIEW, state, store } from "./state.js";
import { download, initLog, renderLog, scrollDown } from "./log.js";
import { buildPrechat, prechatFields, wireForms } from "./forms.js";

// ------------------------------------------------------------------ host page

let hostOk = !!HOST && window.parent !== window;
try {
  const anc = location.ancestorOrigins;
  if (anc && anc.length && anc[0] !== HOST) hostOk = false; // the page lied about its origin
} catch (_) {
  /* not supported */
}

function toHost(msg) {
  if (hostOk) window.parent.postMessage(Object.assign({ lc: 1 }, msg), HOST);
}
function emit(name, detail) {
  toHost({ type: "event", name, detail });
}

addEventListener("message", (ev) => {
  if (!hostOk || ev.source !== window.parent || ev.origin !== HOST) return;
  const m = ev.data;
  if (!m || m.lc !== 1) return;
  switch (m.type) {
    case "open":
      setOpen(true);
      break;
    case "close":
      setOpen(false);
      break;
    case "layout":
      $("lc").classList.toggle("full", !!m.full);
      break;
    case "page":
      reportPage({ url: String(m.url || ""), title: m.title || null, referrer: m.referrer || null });
      break;
    case "visitor":
      setProfile({ name: m.name, email: m.email, attributes: m.attributes || {} });
      break;
    case "identify":
      identify(String(m.user_id || ""), String(m.signature || ""));
      break;
    case "preview":
      if (PREVIEW && m.config) {
        applyConfig(m.config);
        renderAll();
      }
      break;
  }
});

// ------------------------------------------------------------------ tabs

const channel = "BroadcastChannel" in window ? new BroadcastChannel(NS + "tabs") : null;
function tell(msg) {
  if (channel) channel.postMessage(msg);
}
if (channel) {
  channel.onmessage = (ev) => {
    const m = ev.data || {};
    if (m.t === "event") onEvent(m.event, true);
    else if (m.t === "conv") setConversation(m.conv, true);
    else if (m.t === "unread") {
      state.unread = m.n;
      renderBadge();
    }
  };
}

// ------------------------------------------------------------------ connection

const conn = new Connection({
  url: () => wsUrl("/ws/v1/visitor?key=" + encodeURIComponent(KEY)),
  hello: () => {
    const resume = {};
    const convId = store.get("conv");
    if (convId) resume[convId] = store.get("seq:" + convId, 0);
    const frame = { type: "hello", token: store.get("token"), resume };
    if (state.page) frame.page = state.page;
    const identity = store.get("identity");
    if (identity) frame.identity = identity;
    return frame;
  },
  onPush,
  onStatus: (s) => {
    state.status = s;
    renderConn();
    if (s === "online") afterConnect();
  },
  onClose: (code) => {
    if (state.helloFixed) {
      state.helloFixed = false;
      return null; // we dropped what the server refused: try again
    }
    return code === 1008 ? "stop" : null;
  },
  onHelloError: (f) => {
    if (f.code === "invalid_identity") store.set("identity", null);
    else if (f.code === "auth_failed" || f.code === "invalid_token") store.set("token", null);
    else return false;
    state.helloFixed = true;
    return true;
  },
});

const outbox = new Outbox(NS + "outbox", {
  lockName: NS + "outbox",
  send: (item) =>
    conn.request("send_message", {
      conversation_id: null,
      client_msg_id: item.client_msg_id,
      text: item.text,
      attachments: (item.files || []).map((f) => f.id),
      group_id: item.group_id || null,
      greeting_id: item.greeting_id || null,
    }, { queue: false }),
  onChange: (item) => {
    if (item && item.state === "sent" && item.ack) {
      const ack = item.ack;
      const convId = ack.conversation_id;
      if (convId && (!state.conv || state.conv.conversation_id !== convId)) {
        setConversation({ conversation_id: convId, state: "queued" });
      }
      onEvent({
        conversation_id: convId,
        seq: ack.seq,
        kind: "message",
        visibility: "all",
        author_type: "visitor",
        author_id: state.visitorId,
        author_name: null,
        body: item.text,
        client_msg_id: item.client_msg_id,
        created_at: ack.created_at,
      });
    }
    renderLog();
  },
});

initLog(outbox);

async function afterConnect() {
  if (state.conv && state.historyLoaded !== state.conv.conversation_id) await loadHistory();
  outbox.flush();
}

function onPush(f) {
  switch (f.type) {
    case "hello": {
      if (f.visitor_token) store.set("token", f.visitor_token);
      state.visitorId = f.visitor_id || state.visitorId;
      if (f.widget) applyConfig(f.widget);
      const w = f.welcome || {};
      state.agentsAvailable = w.agents_available !== false;
      // Either side saying "on" means drafts may be read: tell the visitor and send them.
      state.sneakPeek = !!w.sneak_peek_enabled || !!(f.widget && f.widget.sneak_peek);
      if (w.conversation) setConversation(w.conversation);
      else if (state.conv && state.conv.state !== "closed") setConversation(null);
      if (w.queue_position) state.queue = { position: w.queue_position, wait: null };
      const profile = store.get("profile");
      if (profile && !state.profileSent) {
        state.profileSent = true;
        conn.request("update_profile", profile, { queue: false }).catch(() => {});
      }
      renderAll();
      break;
    }
    case "event":
      if (f.event && f.event.kind !== "message") $("lc-agent-conn").hidden = true;
      onEvent(f.event);
      break;
    case "typing":
      if (f.author_type === "agent" && state.conv && f.conversation_id === state.conv.conversation_id) {
        state.agentTypingUntil = f.is_typing ? Date.now() + (f.expires_in_s || 6) * 1000 : 0;
        state.agentTypingName = f.author_name;
        renderTyping();
      }
      break;
    case "queue_position":
      state.queue = { position: f.position, wait: f.estimated_wait_s };
      renderQueue();
      break;
    case "conversation_update":
      setConversation(f.conversation);
      break;
    case "availability":
      state.agentsAvailable = !!f.agents_available;
      renderAll();
      break;
    case "agent_reconnecting": {
      // The agent's connection dropped: say so until they are back, or the chat is re-routed
      // (a status or assigned event follows, which hides this).
      const el = $("lc-agent-conn");
      const mine = state.conv && f.conversation_id === state.conv.conversation_id;
      el.hidden = !(mine && f.reconnecting);
      if (!el.hidden) el.textContent = (f.agent_name || "Your agent") + " is reconnecting…";
      break;
    }
    case "resync_required":
      state.historyLoaded = null;
      loadHistory();
      break;
    case "greeting": // a trigger's greeting or invitation, before any chat (greeting.js)
      if (state.conv && state.conv.state !== "closed") break;
      showGreeting(f, () => setOpen(false));
      setOpen(true);
      break;
    case "session_closed":
      $("lc-conn").textContent = "This chat is no longer available.";
      $("lc-conn").hidden = false;
      break;
  }
}

async function loadHistory() {
  const conv = state.conv;
  if (!conv) return;
  try {
    const res = await conn.request("get_history", { conversation_id: conv.conversation_id, limit: 200 });
    const hist = res.result || res;
    for (const e of hist.events || []) onEvent(e, true);
    state.historyLoaded = conv.conversation_id;
  } catch (err) {
    /* retried on the next connection */
  }
}

function setConversation(conv, fromTab) {
  const prevId = state.conv && state.conv.conversation_id;
  if (!conv) {
    state.conv = null;
    store.set("conv", null);
  } else {
    const wasClosed = state.conv && state.conv.state === "closed";
    state.conv = Object.assign({}, prevId === conv.conversation_id ? state.conv : {}, conv);
    store.set("conv", conv.conversation_id);
    if (prevId !== conv.conversation_id) {
      if (conv.state !== "closed") clearGreeting();
      state.events.clear();
      state.historyLoaded = null;
      state.queue = null;
      if (!fromTab && prevId === null) emit("chat_started", { conversation_id: conv.conversation_id });
      if (conn.ready) loadHistory();
    }
    if (conv.state === "closed" && !wasClosed) emit("chat_ended", { conversation_id: conv.conversation_id });
    if (conv.state !== "queued") state.queue = null;
  }
  if (!fromTab) tell({ t: "conv", conv });
  renderAll();
}

function onEvent(e, quiet) {
  if (!e || e.visibility === "agents") return; // never shown to visitors, whatever the server sent
  if (!state.conv || e.conversation_id !== state.conv.conversation_id) {
    if (e.kind === "message" || e.kind === "assigned") {
      setConversation({ conversation_id: e.conversation_id, state: "active" });
    } else return;
  }
  if (state.events.has(e.seq)) return;
  state.events.set(e.seq, e);
  const key = "seq:" + e.conversation_id;
  if (e.seq > store.get(key, 0)) store.set(key, e.seq);
  if (e.kind === "status" && e.data && e.data.state) {
    state.conv = Object.assign({}, state.conv, { state: e.data.state });
    if (e.data.state === "closed") emit("chat_ended", { conversation_id: e.conversation_id });
  }
  if ((e.kind === "assigned" || e.kind === "transferred") && e.data && e.data.agent_name) {
    state.conv.assignee_name = e.data.agent_name;
    state.queue = null;
  }
  // A proactive invitation: open on a card with the agent's name and message (invite.js).
  if (!quiet && e.kind === "assigned" && e.data && e.data.invitation === true) {
    showInvitation({ name: e.data.agent_name }, () => { hideInvitation(); setOpen(false); });
    setOpen(true);
  }
  if (invitationShown()) {
    if (e.kind === "message" && e.author_type === "agent") showInvitation({ text: e.body });
    if (e.kind === "message" && e.author_type === "visitor") hideInvitation();
    if (e.kind === "status" && e.data && e.data.state === "closed") hideInvitation();
  }
  if (e.kind === "message" && e.author_type === "agent") {
    state.agentTypingUntil = 0;
    state.queue = null;
    state.conv.assignee_name = state.conv.assignee_name || e.author_name;
    if (!quiet) {
      emit("message", { author_type: "agent", author_name: e.author_name, text: e.body });
      if (!state.open || document.visibilityState !== "visible") {
        state.unread += 1;
        store.set("unread", state.unread);
        tell({ t: "unread", n: state.unread });
      }
    }
  }
  if (!quiet) tell({ t: "event", event: e });
  renderAll();
}

// ------------------------------------------------------------------ commands

function reportPage(page) {
  if (!page.url) return;
  state.page = page;
  if (conn.ready) {
    conn.request("page_view", page, { queue: false }).catch(() => {});
  }
}

function setProfile(p, { strict = false } = {}) {
  const fields = {};
  if (p.name != null) fields.name = String(p.name).slice(0, 200);
  if (p.email != null) fields.email = String(p.email).slice(0, 320);
  fields.attributes = p.attributes && typeof p.attributes === "object" ? p.attributes : {};
  store.set("profile", Object.assign({}, store.get("profile", {}), fields));
  if (!strict) return conn.request("update_profile", fields).catch(() => {});
  return saveProfileStrictly(fields);
}

// The pre-chat form: its fields must be saved before the first message (the server refuses a
// message while a required field is missing). A connection lost on the way is not the
// visitor's doing: the request (idempotent) waits for the next connection and goes again.
// Any other refusal (a field the server rejects, a rate limit, no answer) is thrown, for the
// form to show.
async function saveProfileStrictly(fields) {
  for (let attempt = 1; ; attempt++) {
    try {
      return await conn.request("update_profile", fields);
    } catch (err) {
      if (!(err && err.code === "disconnected") || attempt >= 3) throw err;
    }
  }
}

function identify(userId, signature) {
  if (!userId) return;
  const prev = store.get("identity");
  if (prev && prev.user_id === userId && prev.signature === signature) return;
  store.set("identity", { user_id: userId, signature });
  // Identity is proven in the handshake: reconnect so the server can link this visitor.
  if (conn.ws) conn._drop("connecting");
}

function sendText(text, groupId = null) {
  text = text.trim();
  if (!text) return;
  stopTyping();
  hideInvitation();
  const open = state.conv && state.conv.state !== "closed";
  const answering = open ? null : greetingId();
  clearGreeting();
  outbox.add({
    client_msg_id: newId(), text, conversation_id: state.conv && state.conv.conversation_id,
    group_id: groupId, greeting_id: answering,
  });
  renderLog();
  scrollDown();
}

function sendFiles(files) {
  outbox.add({ client_msg_id: newId(), text: "", files, conversation_id: state.conv && state.conv.conversation_id });
  renderLog();
}

function sendTyping(isTyping, draft) {
  if (!state.conv || state.conv.state === "closed" || !conn.ready) return;
  const frame = { conversation_id: state.conv.conversation_id, is_typing: isTyping };
  if (state.sneakPeek) frame.draft = isTyping ? (draft || "").slice(0, 2000) : null;
  conn.request("typing", frame, { queue: false }).catch(() => {});
}

function onInput() {
  const ta = $("lc-input");
  ta.style.height = "auto";
  ta.style.height = Math.min(ta.scrollHeight, 120) + "px";
  const now = Date.now();
  const text = ta.value;
  if (!text) {
    stopTyping();
    return;
  }
  // Throttled: at most one frame per 2 s (per 0.7 s with sneak peek, so the draft stays fresh).
  const interval = state.sneakPeek ? 700 : 2000;
  clearTimeout(state.draftTimer);
  if (!state.typingActive || now - state.lastTypingSent > interval) {
    state.typingActive = true;
    state.lastTypingSent = now;
    sendTyping(true, text);
  } else if (state.sneakPeek) {
    // Trailing edge: the agent sees the last draft once the throttle window ends.
    state.draftTimer = setTimeout(() => {
      if (!state.typingActive) return;
      state.lastTypingSent = Date.now();
      sendTyping(true, $("lc-input").value);
    }, interval - (now - state.lastTypingSent));
  }
  clearTimeout(state.typingTimer);
  state.typingTimer = setTimeout(stopTyping, 4000);
}

function stopTyping() {
  clearTimeout(state.typingTimer);
  clearTimeout(state.draftTimer);
  if (state.typingActive) {
    state.typingActive = false;
    sendTyping(false);
  }
}

// ------------------------------------------------------------------ rendering

function renderTyping() {
  const on = state.agentTypingUntil > Date.now();
  $("lc-typing").textContent = on ? (state.agentTypingName || "Agent") + " is typing…" : "";
  if (on) setTimeout(renderTyping, state.agentTypingUntil - Date.now() + 50);
}

function renderQueue() {
  const q = state.queue;
  const el = $("lc-queue");
  const waiting = q && state.conv && state.conv.state === "queued";
  el.hidden = !waiting;
  if (waiting) {
    let text = "You are number " + q.position + " in the queue.";
    if (q.wait != null) {
      const mins = Math.max(1, Math.round(q.wait / 60));
      text += " Estimated wait: about " + mins + (mins === 1 ? " minute." : " minutes.");
    }
    el.textContent = text;
  }
}

function renderBadge() {
  const badge = $("lc-badge");
  const n = state.open ? 0 : state.unread;
  badge.hidden = n === 0;
  badge.textContent = n > 9 ? "9+" : String(n);
  $("lc-launcher").setAttribute(
    "aria-label",
    (state.open ? "Close chat" : "Open chat") + (n ? " (" + n + " unread)" : ""),
  );
  emit("unread", n);
}

function renderConn() {
  const el = $("lc-conn");
  if (state.status === "online" || state.status === "idle") el.hidden = true;
  else {
    el.hidden = false;
    el.textContent =
      state.status === "offline"
        ? "You're offline. Messages will be sent when you're back online."
        : state.status === "closed"
          ? "Chat is unavailable."
          : "Reconnecting…";
  }
}

function renderHeader() {
  const c = state.config;
  const agent = state.conv && state.conv.assignee_name;
  $("lc-title").textContent = agent || c.title || "Chat with us";
  let sub = "";
  if (state.conv && state.conv.state === "closed") sub = "Chat ended";
  else if (agent) sub = "Support agent";
  else if (!state.agentsAvailable) sub = "We're away right now";
  else sub = c.subtitle || "We usually reply in a few minutes";
  $("lc-subtitle").textContent = sub;
  const av = $("lc-avatar");
  av.textContent = "";
  const url = state.conv && state.conv.assignee_avatar_url;
  if (url && /^https?:\/\//i.test(url)) av.appendChild(h("img", { src: url, alt: "" }));
  else av.textContent = (agent || c.title || "?").trim().charAt(0).toUpperCase();
}

function renderAll() {
  const c = state.config;
  const conv = state.conv;
  const closed = !!conv && conv.state === "closed";
  const hasChat = !!conv || outbox.items().length > 0;
  const needPrechat = !hasChat && !store.get("prechat_done")
    && (prechatFields().length > 0 || departmentsOf(c).length > 0);
  const showOffline = !hasChat && !state.agentsAvailable && c.offline_form_enabled !== false;
  $("lc-greeting").textContent = hasChat ? "" : c.greeting || "Hi! How can we help you today?";
  $("lc-prechat").hidden = !(needPrechat && !showOffline);
  $("lc-offline").hidden = !showOffline;
  $("lc-rating").hidden = !closed;
  // Mail (web/mail.py): a transcript by email only when the server sends mail.
  $("lc-transcript").hidden = !(closed && c.mail_enabled === true);
  $("lc-rate-done").hidden = !(closed && state.rated.has(conv.conversation_id));
  $("lc-composer").hidden = closed || showOffline || needPrechat;
  $("lc-end").hidden = !conv || closed;
  $("lc-peek").hidden = !(state.sneakPeek && !closed);
  renderHeader();
  renderQueue();
  renderLog();
  renderBadge();
}

// ------------------------------------------------------------------ panel

function setOpen(open) {
  if (state.open === open) return;
  state.open = open;
  sessionStorage.setItem(NS + "open", open ? "1" : "0");
  $("lc").classList.toggle("open", open);
  $("lc-panel").hidden = !open;
  $("lc-launcher").setAttribute("aria-expanded", String(open));
  toHost({ type: "state", open });
  if (open) {
    state.unread = 0;
    store.set("unread", 0);
    tell({ t: "unread", n: 0 });
    setTimeout(() => {
      const target = [$("lc-input"), $("lc-prechat-fields").querySelector("input"), $("lc-off-email")]
        .find((el) => el && el.offsetParent !== null);
      if (target) target.focus();
      scrollDown();
    }, 30);
  } else {
    $("lc-launcher").focus();
  }
  renderBadge();
}

function wire() {
  $("lc-launcher").addEventListener("click", () => setOpen(!state.open));
  $("lc-min").addEventListener("click", () => setOpen(false));
  document.addEventListener("keydown", (ev) => {
    if (ev.key === "Escape" && state.open) setOpen(false);
  });
  $("lc-download").addEventListener("click", download);
  $("lc-end").addEventListener("click", () => {
    if (!state.conv) return;
    conn.request("end_chat", { conversation_id: state.conv.conversation_id })
      .then((res) => {
        if (res.conversation) setConversation(res.conversation);
      })
      .catch(() => {});
  });
  const input = $("lc-input");
  if (!PREVIEW) initFiles({ key: KEY, token: () => store.get("token"), send: sendFiles });
  input.addEventListener("input", onInput);
  input.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) {
      ev.preventDefault();
      $("lc-composer").requestSubmit();
    }
  });
  $("lc-composer").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const text = input.value;
    input.value = "";
    input.style.height = "auto";
    sendText(text);
  });
  wireForms({ conn, setProfile, sendText, setConversation, renderAll });
}

// ------------------------------------------------------------------ start

function applyConfig(c) {
  state.config = c || {};
  const colour = c.color;
  if (typeof colour === "string" && /^#[0-9a-f]{3,8}$/i.test(colour)) {
    document.documentElement.style.setProperty("--lc-accent", colour);
    document.documentElement.style.setProperty("--lc-accent-text", contrastText(colour));
  }
  state.sneakPeek = !!c.sneak_peek;
  if (c.online === false || c.open === false) state.agentsAvailable = false;
  if (c.offline_message) $("lc-offline-title").textContent = c.offline_message;
  // Promise an email reply only when this server sends mail (docs/widget.md).
  $("lc-off-done").textContent = c.mail_enabled
    ? "Thanks! We'll get back to you by email."
    : "Thanks! We got your message.";
  $("lc").classList.toggle("left", c.position === "left");
  toHost({ type: "config", position: c.position === "left" ? "left" : "right" });
  buildPrechat();
}

function contrastText(hex) {
  let x = hex.slice(1);
  if (x.length <= 4) x = x.split("").map((ch) => ch + ch).join("");
  const [r, g, b] = [0, 2, 4].map((i) => parseInt(x.slice(i, i + 2), 16) / 255);
  const lum = 0.2126 * r + 0.7152 * g + 0.0722 * b;
  return lum > 0.6 ? "#111827" : "#ffffff";
}

async function start() {
  wire();
  if (PREVIEW) {
    state.open = true;
    $("lc").classList.add("open");
    $("lc-panel").hidden = false;
    renderAll();
    toHost({ type: "ready" });
    return;
  }
  $("lc").classList.toggle("open", state.open);
  $("lc-panel").hidden = !state.open;
  $("lc-launcher").setAttribute("aria-expanded", String(state.open));
  try {
    const res = await fetch("/api/v1/widget/config?key=" + encodeURIComponent(KEY), {
      credentials: "omit",
    });
    if (res.ok) applyConfig(await res.json());
  } catch (_) {
    /* defaults until the next load */
  }
  if (store.get("conv")) state.conv = { conversation_id: store.get("conv"), state: "active" };
  else initGreeting(NS, () => setOpen(false));
  renderAll();
  document.documentElement.dataset.ready = "1";
  toHost({ type: "ready" });
  toHost({ type: "state", open: state.open });
  // Give the loader a moment to tell us which page we are on, so the handshake carries it.
  setTimeout(() => conn.start(), state.page ? 0 : 150);
}

start();
