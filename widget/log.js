// The message log: one <li> per message or system event, kept in sequence order with the
// outbox's unsent messages after them, and the transcript download built from the same events.
import { appendLinkified, formatTime, h } from "./client.js";
import { renderFiles } from "./files.js";
import { $, KEY, state, store } from "./state.js";

let outbox = null; // the persistent outbox (client.js), set by frame.js

export function initLog(box) {
  outbox = box;
}

const nodes = new Map(); // key -> <li>

function messageNode(key, e, mine, stateName, item) {
  let li = nodes.get(key);
  if (!li) {
    li = h("li", { class: "lc-msg" + (mine ? " mine" : "") });
    if (!mine && e.author_name) li.appendChild(h("span", { class: "lc-who", text: e.author_name }));
    const body = h("div", { class: "lc-text" });
    appendLinkified(body, e.body);
    li.appendChild(body);
    li.appendChild(h("span", { class: "lc-meta" }));
    renderFiles(li, (e.data && e.data.attachments) || e.files, KEY, () => store.get("token"));
    nodes.set(key, li);
  }
  if (li.dataset.state !== stateName) {
    li.dataset.state = stateName;
    const meta = li.querySelector(".lc-meta");
    meta.textContent = "";
    if (stateName === "sending") meta.textContent = "Sending…";
    else if (stateName === "failed") {
      meta.append("Not sent. ");
      meta.appendChild(h("button", {
        class: "lc-retry", type: "button", text: "Retry",
        onclick: () => outbox.retry(item.client_msg_id),
      }));
    } else meta.textContent = (mine ? "Sent · " : "") + formatTime(e.created_at);
  }
  return li;
}

export function systemText(e) {
  const who = (e.data && e.data.agent_name) || e.author_name || "An agent";
  switch (e.kind) {
    case "assigned":
    case "joined":
      return who + " joined the chat";
    case "left":
      return who + " left the chat";
    case "transferred":
      return "You were transferred to " + ((e.data && (e.data.agent_name || e.data.group_name)) || "another agent");
    case "status":
      return e.data && e.data.state === "closed" ? "The chat has ended" : null;
    case "offline_message":
      return "Message left: " + (e.body || "");
    default:
      return null;
  }
}

export function renderLog() {
  const log = $("lc-log");
  const wanted = [];
  const seqs = [...state.events.keys()].sort((a, b) => a - b);
  const sentIds = new Set();
  for (const seq of seqs) {
    const e = state.events.get(seq);
    if (e.client_msg_id) sentIds.add(e.client_msg_id);
    if (e.kind === "message") {
      const mine = e.author_type === "visitor";
      const key = mine && e.client_msg_id ? "m" + e.client_msg_id : "e" + seq;
      wanted.push(messageNode(key, e, mine, "sent"));
    } else {
      const text = systemText(e);
      if (!text) continue;
      const key = "e" + seq;
      if (!nodes.has(key)) nodes.set(key, h("li", { class: "lc-system", text }));
      wanted.push(nodes.get(key));
    }
  }
  for (const item of outbox.items()) {
    if (sentIds.has(item.client_msg_id)) continue;
    const e = { body: item.text, created_at: item.created_at, files: item.files };
    wanted.push(messageNode("m" + item.client_msg_id, e, true, item.state, item));
  }
  const keep = new Set(wanted);
  for (const child of [...log.children]) if (!keep.has(child)) child.remove();
  wanted.forEach((li, i) => {
    if (log.children[i] !== li) log.insertBefore(li, log.children[i] || null);
  });
  for (const [k, li] of nodes) if (!keep.has(li)) nodes.delete(k);
  $("lc-download").hidden = state.events.size === 0;
  scrollDown();
}

export function scrollDown() {
  const body = $("lc-body");
  body.scrollTop = body.scrollHeight;
}

/** "2026-11-30 18:05:02" in the visitor's own time zone, as the chat shows times. */
function localStamp(seconds) {
  const d = new Date(seconds * 1000);
  const p = (n) => String(n).padStart(2, "0");
  return d.getFullYear() + "-" + p(d.getMonth() + 1) + "-" + p(d.getDate()) + " " + p(d.getHours()) + ":" + p(d.getMinutes()) + ":" + p(d.getSeconds());
}

function utcOffset(seconds) {
  const off = -new Date(seconds * 1000).getTimezoneOffset();
  const a = Math.abs(off);
  return "UTC" + (off < 0 ? "-" : "+") + String(Math.floor(a / 60)).padStart(2, "0") + ":" + String(a % 60).padStart(2, "0");
}

export function download() {
  const lines = [];
  const seqs = [...state.events.keys()].sort((a, b) => a - b);
  const first = seqs.length ? state.events.get(seqs[0]).created_at : Date.now() / 1000;
  lines.push("Chat transcript. Times are your local time (" + utcOffset(first) + ").");
  for (const seq of seqs) {
    const e = state.events.get(seq);
    const when = localStamp(e.created_at);
    if (e.kind === "message") {
      const who = e.author_type === "visitor" ? "You" : e.author_name || "Agent";
      const files = ((e.data && e.data.attachments) || []).map((f) => " [file: " + f.name + "]");
      lines.push("[" + when + "] " + who + ": " + e.body + files.join(""));
    } else {
      const t = systemText(e);
      if (t) lines.push("[" + when + "] " + t);
    }
  }
  const blob = new Blob([lines.join("\n") + "\n"], { type: "text/plain;charset=utf-8" });
  const a = h("a", { href: URL.createObjectURL(blob), download: "chat-transcript.txt" });
  document.body.appendChild(a);
  a.click();
  setTimeout(() => {
    URL.revokeObjectURL(a.href);
    a.remove();
  }, 1000);
}
