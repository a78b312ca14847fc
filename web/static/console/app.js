// The agent console: one WebSocket (/ws/v1/agent, cookie session) for everything live, the
// admin API for the rest. All visitor and agent text is rendered with textContent (links built
// as <a> elements by appendLinkified); nothing user-supplied ever goes through innerHTML.
import {
  Connection, Outbox, newId, wsUrl, appendLinkified, h, formatTime,
} from "/widget/client.js";
import { get, post, setCsrf, qs } from "./api.js";
import { renderAdmin } from "./admin.js";
import { initFiles, renderFiles } from "./files.js";
import { renderSecurity, secondFactor, setupSsoLogin } from "./security.js";
import {
  handlePasswordLink, refreshBadge, renderInbox, renderMailSettings, startInbox, wireForgotPassword,
} from "./inbox.js";
import { initStatus, showStatus } from "./status.js";

const $ = (id) => document.getElementById(id);

const S = {
  me: null,
  role: "agent",
  agentId: null,
  agents: new Map(), // agent_id -> AgentSummary
  groups: [],
  canned: [],
  queue: [],
  chats: new Map(), // conversation_id -> ConversationSummary (mine, or all for supervisors)
  unread: new Map(),
  lastSeen: new Map(), // conversation_id -> highest seq seen
  events: new Map(), // conversation_id -> Map(seq -> EventView)
  synced: new Set(), // conversations whose events we hold from the first one on
  openId: null,
  typing: new Map(), // conversation_id -> {until, name, draft}
  visitors: new Map(), // visitor_id -> VisitorSummary
  trails: new Map(), // visitor_id -> [PageViewInfo] seen live
  profiles: new Map(), // visitor_id -> VisitorProfile (HTTP)
  status: "not_accepting",
  conn: null,
  outbox: null,
  suggest: { items: [], index: 0 },
  typingSentAt: 0,
  typingOn: false,
  typingTimer: null,
  notify: localStorage.getItem("lc-console-notify") === "1",
  audio: null,
};

const isSupervisor = () => ["owner", "admin", "supervisor"].includes(S.role);
const isAdmin = () => ["owner", "admin"].includes(S.role);

// ------------------------------------------------------------------ toasts

export function toast(text, kind) {
  const el = h("div", { class: "toast" + (kind === "error" ? " error" : ""), role: "status", text });
  $("toasts").appendChild(el);
  setTimeout(() => el.remove(), 5000);
}

// ------------------------------------------------------------------ login

async function boot() {
  wireForgotPassword();
  if (handlePasswordLink()) return; // a mailed set-password link (inbox.js)
  try {
    const me = await get("/me");
    startApp(me);
  } catch (_) {
    showLogin();
  }
}

function showLogin() {
  $("app-view").hidden = true;
  $("login-view").hidden = false;
  setupSsoLogin();
  $("login-username").focus();
}

$("login-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  $("login-error").textContent = "";
  try {
    const me = await post("/auth/login", {
      username: $("login-username").value.trim(),
      password: $("login-password").value,
    });
    $("login-password").value = "";
    if (me.second_factor) secondFactor(me, startApp); // no session yet: a code must follow
    else startApp(me);
  } catch (err) {
    $("login-error").textContent = err.message || "Login failed";
  }
});

$("logout-btn").addEventListener("click", async () => {
  try {
    await post("/auth/logout");
  } catch (_) {
    /* the session is gone anyway */
  }
  setCsrf(null);
  location.hash = "";
  location.reload();
});

function startApp(me) {
  S.me = me;
  setCsrf(me.csrf_token);
  S.role = me.agent.role;
  S.agentId = me.agent.id;
  $("login-view").hidden = true;
  $("app-view").hidden = false;
  $("me-name").textContent = me.agent.display_name + " · " + me.agent.role;
  $("nav-admin").hidden = !isAdmin();
  $("all-section").hidden = !isSupervisor();
  $("mode-whisper").hidden = !isSupervisor();
  $("act-join-silent").hidden = !isSupervisor();
  document.body.dataset.role = S.role;
  renderNotifyButton();
  loadReference();
  connect();
  startInbox({ toast, me, agents: () => [...S.agents.values()] });
  route();
}

async function loadReference() {
  try {
    S.canned = (await get("/canned-responses")).canned_responses || [];
  } catch (_) {
    S.canned = [];
  }
  try {
    S.groups = (await get("/groups")).groups || [];
  } catch (_) {
    S.groups = [];
  }
  try {
    S.tags = (await get("/tags")).tags || [];
  } catch (_) {
    S.tags = [];
  }
}

// ------------------------------------------------------------------ connection

function connect() {
  const outboxKey = "lc-agent:" + S.agentId + ":outbox";
  S.conn = new Connection({
    url: () => wsUrl("/ws/v1/agent"),
    hello: () => {
      const resume = {};
      for (const [id, seq] of S.lastSeen) if (S.synced.has(id)) resume[id] = seq;
      return { type: "auth", token: null, resume };
    },
    onPush,
    onStatus: (status) => {
      const el = $("conn");
      el.textContent =
        status === "online" ? "" : status === "offline" ? "Offline: waiting for the network…" : status === "closed" ? "Disconnected" : "Reconnecting…";
      document.body.dataset.conn = status;
      if (status === "online") afterConnect();
    },
    onClose: (code) => {
      if (code === 1008 || code === 4401) {
        showLogin();
        return "stop";
      }
      if (code === 4003) {
        // My role changed: start again with the new one (the outbox is kept in storage).
        location.reload();
        return "stop";
      }
      return null;
    },
  });
  S.outbox = new Outbox(outboxKey, {
    lockName: outboxKey,
    send: (item) => {
      const type = item.kind === "note" ? "add_note" : item.kind === "whisper" ? "whisper" : "send_message";
      const frame = { conversation_id: item.conversation_id, client_msg_id: item.client_msg_id, text: item.text };
      if (item.files) frame.attachments = item.files.map((f) => f.id);
      return S.conn.request(type, frame, { queue: false });
    },
    onChange: (item) => {
      if (item && item.state === "sent" && item.ack) {
        const kind = item.kind === "note" ? "note" : item.kind === "whisper" ? "whisper" : "message";
        addEvent({
          conversation_id: item.conversation_id,
          seq: item.ack.seq,
          kind,
          visibility: kind === "message" ? "all" : "agents",
          author_type: "agent",
          author_id: S.agentId,
          author_name: S.me.agent.display_name,
          body: item.text,
          data: item.files ? { attachments: item.files } : {},
          client_msg_id: item.client_msg_id,
          created_at: item.ack.created_at,
        }, true);
      }
      if (S.openId) renderLog();
    },
  });
  S.conn.start();
}

