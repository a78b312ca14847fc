// The agent console: one WebSocket (/ws/v1/agent, cookie session) for everything live, the
// admin API for the rest. All visitor and agent text is rendered with textContent (links built
// as <a> elements by appendLinkified); nothing user-supplied ever goes through innerHTML.
import { Connection, Outbox, wsUrl, h } from "/widget/client.js";
import { get, post, setCsrf, qs } from "./api.js";
import { renderAdmin } from "./admin.js";
import { renderSecurity, secondFactor, setupSsoLogin } from "./security.js";
import {
  handlePasswordLink, refreshBadge, renderInbox, renderMailSettings, startInbox, wireForgotPassword,
} from "./inbox.js";
import { initStatus, showStatus } from "./status.js";
import { $, S, chatName, isAdmin, isSupervisor, toast, visitorName } from "./state.js";
import { alertNewChat, renderNotifyButton } from "./notify.js";
import { initChatView, logNodes, renderChatHead, renderLog, renderTyping } from "./chat_view.js";
import { stopTyping } from "./composer.js";
import { loadProfile, renderSidebar } from "./sidebar.js";
import { renderVisitors } from "./visitors.js";
import { showTranscript } from "./history.js";

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

initChatView({ upsertChat, renderLists });

// ------------------------------------------------------------------ lists
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
