// The visitors view: everyone on the site now, updated live in place, with "Start chat".
import { h, newId } from "/widget/client.js";
import { $, S, toast } from "./state.js";
import { ago, safeLink } from "./sidebar.js";

const visitorRows = new Map(); // visitor_id -> {tr, cells, chatKey}

export function renderVisitors() {
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
