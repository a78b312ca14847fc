// Trigger greetings (issue 16): before any chat exists, a workspace trigger may greet the
// visitor (a `greeting` push, docs/protocol.md). A greeting is a message card from the sender
// (the workspace's or bot's name) at the top of the panel; an invitation uses the invitation
// card (invite.js). Neither is a chat: answering one sends `send_message` with `greeting_id`,
// and the chat the server then opens starts with the greeting. The card and its id survive a
// reload for this tab's session; "Not now" or the start of any chat clears them.
import { h } from "./client.js";
import { hideInvitation, showInvitation } from "./invite.js";

let card = null;
let current = null; // the greeting push shown: {greeting_id, style, sender_name, text}
let storeKey = "";

function ensureCard(onDismiss) {
  if (card) return card;
  const who = h("span", { id: "lc-trigger-greeting-name", class: "lc-who" });
  const text = h("div", { id: "lc-trigger-greeting-text", class: "lc-text" });
  const dismiss = h("button", { id: "lc-trigger-greeting-dismiss", type: "button", class: "lc-link", text: "Not now", onclick: onDismiss });
  card = h("div", { id: "lc-trigger-greeting", class: "lc-trigger-greeting lc-msg", role: "status", hidden: true }, who, text, dismiss);
  const body = document.getElementById("lc-body");
  body.insertBefore(card, body.firstChild);
  return card;
}

function save() {
  try {
    if (current) sessionStorage.setItem(storeKey, JSON.stringify(current));
    else sessionStorage.removeItem(storeKey);
  } catch (_) {
    /* private mode: the card goes with a reload */
  }
}

// Show a greeting push; `onDismiss` runs after "Not now".
export function showGreeting(push, onDismiss) {
  current = {
    greeting_id: String(push.greeting_id || ""),
    style: push.style === "invitation" ? "invitation" : "greeting",
    sender_name: String(push.sender_name || ""),
    text: String(push.text || ""),
  };
  save();
  const dismiss = () => {
    clearGreeting();
    onDismiss();
  };
  if (current.style === "invitation") {
    showInvitation({ name: current.sender_name, text: current.text }, dismiss);
    return;
  }
  const el = ensureCard(dismiss);
  el.querySelector("#lc-trigger-greeting-name").textContent = current.sender_name;
  el.querySelector("#lc-trigger-greeting-text").textContent = current.text;
  el.hidden = false;
}

// The greeting being answered (for `send_message.greeting_id`), or null.
export function greetingId() {
  return current ? current.greeting_id : null;
}

// A chat started (answered or not): the card goes; the chat shows the greeting if answered.
export function clearGreeting() {
  if (current && current.style === "invitation") hideInvitation();
  current = null;
  save();
  if (card) card.hidden = true;
}

// On start: the namespace of this widget's storage; re-shows a greeting from before a reload.
export function initGreeting(ns, onDismiss) {
  storeKey = ns + "greeting";
  let saved = null;
  try {
    saved = JSON.parse(sessionStorage.getItem(storeKey) || "null");
  } catch (_) {
    saved = null;
  }
  if (saved && saved.greeting_id) showGreeting(saved, onDismiss);
}
