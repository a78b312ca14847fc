// Offline messages and unanswered chats (GET /api/v1/inbox), the badge on the Inbox tab, the
// mail settings screen (Admin > Mail) and the password links mailed to agents (forgot password,
// invitation). All user text goes through textContent (h(..., {text})), never innerHTML.
import { h } from "/widget/client.js";
import { get, post, put, qs } from "./api.js";

const $ = (id) => document.getElementById(id);
const BADGE_REFRESH_MS = 15000;
let badgeTimer = null;
let ctx = { toast: () => {}, agents: () => [], me: null };

// ------------------------------------------------------------------ badge

export function startInbox(context) {
  ctx = context;
  refreshBadge();
  if (!badgeTimer) badgeTimer = setInterval(refreshBadge, BADGE_REFRESH_MS);
}

export async function refreshBadge() {
  try {
    const { open } = await get("/inbox/count");
    $("inbox-count").textContent = open ? String(open) : "";
  } catch (_) {
    /* the next refresh tries again */
  }
}

// ------------------------------------------------------------------ the inbox view

export async function renderInbox(selected, status = "open") {
  const box = $("inbox-body");
  box.textContent = "";
  let data;
  try {
    data = await get("/inbox" + qs({ status }));
  } catch (err) {
    box.appendChild(h("p", { class: "error", text: err.message }));
    return;
  }
  $("inbox-count").textContent = data.open_count ? String(data.open_count) : "";
  const filter = h("div", { class: "row" },
    ...["open", "done", "all"].map((s) => h("button", {
      type: "button", class: s === status ? "primary" : "", "aria-pressed": s === status,
      text: s[0].toUpperCase() + s.slice(1), onclick: () => renderInbox(null, s),
    })));
  box.appendChild(filter);
  if (!data.mail_enabled) {
    box.appendChild(h("p", { class: "muted", id: "inbox-no-mail",
      text: "This server sends no email (no SMTP configured): replies cannot be mailed." }));
  }
  const list = h("ul", { class: "results", id: "inbox-list", "aria-label": "Inbox" });
  const detail = h("section", { class: "transcript", id: "inbox-detail", "aria-label": "Message" });
  box.appendChild(h("div", { class: "history-cols" }, list, detail));
  if (!data.items.length) list.appendChild(h("li", { class: "muted", text: "Nothing waiting." }));
  for (const item of data.items) {
    const who = item.visitor_name || item.visitor_email || "Visitor";
    list.appendChild(h("li", { "data-conversation": item.conversation_id },
      h("button", { type: "button", onclick: () => showItem(detail, item, data.mail_enabled, status) },
        h("div", { text: who + " · " + (item.kind === "offline" ? "offline message" : "missed chat") + (item.status === "done" ? " · done" : "") }),
        h("div", { class: "muted", text: item.preview }))));
  }
  const pick = data.items.find((i) => i.conversation_id === selected);
  if (pick) showItem(detail, pick, data.mail_enabled, status);
}

function showItem(detail, item, mailEnabled, status) {
  detail.textContent = "";
  const agents = ctx.agents();
  const who = [item.visitor_name, item.visitor_email && "<" + item.visitor_email + ">"].filter(Boolean).join(" ") || "Visitor";
  detail.appendChild(h("h2", { text: who }));
  detail.appendChild(h("p", { class: "muted", text: new Date(item.created_at * 1000).toLocaleString() + " · " + item.status + (item.replies ? " · " + item.replies + " repl" + (item.replies > 1 ? "ies" : "y") : "") }));
  detail.appendChild(h("p", { class: "inbox-text", text: item.preview }));
  detail.appendChild(h("p", null, h("a", { href: "#/history/" + item.conversation_id, text: "Whole conversation" })));
  const assign = h("select", { id: "inbox-assign", "aria-label": "Assignee" },
    h("option", { value: "", text: "Unassigned" }),
    ...agents.map((a) => h("option", { value: a.agent_id, text: a.display_name, selected: a.agent_id === item.assignee_id })));
  assign.addEventListener("change", () => act(item, "assign", { agent_id: assign.value || null }, status));
  detail.appendChild(h("div", { class: "row" }, h("label", { for: "inbox-assign", text: "Assigned to" }), assign));
  if (mailEnabled && item.visitor_email) {
    const text = h("textarea", { id: "inbox-reply-text", rows: 4, maxLength: 10000, required: true });
    const form = h("form", { id: "inbox-reply", class: "stack" },
      h("label", { for: "inbox-reply-text", text: "Reply by email to " + item.visitor_email }), text,
      h("button", { type: "submit", class: "primary", text: "Send reply" }));
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      if (await act(item, "reply", { text: text.value.trim() }, status)) ctx.toast("Reply queued for " + item.visitor_email);
    });
    detail.appendChild(form);
  }
  const done = item.status === "done";
  detail.appendChild(h("button", {
    type: "button", id: "inbox-done", text: done ? "Reopen" : "Mark done",
    onclick: () => act(item, done ? "reopen" : "done", {}, status),
  }));
}