async function afterConnect() {
  if (S.openId) watch(S.openId);
  S.conn.request("list_visitors", { subscribe: true }).then((res) => {
    S.visitors.clear();
    for (const v of res.visitors || []) S.visitors.set(v.visitor_id, v);
    renderVisitors();
    renderSidebar();
  }).catch(() => {});
  if (isSupervisor()) refreshAllChats();
  S.outbox.flush();
}

async function refreshAllChats() {
  try {
    const [active, queued] = await Promise.all([
      get("/conversations" + qs({ state: "active", limit: 200 })),
      get("/conversations" + qs({ state: "queued", limit: 200 })),
    ]);
    for (const c of [...active.conversations, ...queued.conversations]) {
      const prev = S.chats.get(c.id) || {};
      S.chats.set(c.id, Object.assign({
        conversation_id: c.id, visitor_id: c.visitor_id, visitor_name: null, state: c.state,
        assignee_id: c.assignee_id, assignee_name: null, participant_ids: c.participant_ids,
        tags: c.tags, last_seq: c.last_seq, last_message_preview: null, created_at: c.created_at,
        last_activity_at: c.last_activity_at,
      }, prev, { state: c.state, assignee_id: c.assignee_id, participant_ids: c.participant_ids }));
    }
    renderLists();
  } catch (_) {
    /* the live pushes still work */
  }
}

function onPush(f) {
  switch (f.type) {
    case "auth":
      if (f.welcome) onPush(f.welcome);
      break;
    case "welcome_agent": {
      S.agentId = f.agent.agent_id;
      setStatus(f.agent.status);
      S.agents.clear();
      for (const a of f.agents || []) S.agents.set(a.agent_id, a);
      S.agents.set(f.agent.agent_id, f.agent);
      S.queue = [...(f.queue || [])];
      const keep = new Set((f.chats || []).map((c) => c.conversation_id));
      for (const [id, c] of S.chats) {
        if (!keep.has(id) && !isSupervisor() && c.state !== "closed") S.chats.delete(id);
      }
      for (const c of f.chats || []) upsertChat(c);
      renderLists();
      break;
    }
    case "event":
      addEvent(f.event);
      break;
    case "typing":
      if (f.author_type === "visitor" || f.author_id !== S.agentId) {
        S.typing.set(f.conversation_id, {
          until: f.is_typing ? Date.now() + (f.expires_in_s || 6) * 1000 : 0,
          name: f.author_name || (f.author_type === "visitor" ? "Visitor" : "Agent"),
          draft: f.draft,
        });
        if (f.conversation_id === S.openId) renderTyping();
      }
      break;
    case "conversation_update":
      upsertChat(f.conversation);
      renderLists();
      if (f.conversation.conversation_id === S.openId) renderChatHead();
      break;
    case "chat_assigned": {
      const isNew = !S.chats.has(f.conversation.conversation_id) ||
        S.chats.get(f.conversation.conversation_id).assignee_id !== S.agentId;
      upsertChat(f.conversation);
      renderLists();
      if (isNew) {
        const name = f.conversation.visitor_name || "A visitor";
        alertNewChat("New chat: " + name, f.conversation.last_message_preview || "");
        if (!S.openId) openChat(f.conversation.conversation_id);
      }
      if (f.conversation.conversation_id === S.openId) renderChatHead();
      break;
    }
    case "chat_unassigned": {
      const c = S.chats.get(f.conversation_id);
      if (c && !isSupervisor()) {
        S.chats.delete(f.conversation_id);
        if (S.openId === f.conversation_id) {
          toast("This chat was " + (f.reason === "transfer" ? "transferred" : "moved") + " away from you.");
        }
      } else if (c) c.assignee_id = null;
      renderLists();
      if (S.openId === f.conversation_id) renderChatHead();
      break;
    }
    case "queue_update": {
      const before = new Set(S.queue.map((q) => q.conversation_id));
      S.queue = [...(f.entries || [])];
      const fresh = S.queue.filter((q) => !before.has(q.conversation_id));
      if (fresh.length && S.status === "accepting") {
        alertNewChat("New chat waiting: " + (fresh[0].visitor_name || "A visitor"), fresh[0].first_message_preview || "");
      }
      renderLists();
      if (S.openId) renderChatHead();
      break;
    }
    case "visitor_update": {
      const v = f.visitor;
      if (f.change === "left") S.visitors.delete(v.visitor_id);
      else S.visitors.set(v.visitor_id, v);
      if (v.current_page && (f.change === "navigated" || f.change === "arrived")) {
        const trail = S.trails.get(v.visitor_id) || [];
        if (!trail.length || trail[trail.length - 1].url !== v.current_page.url || trail[trail.length - 1].at !== v.current_page.at) {
          trail.push(v.current_page);
        }
        S.trails.set(v.visitor_id, trail.slice(-100));
      }
      renderVisitors();
      const open = S.openId && S.chats.get(S.openId);
      if (open && open.visitor_id === v.visitor_id) renderSidebar();
      break;
    }
    case "agent_status":
      S.agents.set(f.agent.agent_id, f.agent);
      if (f.agent.agent_id === S.agentId) setStatus(f.agent.status);
      break;
    case "resync_required":
      loadHistory(f.conversation_id, f.from_seq);
      break;
    case "viewing":
      break;
    case "session_closed":
      toast("Your session ended: " + f.reason, "error");
      break;
  }
}

