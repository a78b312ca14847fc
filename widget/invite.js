// Proactive invitations (issue 16): when an agent starts a chat with the visitor, the widget
// opens on a card naming the agent and quoting their message, instead of only a badge. The
// card goes away when the visitor answers or dismisses it, or when the chat ends (an invitation
// the visitor leaves unanswered is closed by the server after the workspace's
// `invitation_expires_after_s`). See docs/widget.md.
import { h } from "./client.js";

let card = null;

function ensureCard(onDismiss) {
  if (card) return card;
  const name = h("strong", { id: "lc-invite-name" });
  const text = h("p", { id: "lc-invite-text", class: "lc-invite-text" });
  const dismiss = h("button", { id: "lc-invite-dismiss", type: "button", class: "lc-link", text: "Not now", onclick: onDismiss });
  card = h("div", { id: "lc-invite", class: "lc-invite", role: "status", hidden: true },
    h("p", { class: "lc-invite-head" }, name, " invites you to chat"), text, dismiss);
  const body = document.getElementById("lc-body");
  body.insertBefore(card, body.firstChild);
  return card;
}

// An `assigned` event with `data.invitation` (the agent's name) or the agent's first message.
export function showInvitation({ name, text }, onDismiss) {
  const el = ensureCard(onDismiss);
  if (name) el.querySelector("#lc-invite-name").textContent = name;
  if (text != null) el.querySelector("#lc-invite-text").textContent = text;
  el.hidden = false;
}

export function hideInvitation() {
  if (card) card.hidden = true;
}

export function invitationShown() {
  return !!card && !card.hidden;
}
