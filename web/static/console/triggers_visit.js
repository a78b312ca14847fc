// Admin → Triggers, the page-view part (issue 16): triggers that fire while a visitor browses,
// before any chat. Conditions: time on the page, time on the site (this visit), besides the
// page URL, returning visitor and attribute the queued-chat triggers share. Actions: a greeting
// (a message card in the widget from the sender name, the workspace's name when empty), an
// invitation (the widget's invitation card), or a tag / group for the chat the visitor starts.
// A greeting or invitation shows only within business hours and, unless "Only when an agent is
// available" is cleared, while an agent accepts chats (docs/admin-api.md).
import { h } from "/widget/client.js";

export const EVENTS = [["queued", "A chat is queued"], ["page_view", "A visitor browses (before a chat)"]];
export const ACTIONS = {
  queued: [["auto_reply", "Auto-reply while queued"], ["add_tag", "Add a tag"], ["assign_group", "Move to group"]],
  page_view: [["greeting", "Show a greeting"], ["invitation", "Show an invitation"], ["add_tag", "Tag the chat they start"], ["assign_group", "Chat they start goes to group"]],
};
export const NEEDS_TEXT = new Set(["auto_reply", "greeting", "invitation"]);

// The fields only page-view triggers have; `read()` gives their values for the API.
export function visitFields(t) {
  const n = (x) => (x == null ? "" : String(x));
  const f = {
    time_on_page_s: h("input", { type: "number", min: 0, max: 86400, value: t.time_on_page_s ?? 0, "aria-label": "Time on page (s)" }),
    time_on_site_s: h("input", { type: "number", min: 0, max: 86400, value: t.time_on_site_s ?? 0, "aria-label": "Time on site (s)" }),
    sender_name: h("input", { value: n(t.sender_name), maxLength: 100, placeholder: "workspace name", "aria-label": "Greeting from" }),
    only_when_available: h("input", { type: "checkbox", checked: t.only_when_available !== false, "aria-label": "Only when an agent is available" }),
  };
  const label = (text, el) => h("label", { class: "visit-only" }, text + " ", el);
  const labels = [label("On the page at least (s)", f.time_on_page_s), label("On the site at least (s)", f.time_on_site_s)];
  // Shown for a greeting or an invitation only.
  const sender = h("span", { class: "visit-greeting" }, label("From", f.sender_name), " ",
    h("label", { class: "visit-only" }, f.only_when_available, " only when an agent is available"));
  const greets = (action) => action === "greeting" || action === "invitation";
  const read = (action) => ({
    time_on_page_s: Number(f.time_on_page_s.value || 0),
    time_on_site_s: Number(f.time_on_site_s.value || 0),
    sender_name: greets(action) ? f.sender_name.value.trim() || null : null,
    only_when_available: greets(action) ? f.only_when_available.checked : true,
  });
  return { labels, sender, read };
}

// Fill the action select with the event's actions, keeping the choice when it still applies.
export function fillActions(select, event, chosen) {
  select.textContent = "";
  for (const [v, l] of ACTIONS[event]) select.appendChild(h("option", { value: v, text: l, selected: v === chosen }));
}