async function act(item, action, body, status) {
  try {
    await post("/inbox/" + encodeURIComponent(item.conversation_id) + "/" + action, body);
    await renderInbox(action === "done" ? null : item.conversation_id, status);
    refreshBadge();
    return true;
  } catch (err) {
    ctx.toast(err.message, "error");
    return false;
  }
}

// ------------------------------------------------------------------ Admin > Mail

export async function renderMailSettings(box) {
  box.textContent = "";
  const [n, log] = await Promise.all([get("/settings/notifications"), get("/mail/log?limit=50")]);
  const email = h("input", { id: "notify-email", type: "email", value: n.email || "", maxLength: 320 });
  const missed = h("input", { id: "notify-missed", type: "checkbox", checked: n.missed_chats });
  const form = h("form", { class: "card stack", id: "mail-settings" },
    h("h2", { text: "Notifications" }),
    h("p", { class: "muted", text: n.mail_enabled ? "Offline messages (and, if ticked, chats nobody answered) are mailed to this address." : "This server has no SMTP configured (smtp_url): nothing is mailed; the inbox still collects offline messages." }),
    h("label", { for: "notify-email", text: "Notification address" }), email,
    h("label", null, missed, " Also mail chats that ended unanswered"),
    h("button", { type: "submit", class: "primary", text: "Save" }));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      await put("/settings/notifications", { email: email.value.trim() || null, missed_chats: missed.checked });
      ctx.toast("Saved");
    } catch (err) {
      ctx.toast(err.message, "error");
    }
  });
  box.appendChild(form);
  const table = h("table", { class: "table", id: "mail-log" },
    h("thead", null, h("tr", null, ...["When", "Kind", "To", "Subject", "Status", "Attempts", "Last error"].map((t) => h("th", { text: t })))));
  const tbody = h("tbody");
  for (const m of log.entries) {
    tbody.appendChild(h("tr", null,
      h("td", { text: new Date(m.created_at * 1000).toLocaleString() }), h("td", { text: m.kind }),
      h("td", { text: m.recipient }), h("td", { text: m.subject }), h("td", { text: m.status }),
      h("td", { text: String(m.attempts) }), h("td", { text: m.last_error || "" })));
  }
  table.appendChild(tbody);
  box.appendChild(h("h2", { text: "Delivery log" }));
  box.appendChild(table);
}

// ------------------------------------------------------------------ password links (logged out)

// "#password-reset=TOKEN" or "#invitation=TOKEN": show the set-password form; true if shown.
export function handlePasswordLink() {
  const m = /^#(password-reset|invitation)=([A-Za-z0-9_-]+)$/.exec(location.hash);
  if (!m) return false;
  const token = m[2];
  history.replaceState(null, "", location.pathname); // the token leaves the address bar
  $("app-view").hidden = true;
  $("login-view").hidden = false;
  $("login-form").hidden = true;
  $("forgot-form").hidden = true;
  const form = $("reset-form");
  form.hidden = false;
  $("reset-title").textContent = m[1] === "invitation" ? "Welcome! Choose your password" : "Choose a new password";
  form.onsubmit = async (ev) => {
    ev.preventDefault();
    $("reset-error").textContent = "";
    const pw = $("reset-password").value;
    if (pw !== $("reset-password2").value) {
      $("reset-error").textContent = "The two passwords differ.";
      return;
    }
    try {
      await post("/auth/reset-password", { token, new_password: pw });
      form.hidden = true;
      $("login-form").hidden = false;
      $("login-error").textContent = "Password set. Log in with it.";
      $("login-username").focus();
    } catch (err) {
      $("reset-error").textContent = err.message;
    }
  };
  $("reset-password").focus();
  return true;
}

export function wireForgotPassword() {
  $("forgot-link").addEventListener("click", (ev) => {
    ev.preventDefault();
    $("login-form").hidden = true;
    $("forgot-form").hidden = false;
    $("forgot-done").hidden = true;
    $("forgot-username").value = $("login-username").value;
    $("forgot-username").focus();
  });
  $("forgot-back").addEventListener("click", () => {
    $("forgot-form").hidden = true;
    $("login-form").hidden = false;
  });
  $("forgot-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      await post("/auth/forgot-password", { username: $("forgot-username").value.trim() });
      $("forgot-done").hidden = false;
    } catch (err) {
      $("forgot-done").hidden = false;
      $("forgot-done").textContent = err.message;
    }
  });
}
