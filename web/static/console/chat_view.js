// The open chat: its header and action buttons (accept, join, transfer, invite, close), the
// message log with the outbox's unsent messages, and who is typing.
import { appendLinkified, formatTime, h } from "/widget/client.js";
import { get } from "./api.js";
import { renderFiles } from "./files.js";
import { $, S, chatName, currentChat, isSupervisor, toast } from "./state.js";

// Set by app.js, which owns the chat list and the live conversation state.
let upsertChat = null;
let renderLists = null;

export function initChatView(deps) {
  upsertChat = deps.upsertChat;
  renderLists = deps.renderLists;
}

export function renderChatHead() {
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

export const logNodes = new Map();

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

export function sysText(e) {
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

export function renderLog() {
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

export function renderTyping() {
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
