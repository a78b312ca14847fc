// The history view: full-text search, the latest closed chats, and a whole transcript.
import { appendLinkified, h } from "/widget/client.js";
import { get, qs } from "./api.js";
import { renderFiles } from "./files.js";
import { $, S, toast } from "./state.js";
import { sysText } from "./chat_view.js";

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

export async function showTranscript(convId) {
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