function upsertChat(c) {
  const prev = S.chats.get(c.conversation_id);
  const prevSeq = S.lastSeen.get(c.conversation_id) || (prev ? prev.last_seq : 0);
  S.chats.set(c.conversation_id, Object.assign({}, prev || {}, c));
  // A newer visitor message we have not seen as an event: count it as unread.
  if (prev && c.last_seq > prevSeq && c.last_message_author_type === "visitor" && c.conversation_id !== S.openId) {
    S.unread.set(c.conversation_id, (S.unread.get(c.conversation_id) || 0) + 1);
    S.lastSeen.set(c.conversation_id, c.last_seq);
  }
  if (!prev && c.awaiting_agent && c.conversation_id !== S.openId) {
    S.unread.set(c.conversation_id, Math.max(1, S.unread.get(c.conversation_id) || 0));
  }
}

function addEvent(e, local) {
  let evs = S.events.get(e.conversation_id);
  if (!evs) S.events.set(e.conversation_id, (evs = new Map()));
  if (evs.has(e.seq)) return;
  evs.set(e.seq, e);
  const seen = S.lastSeen.get(e.conversation_id) || 0;
  const fresh = e.seq > seen;
  if (fresh) S.lastSeen.set(e.conversation_id, e.seq);
  const chat = S.chats.get(e.conversation_id);
  if (chat && e.kind === "message") {
    chat.last_message_preview = e.body;
    chat.last_message_author_type = e.author_type;
    chat.last_seq = Math.max(chat.last_seq || 0, e.seq);
  }
  if (e.kind === "message" && e.author_type === "visitor") {
    S.typing.delete(e.conversation_id);
    if (fresh && !local && e.conversation_id !== S.openId) {
      S.unread.set(e.conversation_id, (S.unread.get(e.conversation_id) || 0) + 1);
    }
  }
  if (e.kind === "status" && e.data && e.data.state && chat) chat.state = e.data.state;
  if (e.conversation_id === S.openId) {
    renderLog();
    if (e.kind !== "message") renderChatHead();
    if (e.kind === "message" && e.author_type === "visitor") renderTyping();
  }
  renderLists();
}

async function loadHistory(convId, afterSeq) {
  let after = afterSeq || 0;
  for (let i = 0; i < 50; i++) {
    const res = await S.conn.request("get_history", { conversation_id: convId, after_seq: after, limit: 200 });
    for (const e of res.events || []) {
      addEvent(e, true);
      after = Math.max(after, e.seq);
    }
    if (!res.has_more) break;
  }
}

async function watch(convId) {
  const after = S.synced.has(convId) ? S.lastSeen.get(convId) || 0 : 0;
  try {
    const res = await S.conn.request("watch", { conversation_id: convId, after_seq: after });
    S.synced.add(convId);
    if (res.conversation) {
      upsertChat(res.conversation);
      if (!S.events.has(convId)) S.events.set(convId, new Map());
      renderLists();
      if (convId === S.openId) {
        renderChatHead();
        renderLog();
      }
    }
  } catch (err) {
    if (err.code === "resync_required") loadHistory(convId, 0).catch(() => {});
    else if (convId === S.openId) toast("Could not open the chat: " + err.message, "error");
  }
}

function setStatus(status) {
  S.status = showStatus(status);
}

initStatus({
  request: (status) => S.conn.request("set_status", { status }, { queue: false }),
  onError: (err) => toast("Could not change status: " + err.message, "error"),
  onChange: (status) => { S.status = status; },
});

// ------------------------------------------------------------------ notifications

function renderNotifyButton() {
  const btn = $("notify-btn");
  btn.textContent = S.notify ? "Notifications on" : "Enable notifications";
  btn.setAttribute("aria-pressed", String(S.notify));
}

$("notify-btn").addEventListener("click", async () => {
  S.notify = !S.notify;
  if (S.notify) {
    if ("Notification" in window && Notification.permission === "default") {
      try {
        await Notification.requestPermission();
      } catch (_) {
        /* denied */
      }
    }
    ensureAudio();
  }
  localStorage.setItem("lc-console-notify", S.notify ? "1" : "0");
  renderNotifyButton();
});

function ensureAudio() {
  if (!S.audio && window.AudioContext) S.audio = new AudioContext();
  if (S.audio && S.audio.state === "suspended") S.audio.resume();
}

function beep() {
  ensureAudio();
  const ctx = S.audio;
  if (!ctx) return;
  const now = ctx.currentTime;
  [880, 1320].forEach((freq, i) => {
    const osc = ctx.createOscillator();
    const gain = ctx.createGain();
    osc.frequency.value = freq;
    gain.gain.setValueAtTime(0.0001, now + i * 0.16);
    gain.gain.exponentialRampToValueAtTime(0.2, now + i * 0.16 + 0.02);
    gain.gain.exponentialRampToValueAtTime(0.0001, now + i * 0.16 + 0.15);
    osc.connect(gain).connect(ctx.destination);
    osc.start(now + i * 0.16);
    osc.stop(now + i * 0.16 + 0.16);
  });
}

function alertNewChat(title, body) {
  document.title = "● " + title + " · livechat";
  setTimeout(() => (document.title = "Agent console · livechat"), 8000);
  if (!S.notify) return;
  try {
    beep();
  } catch (_) {
    /* no audio device */
  }
  if ("Notification" in window && Notification.permission === "granted" && document.visibilityState !== "visible") {
    const n = new Notification(title, { body: String(body).slice(0, 140), tag: "livechat-new" });
    n.onclick = () => {
      window.focus();
      n.close();
    };
  }
}

// ------------------------------------------------------------------ lists

function chatName(c) {
  return (c && (c.visitor_name || visitorName(c.visitor_id))) || "Visitor";
}
function visitorName(id) {
  const v = S.visitors.get(id);
  return (v && v.name) || (id ? "Visitor " + id.slice(0, 6) : "Visitor");
}

function listItem(convId, name, preview, unread) {
  const btn = h("button", {
    type: "button",
    "data-conv": convId,
    "aria-current": convId === S.openId ? "true" : null,
    onclick: () => openChat(convId),
  },
    h("span", { class: "name", text: name }),
    h("span", { class: "unread", text: unread ? String(unread) : "", "aria-label": unread ? unread + " unread" : null }),
    h("span", { class: "preview", text: preview || "" }),
  );
  return h("li", null, btn);
}

