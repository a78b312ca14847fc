// The console's shared state (S) and the small helpers every screen uses: who may do what,
// toasts, and the names shown for chats and visitors.
import { h } from "/widget/client.js";

export const $ = (id) => document.getElementById(id);

export const S = {
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

export const isSupervisor = () => ["owner", "admin", "supervisor"].includes(S.role);
export const isAdmin = () => ["owner", "admin"].includes(S.role);

// ------------------------------------------------------------------ toasts

export function toast(text, kind) {
  const el = h("div", { class: "toast" + (kind === "error" ? " error" : ""), role: "status", text });
  $("toasts").appendChild(el);
  setTimeout(() => el.remove(), 5000);
}
// ------------------------------------------------------------------ names

export function chatName(c) {
  return (c && (c.visitor_name || visitorName(c.visitor_id))) || "Visitor";
}
export function visitorName(id) {
  const v = S.visitors.get(id);
  return (v && v.name) || (id ? "Visitor " + id.slice(0, 6) : "Visitor");
}

export function currentChat() {
  return S.openId ? S.chats.get(S.openId) || S.queue.find((q) => q.conversation_id === S.openId) : null;
}