function renderLists() {
  const q = $("queue-list");
  q.textContent = "";
  for (const e of S.queue) {
    q.appendChild(listItem(e.conversation_id, (e.visitor_name || visitorName(e.visitor_id)) + " · #" + e.position,
      e.first_message_preview, S.unread.get(e.conversation_id)));
  }
  $("queue-count").textContent = S.queue.length ? String(S.queue.length) : "";
  const mine = [...S.chats.values()]
    .filter((c) => c.state !== "closed" && (c.assignee_id === S.agentId || (c.participant_ids || []).includes(S.agentId)))
    .sort((a, b) => (b.last_activity_at || 0) - (a.last_activity_at || 0));
  const m = $("mine-list");
  m.textContent = "";
  for (const c of mine) m.appendChild(listItem(c.conversation_id, chatName(c), c.last_message_preview, S.unread.get(c.conversation_id)));
  $("mine-count").textContent = mine.length ? String(mine.length) : "";
  if (isSupervisor()) {
    const all = [...S.chats.values()].filter((c) => c.state !== "closed");
    const a = $("all-list");
    a.textContent = "";
    for (const c of all) {
      const who = c.assignee_name || (c.assignee_id && S.agents.get(c.assignee_id) && S.agents.get(c.assignee_id).display_name) || (c.state === "queued" ? "queued" : "");
      a.appendChild(listItem(c.conversation_id, chatName(c) + (who ? " → " + who : ""), c.last_message_preview, S.unread.get(c.conversation_id)));
    }
    $("all-count").textContent = all.length ? String(all.length) : "";
  }
  const total = [...S.unread.values()].reduce((x, y) => x + y, 0);
  document.body.dataset.unread = String(total);
}

// ------------------------------------------------------------------ chat view

function openChat(convId) {
  if (location.hash !== "#/chats/" + convId) {
    location.hash = "#/chats/" + convId;
    return; // route() comes back here
  }
  if (S.openId && S.openId !== convId) {
    stopTyping();
    S.conn.request("unwatch", { conversation_id: S.openId }, { queue: false }).catch(() => {});
  }
  const changed = S.openId !== convId;
  S.openId = convId;
  S.unread.delete(convId);
  $("chat-empty").hidden = true;
  $("chat-pane").hidden = false;
  if (changed) {
    $("chat-log").textContent = "";
    logNodes.clear();
    for (const p of ["panel-transfer", "panel-invite", "panel-close"]) $(p).hidden = true;
  }
  renderChatHead();
  renderLog();
  renderTyping();
  renderLists();
  renderSidebar();
  loadProfile(convId);
  if (S.conn && S.conn.ready) watch(convId);
  $("composer-input").focus();
}

function currentChat() {
  return S.openId ? S.chats.get(S.openId) || S.queue.find((q) => q.conversation_id === S.openId) : null;
}

function renderChatHead() {
  const c = currentChat();
  if (!c) return;
  $("chat-title").textContent = chatName(c);
  const assignee = c.assignee_id ? (S.agents.get(c.assignee_id) || {}).display_name || c.assignee_name || "an agent" : null;
  const state = c.state || "queued";
  let sub = state === "queued" ? "Waiting in the queue" : state === "closed" ? "Closed" : "With " + (c.assignee_id === S.agentId ? "you" : assignee);
  if (c.tags && c.tags.length) sub += " · tags: " + c.tags.join(", ");
  $("chat-sub").textContent = sub;
  document.querySelector(".chat-pane").dataset.state = state;
  const mineNow = c.assignee_id === S.agentId;
  const participant = mineNow || (c.participant_ids || []).includes(S.agentId);
  $("act-accept").hidden = state !== "queued";
  $("act-join").hidden = state !== "active" || participant;
  $("act-join-silent").hidden = !isSupervisor() || state !== "active" || participant;
  $("act-transfer").hidden = state === "closed" || !(participant || isSupervisor());
  $("act-invite").hidden = state !== "active" || !(participant || isSupervisor());
  $("act-close").hidden = state === "closed" || !(participant || isSupervisor());
  $("act-leave").hidden = !participant || mineNow || state === "closed";
  $("composer").hidden = state === "closed";
}

const logNodes = new Map();

function msgNode(key, e, stateName, item) {
  let li = logNodes.get(key);
  const kind = e.kind;
  if (!li) {
    const out = e.author_type === "agent";
    li = h("li", { class: "msg" + (out ? " out" : "") + (kind === "note" ? " note" : kind === "whisper" ? " whisper" : "") });
    const who = e.author_type === "visitor" ? chatName(currentChat()) : e.author_name || (e.author_type === "system" ? "System" : "Agent");
    const label = kind === "note" ? who + " · internal note" : kind === "whisper" ? who + " · whisper (agents only)" : who;
    li.appendChild(h("span", { class: "who", text: label }));
    const body = h("div", { class: "text" });
    appendLinkified(body, e.body);
    li.appendChild(body);
    li.appendChild(h("span", { class: "meta" }));
    renderFiles(li, (e.data && e.data.attachments) || e.files);
    li.dataset.kind = kind;
    li.dataset.author = e.author_type;
    logNodes.set(key, li);
  }
  if (li.dataset.state !== stateName) {
    li.dataset.state = stateName;
    const meta = li.querySelector(".meta");
    meta.textContent = "";
    if (stateName === "sending") meta.textContent = "Sending…";
    else if (stateName === "failed") {
      meta.append("Not sent" + (item && item.error ? " (" + item.error + ")" : "") + ". ");
      meta.appendChild(h("button", { class: "retry", type: "button", text: "Retry", onclick: () => S.outbox.retry(item.client_msg_id) }));
    } else meta.textContent = formatTime(e.created_at) + (e.author_type === "agent" ? " · sent" : "");
  }
  return li;
}

function sysText(e) {
  const who = e.author_name || (e.author_id && (S.agents.get(e.author_id) || {}).display_name) || "An agent";
  const d = e.data || {};
  const agentName = (id) => d.agent_name || (id && (S.agents.get(id) || {}).display_name) || "an agent";
  switch (e.kind) {
    case "assigned": return "Assigned to " + (d.agent_name || agentName(d.agent_id || e.author_id));
    case "joined": return (d.agent_name || who) + " joined" + (d.invited_by ? " (invited)" : "") + (e.visibility === "agents" ? " silently" : "");
    case "left": return who + " left";
    case "transferred": return (who === "An agent" ? "" : who + " transferred the chat to ").replace(/^$/, "Transferred to ") + (d.to_group_id ? "group " + (d.group_name || groupName(d.to_group_id)) : agentName(d.to_agent_id)) + (d.reason ? " (" + d.reason + ")" : "");
    case "status": return "Chat " + (d.state || "updated") + (d.reason ? " (" + d.reason + ")" : "");
    case "rating": return "Visitor rated " + (d.rating || "?") + "/5" + (e.body || d.comment ? ": " + (e.body || d.comment) : "");
    case "tagged": return "Tags: " + ((d.tags || d.add || []).join(", ") || "changed");
    case "offline_message": return "Offline message: " + (e.body || "");
    default: return e.kind;
  }
}

function groupName(id) {
  const g = S.groups.find((x) => x.id === id);
  return g ? g.name : id;
}

function renderLog() {
  const log = $("chat-log");
  const convId = S.openId;
  if (!convId) return;
  const evs = S.events.get(convId) || new Map();
  const wanted = [];
  const done = new Set();
  for (const seq of [...evs.keys()].sort((a, b) => a - b)) {
    const e = evs.get(seq);
    if (e.client_msg_id && e.author_type === "agent") done.add(e.client_msg_id);
    if (e.kind === "message" || e.kind === "note" || e.kind === "whisper") {
      const key = e.client_msg_id && e.author_type === "agent" ? "c" + e.client_msg_id : "e" + seq;
      wanted.push(msgNode(key, e, "sent"));
    } else {
      const key = "e" + seq;
      if (!logNodes.has(key)) logNodes.set(key, h("li", { class: "sys", text: sysText(e) }));
      wanted.push(logNodes.get(key));
    }
  }
  for (const item of S.outbox.items()) {
    if (item.conversation_id !== convId || done.has(item.client_msg_id)) continue;
    const e = { kind: item.kind === "note" ? "note" : item.kind === "whisper" ? "whisper" : "message", author_type: "agent", author_name: S.me.agent.display_name, body: item.text, created_at: item.created_at, files: item.files };
    wanted.push(msgNode("c" + item.client_msg_id, e, item.state, item));
  }
  const keep = new Set(wanted);
  for (const child of [...log.children]) if (!keep.has(child)) child.remove();
  wanted.forEach((li, i) => {
    if (log.children[i] !== li) log.insertBefore(li, log.children[i] || null);
  });
  log.scrollTop = log.scrollHeight;
}

function renderTyping() {
  const t = S.openId && S.typing.get(S.openId);
  const el = $("chat-typing");
  if (!t || t.until <= Date.now()) {
    el.textContent = "";
    return;
  }
  el.textContent = t.name + " is typing…" + (t.draft ? " “" + t.draft + "”" : "");
  el.dataset.draft = t.draft || "";
  setTimeout(renderTyping, t.until - Date.now() + 50);
}

// Actions
async function act(type, fields, okText) {
  try {
    const res = await S.conn.request(type, Object.assign({ conversation_id: S.openId }, fields), { queue: false });
    if (res && res.conversation) upsertChat(res.conversation);
    renderLists();
    renderChatHead();
    if (okText) toast(okText);
    return res;
  } catch (err) {
    toast(err.message || "Failed", "error");
    return null;
  }
}

$("act-accept").addEventListener("click", () => act("accept", {}));
$("act-join").addEventListener("click", () => act("join", { silent: false }));
$("act-join-silent").addEventListener("click", () => act("join", { silent: true }, "Joined silently: the visitor was not told."));
$("act-leave").addEventListener("click", () => act("leave", {}));

function togglePanel(id) {
  for (const p of ["panel-transfer", "panel-invite", "panel-close"]) $(p).hidden = p !== id || !$(p).hidden;
  const panel = $(id);
  if (!panel.hidden) {
    const first = panel.querySelector("select, input");
    if (first) first.focus();
  }
}
document.querySelectorAll("[data-cancel]").forEach((b) => b.addEventListener("click", (ev) => {
  ev.target.closest("form").hidden = true;
}));

async function agentOptions(select, withGroups) {
  // The directory comes from the API (every agent of the workspace), the status from live pushes.
  try {
    S.directory = (await get("/agents")).agents.filter((a) => a.enabled);
  } catch (_) {
    S.directory = S.directory || [];
  }
  const ids = new Set([...S.directory.map((a) => a.id), ...S.agents.keys()]);
  ids.delete(S.agentId);
  select.textContent = "";
  const og = h("optgroup", { label: "Agents" });
  for (const id of ids) {
    const live = S.agents.get(id);
    const dir = S.directory.find((a) => a.id === id);
    const name = (live && live.display_name) || (dir && dir.display_name) || id;
    const status = live ? live.status.replace("_", " ") : "offline";
    og.appendChild(h("option", { value: "agent:" + id, text: name + " (" + status + ")" }));
  }
  select.appendChild(og);
  if (withGroups && S.groups.length) {
    const gg = h("optgroup", { label: "Groups" });
    for (const g of S.groups) gg.appendChild(h("option", { value: "group:" + g.id, text: g.name }));
    select.appendChild(gg);
  }
}

$("act-transfer").addEventListener("click", async () => {
  await agentOptions($("transfer-target"), true);
  togglePanel("panel-transfer");
});
$("act-invite").addEventListener("click", async () => {
  await agentOptions($("invite-target"), false);
  togglePanel("panel-invite");
});
$("act-close").addEventListener("click", () => {
  const c = currentChat();
  $("close-tags").value = c && c.tags ? c.tags.join(", ") : "";
  // With a tag catalogue, only its tags are accepted: say which they are.
  $("close-tags").placeholder = S.tags && S.tags.length ? "from: " + S.tags.join(", ") : "billing, resolved";
  togglePanel("panel-close");
});
$("panel-transfer").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const [kind, id] = $("transfer-target").value.split(":");
  const fields = kind === "group" ? { to_group_id: id } : { to_agent_id: id };
  const reason = $("transfer-reason").value.trim();
  if (reason) fields.reason = reason;
  if (await act("transfer", fields, "Chat transferred")) $("panel-transfer").hidden = true;
});
$("panel-invite").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const id = $("invite-target").value.split(":")[1];
  if (await act("invite", { agent_id: id }, "Agent invited")) $("panel-invite").hidden = true;
});
$("panel-close").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const tags = $("close-tags").value.split(",").map((t) => t.trim()).filter(Boolean);
  if (await act("close", { tags }, "Chat closed")) $("panel-close").hidden = true;
});

// Composer
function composerMode() {
  const checked = document.querySelector("input[name=mode]:checked");
  return checked ? checked.value : "reply";
}
document.querySelectorAll("input[name=mode]").forEach((r) => r.addEventListener("change", () => {
  $("composer").className = "composer mode-" + composerMode();
  $("composer-input").placeholder = composerMode() === "reply" ? "Type a reply… (/ for canned responses, Enter to send)" : composerMode() === "note" ? "Internal note: only agents see it" : "Whisper: only the chat's agents see it";
}));

function sendComposer() {
  const input = $("composer-input");
  let text = input.value.trim();
  if (!text || !S.openId) return;
  const exact = /^\/(\S+)$/.exec(text);
  if (exact) {
    const c = S.canned.find((x) => x.shortcut === exact[1]);
    if (c) text = c.text;
  }
  input.value = "";
  hideSuggest();
  stopTyping();
  S.outbox.add({ client_msg_id: newId(), conversation_id: S.openId, text, kind: composerMode() });
  renderLog();
}

initFiles({
  convId: () => S.openId,
  send: (convId, files) => {
    S.outbox.add({ client_msg_id: newId(), conversation_id: convId, text: "", kind: "reply", files });
    renderLog();
  },
  onError: (text) => toast(text, "error"),
});

$("composer").addEventListener("submit", (ev) => {
  ev.preventDefault();
  sendComposer();
});

$("composer-input").addEventListener("keydown", (ev) => {
  const sug = S.suggest;
  if (!$("canned-suggest").hidden && sug.items.length) {
    if (ev.key === "ArrowDown" || ev.key === "ArrowUp") {
      ev.preventDefault();
      sug.index = (sug.index + (ev.key === "ArrowDown" ? 1 : sug.items.length - 1)) % sug.items.length;
      renderSuggest();
      return;
    }
    if (ev.key === "Enter" || ev.key === "Tab") {
      ev.preventDefault();
      pickCanned(sug.items[sug.index]);
      return;
    }
    if (ev.key === "Escape") {
      hideSuggest();
      return;
    }
  }
  if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) {
    ev.preventDefault();
    sendComposer();
  }
});

$("composer-input").addEventListener("input", () => {
  const text = $("composer-input").value;
  const m = /^\/(\S*)$/.exec(text);
  if (m) {
    const items = S.canned.filter((c) => c.shortcut.toLowerCase().startsWith(m[1].toLowerCase())).slice(0, 8);
    S.suggest = { items, index: 0 };
    if (items.length) renderSuggest();
    else hideSuggest();
  } else hideSuggest();
  if (composerMode() === "reply") typingTick(text);
});

function renderSuggest() {
  const ul = $("canned-suggest");
  ul.textContent = "";
  S.suggest.items.forEach((c, i) => {
    ul.appendChild(h("li", {
      role: "option",
      id: "canned-" + i,
      "aria-selected": i === S.suggest.index ? "true" : "false",
      onmousedown: (ev) => {
        ev.preventDefault();
        pickCanned(c);
      },
    }, h("b", { text: "/" + c.shortcut }), c.text));
  });
  ul.hidden = false;
  $("composer-input").setAttribute("aria-activedescendant", "canned-" + S.suggest.index);
}

function hideSuggest() {
  $("canned-suggest").hidden = true;
  $("composer-input").removeAttribute("aria-activedescendant");
}

function pickCanned(c) {
  $("composer-input").value = c.text;
  hideSuggest();
  $("composer-input").focus();
}

function typingTick(text) {
  const c = currentChat();
  if (!c || c.state === "closed" || !S.conn.ready) return;
  if (!text) {
    stopTyping();
    return;
  }
  const now = Date.now();
  if (!S.typingOn || now - S.typingSentAt > 2000) {
    S.typingOn = true;
    S.typingSentAt = now;
    S.conn.request("typing", { conversation_id: S.openId, is_typing: true }, { queue: false }).catch(() => {});
  }
  clearTimeout(S.typingTimer);
  S.typingTimer = setTimeout(stopTyping, 4000);
}

function stopTyping() {
  clearTimeout(S.typingTimer);
  if (S.typingOn && S.openId && S.conn.ready) {
    S.conn.request("typing", { conversation_id: S.openId, is_typing: false }, { queue: false }).catch(() => {});
  }
  S.typingOn = false;
}

// ------------------------------------------------------------------ visitor sidebar

async function loadProfile(convId) {
  const c = S.chats.get(convId) || S.queue.find((q) => q.conversation_id === convId);
  if (!c || !c.visitor_id) return;
  try {
    const p = await get("/visitors/" + encodeURIComponent(c.visitor_id));
    S.profiles.set(c.visitor_id, p);
    if (S.openId === convId) renderSidebar();
  } catch (_) {
    /* live data still shows */
  }
}

function safeLink(url, text) {
  const span = h("span");
  let ok = false;
  try {
    const u = new URL(url);
    ok = u.protocol === "http:" || u.protocol === "https:";
  } catch (_) {
    ok = false;
  }
  if (ok) span.appendChild(h("a", { href: url, target: "_blank", rel: "noopener noreferrer nofollow", text: text || url }));
  else span.textContent = text || url || "";
  return span;
}

function ago(ts) {
  if (!ts) return "";
  const s = Math.max(0, Date.now() / 1000 - ts);
  if (s < 60) return Math.round(s) + "s ago";
  if (s < 3600) return Math.round(s / 60) + " min ago";
  return new Date(ts * 1000).toLocaleString();
}

function renderSidebar() {
  const box = $("sidebar");
  box.textContent = "";
  const c = currentChat();
  if (!c) return;
  const v = S.visitors.get(c.visitor_id);
  const p = S.profiles.get(c.visitor_id);
  const pv = p ? p.visitor : null;
  box.appendChild(h("h2", { text: (v && v.name) || (pv && pv.name) || chatName(c) }));
  const dl = h("dl");
  const row = (k, val) => {
    if (val == null || val === "") return;
    dl.appendChild(h("dt", { text: k }));
    dl.appendChild(h("dd", null, typeof val === "string" ? document.createTextNode(val) : val));
  };
  row("Status", v ? (v.online ? "Online" : "Offline") : pv && pv.online ? "Online" : "Offline");
  row("Email", (v && v.email) || (pv && pv.email));
  row("Current page", v && v.current_page ? safeLink(v.current_page.url, v.current_page.title || v.current_page.url) : null);
  const views = p && p.page_views ? p.page_views : [];
  const referrer = (v && v.current_page && v.current_page.referrer) || (views.length ? views[views.length - 1].referrer : null);
  row("Referrer", referrer ? safeLink(referrer) : null);
  row("Device", v ? [v.device, v.browser && v.browser + (v.browser_version ? " " + v.browser_version : ""), v.os].filter(Boolean).join(" · ") : pv && pv.user_agent);
  row("Visits", String((v && v.visits) || (pv && pv.visits) || 1) + ((v && v.visits > 1) || (pv && pv.visits > 1) ? " (returning)" : ""));
  row("IP", (v && v.ip) || (pv && pv.ip));
  if (pv && pv.external_id) row("User id", pv.external_id + " (verified)");
  box.appendChild(dl);

  const attrs = Object.assign({}, pv ? pv.attributes : {}, v ? v.attributes : {});
  if (Object.keys(attrs).length) {
    box.appendChild(h("h3", { text: "Attributes" }));
    const adl = h("dl");
    for (const [k, val] of Object.entries(attrs)) {
      adl.appendChild(h("dt", { text: k }));
      adl.appendChild(h("dd", { text: String(val) }));
    }
    box.appendChild(adl);
  }

  // Pages visited: the stored history merged with what arrived live since.
  const pages = [];
  const seen = new Set();
  for (const x of [...views.slice().reverse(), ...(S.trails.get(c.visitor_id) || [])]) {
    const k = x.url + "@" + Math.round(x.at);
    if (seen.has(k)) continue;
    seen.add(k);
    pages.push(x);
  }
  box.appendChild(h("h3", { text: "Pages visited" }));
  const ol = h("ol", { class: "pages" });
  for (const x of pages.slice(-30).reverse()) {
    ol.appendChild(h("li", null, safeLink(x.url, x.title || x.url), h("span", { class: "muted", text: " " + formatTime(x.at) })));
  }
  if (!pages.length) ol.appendChild(h("li", { class: "muted", text: "None yet" }));
  box.appendChild(ol);

  box.appendChild(h("h3", { text: "Past conversations" }));
  const ul = h("ul");
  const past = p && p.conversations ? p.conversations.filter((x) => x.id !== c.conversation_id) : [];
  for (const x of past.slice(0, 20)) {
    ul.appendChild(h("li", null, h("a", { href: "#/history/" + x.id, text: new Date(x.created_at * 1000).toLocaleDateString() + " · " + x.state + (x.tags && x.tags.length ? " · " + x.tags.join(", ") : "") })));
  }
  if (!past.length) ul.appendChild(h("li", { class: "muted", text: "None" }));
  box.appendChild(ul);
}

// ------------------------------------------------------------------ visitors view

const visitorRows = new Map(); // visitor_id -> {tr, cells, chatKey}

function renderVisitors() {
  const n = S.visitors.size;
  $("visitor-count").textContent = n ? String(n) : "";
  if ($("view-visitors").hidden) return;
  const body = $("visitors-body");
  const list = [...S.visitors.values()].sort((a, b) => (b.arrived_at || 0) - (a.arrived_at || 0));
  // Rows are updated in place, so a half-typed "start chat" message survives live updates.
  for (const [id, row] of visitorRows) {
    if (!S.visitors.has(id)) {
      row.tr.remove();
      visitorRows.delete(id);
    }
  }
  list.forEach((v, i) => {
    let row = visitorRows.get(v.visitor_id);
    if (!row) {
      const cells = [0, 1, 2, 3, 4, 5, 6].map(() => h("td"));
      row = { tr: h("tr", { "data-visitor": v.visitor_id }, cells), cells, chatKey: null };
      visitorRows.set(v.visitor_id, row);
    }
    const [who, page, pages, visits, device, arrived, chat] = row.cells;
    who.textContent = "";
    who.append(h("b", { text: v.name || "Visitor " + v.visitor_id.slice(0, 6) }));
    if (v.email) who.append(h("div", { class: "muted", text: v.email }));
    if (v.greeting) who.append(h("div", { class: "muted trigger-fired", text: "Trigger \u201c" + v.greeting.trigger_name + "\u201d fired: " + v.greeting.action }));
    page.textContent = "";
    if (v.current_page) page.append(safeLink(v.current_page.url, v.current_page.title || v.current_page.url));
    pages.textContent = String(v.pages_viewed || 0);
    visits.textContent = String(v.visits || 1);
    device.textContent = [v.device, v.browser, v.os].filter(Boolean).join(" · ");
    arrived.textContent = ago(v.arrived_at);
    const chatKey = v.conversation_id || "none";
    if (row.chatKey !== chatKey) {
      row.chatKey = chatKey;
      chat.textContent = "";
      if (v.conversation_id) {
        chat.appendChild(h("a", { href: "#/chats/" + v.conversation_id, text: "Open chat" }));
      } else {
        chat.appendChild(h("button", { type: "button", text: "Start chat", onclick: () => startChatForm(chat, v) }));
      }
    }
    if (body.children[i] !== row.tr) body.insertBefore(row.tr, body.children[i] || null);
  });
  $("visitors-empty").hidden = list.length > 0;
}

function startChatForm(cell, v) {
  cell.textContent = "";
  const input = h("input", { placeholder: "Hello! Can I help you?", "aria-label": "First message", maxLength: 10000, value: "Hello! Can I help you with anything?" });
  const form = h("form", { class: "row" }, input, h("button", { type: "submit", class: "primary", text: "Send" }));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      const res = await S.conn.request("start_chat", { visitor_id: v.visitor_id, client_msg_id: newId(), text: input.value.trim() || "Hello!" });
      location.hash = "#/chats/" + res.conversation_id;
    } catch (err) {
      toast(err.message, "error");
    }
  });
  cell.appendChild(form);
  input.focus();
}

// ------------------------------------------------------------------ history

$("history-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const q = $("history-q").value.trim();
  if (!q) return;
  const ul = $("history-results");
  ul.textContent = "";
  try {
    const res = await get("/conversations/search" + qs({ q, limit: 50 }));
    for (const hit of res.hits || []) {
      ul.appendChild(h("li", null, h("button", { type: "button", onclick: () => (location.hash = "#/history/" + hit.conversation_id) },
        h("div", { class: "muted", text: new Date(hit.created_at * 1000).toLocaleString() }),
        h("div", { class: "snippet" }, (hit.snippet_parts || [{ text: hit.snippet, match: false }]).map((p) => (p.match ? h("mark", { text: p.text }) : p.text))))));
    }
    if (!ul.children.length) ul.appendChild(h("li", { class: "muted", text: "No matches." }));
  } catch (err) {
    toast(err.message, "error");
  }
});

$("history-recent").addEventListener("click", async () => {
  const ul = $("history-results");
  ul.textContent = "";
  try {
    const res = await get("/conversations" + qs({ state: "closed", limit: 50 }));
    for (const c of res.conversations || []) {
      ul.appendChild(h("li", null, h("button", { type: "button", onclick: () => (location.hash = "#/history/" + c.id) },
        h("div", { text: new Date(c.created_at * 1000).toLocaleString() + " · " + (c.close_reason || c.state) }),
        h("div", { class: "muted", text: (c.tags || []).join(", ") + (c.rating ? " · rated " + c.rating + "/5" : "") }))));
    }
    if (!ul.children.length) ul.appendChild(h("li", { class: "muted", text: "No closed chats yet." }));
  } catch (err) {
    toast(err.message, "error");
  }
});

async function showTranscript(convId) {
  const box = $("history-transcript");
  box.textContent = "";
  try {
    const base = "/conversations/" + encodeURIComponent(convId) + "/transcript?limit=500";
    const t = await get(base);
    // Pages of 500: follow next_after_seq until the whole conversation is here.
    for (let page = t; page.has_more; ) {
      page = await get(base + "&after_seq=" + page.next_after_seq);
      t.events.push(...page.events);
    }
    const c = t.conversation;
    box.appendChild(h("div", { class: "chat-head" }, h("div", null,
      h("h2", { text: "Conversation " + c.id.slice(0, 8) }),
      h("p", { class: "muted", text: new Date(c.created_at * 1000).toLocaleString() + " · " + c.state + (c.close_reason ? " (" + c.close_reason + ")" : "") + (c.tags.length ? " · " + c.tags.join(", ") : "") + (c.rating ? " · rated " + c.rating + "/5" : "") }))));
    const ol = h("ol", { class: "log" });
    for (const e of t.events) {
      if (e.kind === "message" || e.kind === "note" || e.kind === "whisper") {
        const li = h("li", { class: "msg" + (e.author_type === "agent" ? " out" : "") + (e.kind !== "message" ? " " + e.kind : "") },
          h("span", { class: "who", text: (e.author_type === "visitor" ? "Visitor" : (S.agents.get(e.author_id) || {}).display_name || e.author_type) + (e.kind !== "message" ? " · " + e.kind : "") }));
        const body = h("div", { class: "text" });
        appendLinkified(body, e.body);
        li.appendChild(body);
        li.appendChild(h("span", { class: "meta", text: new Date(e.created_at * 1000).toLocaleString() }));
        renderFiles(li, e.data && e.data.attachments);
        ol.appendChild(li);
      } else ol.appendChild(h("li", { class: "sys", text: sysText(e) }));
    }
    box.appendChild(ol);
  } catch (err) {
    box.appendChild(h("p", { class: "error", text: err.message }));
  }
}

// ------------------------------------------------------------------ routing

function route() {
  if (!S.me) return;
  const parts = (location.hash.replace(/^#\/?/, "") || "chats").split("/");
  const views = ["chats", "visitors", "history", "inbox", "admin", "security"];
  const view = views.includes(parts[0]) ? parts[0] : "chats";
  for (const v of views) $("view-" + v).hidden = v !== view;
  document.querySelectorAll(".tabs a").forEach((a) => {
    if (a.dataset.view === view) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  });
  if (view === "chats" && parts[1]) openChat(decodeURIComponent(parts[1]));
  if (view === "visitors") renderVisitors();
  if (view === "history" && parts[1]) showTranscript(decodeURIComponent(parts[1]));
  if (view === "security") renderSecurity($("security-body"), { me: S.me, toast }).catch((err) => toast(err.message, "error"));
  if (view === "inbox") renderInbox(parts[1] ? decodeURIComponent(parts[1]) : null);
  else refreshBadge();
  if (view === "admin") {
    if (!isAdmin()) {
      location.hash = "#/chats";
      return;
    }
    const section = parts[1] || "agents";
    document.querySelectorAll(".subnav a").forEach((a) => {
      if (a.getAttribute("href") === "#/admin/" + section) a.setAttribute("aria-current", "page");
      else a.removeAttribute("aria-current");
    });
    if (section === "mail") {
      renderMailSettings($("admin-body")).catch((err) => toast(err.message, "error"));
      return;
    }
    renderAdmin(section, $("admin-body"), { me: S.me, toast, reload: loadReference });
  }
}

addEventListener("hashchange", route);
boot();
