// The visitor sidebar of the open chat: who they are, where they are, the pages they saw and
// their past conversations; live data merged with the stored profile.
import { formatTime, h } from "/widget/client.js";
import { get } from "./api.js";
import { $, S, chatName, currentChat } from "./state.js";

export async function loadProfile(convId) {
  const c = S.chats.get(convId) || S.queue.find((q) => q.conversation_id === convId);
  if (!c || !c.visitor_id) return;
  try {
    const p = await get("/visitors/" + encodeURIComponent(c.visitor_id));
    S.profiles.set(c.visitor_id, p);
    if (S.openId === convId) renderSidebar();
  } catch (_) {
    /* live data still shows */
  }
}

export function safeLink(url, text) {
  const span = h("span");
  let ok = false;
  try {
    const u = new URL(url);
    ok = u.protocol === "http:" || u.protocol === "https:";
  } catch (_) {
    ok = false;
  }
  if (ok) span.appendChild(h("a", { href: url, target: "_blank", rel: "noopener noreferrer nofollow", text: text || url }));
  else span.textContent = text || url || "";
  return span;
}

export function ago(ts) {
  if (!ts) return "";
  const s = Math.max(0, Date.now() / 1000 - ts);
  if (s < 60) return Math.round(s) + "s ago";
  if (s < 3600) return Math.round(s / 60) + " min ago";
  return new Date(ts * 1000).toLocaleString();
}

export function renderSidebar() {
  const box = $("sidebar");
  box.textContent = "";
  const c = currentChat();
  if (!c) return;
  const v = S.visitors.get(c.visitor_id);
  const p = S.profiles.get(c.visitor_id);
  const pv = p ? p.visitor : null;
  box.appendChild(h("h2", { text: (v && v.name) || (pv && pv.name) || chatName(c) }));
  const dl = h("dl");
  const row = (k, val) => {
    if (val == null || val === "") return;
    dl.appendChild(h("dt", { text: k }));
    dl.appendChild(h("dd", null, typeof val === "string" ? document.createTextNode(val) : val));
  };
  row("Status", v ? (v.online ? "Online" : "Offline") : pv && pv.online ? "Online" : "Offline");
  row("Email", (v && v.email) || (pv && pv.email));
  row("Current page", v && v.current_page ? safeLink(v.current_page.url, v.current_page.title || v.current_page.url) : null);
  const views = p && p.page_views ? p.page_views : [];
  const referrer = (v && v.current_page && v.current_page.referrer) || (views.length ? views[views.length - 1].referrer : null);
  row("Referrer", referrer ? safeLink(referrer) : null);
  row("Device", v ? [v.device, v.browser && v.browser + (v.browser_version ? " " + v.browser_version : ""), v.os].filter(Boolean).join(" · ") : pv && pv.user_agent);
  row("Visits", String((v && v.visits) || (pv && pv.visits) || 1) + ((v && v.visits > 1) || (pv && pv.visits > 1) ? " (returning)" : ""));
  row("IP", (v && v.ip) || (pv && pv.ip));
  if (pv && pv.external_id) row("User id", pv.external_id + " (verified)");
  box.appendChild(dl);

  const attrs = Object.assign({}, pv ? pv.attributes : {}, v ? v.attributes : {});
  if (Object.keys(attrs).length) {
    box.appendChild(h("h3", { text: "Attributes" }));
    const adl = h("dl");
    for (const [k, val] of Object.entries(attrs)) {
      adl.appendChild(h("dt", { text: k }));
      adl.appendChild(h("dd", { text: String(val) }));
    }
    box.appendChild(adl);
  }

  // Pages visited: the stored history merged with what arrived live since.
  const pages = [];
  const seen = new Set();
  for (const x of [...views.slice().reverse(), ...(S.trails.get(c.visitor_id) || [])]) {
    const k = x.url + "@" + Math.round(x.at);
    if (seen.has(k)) continue;
    seen.add(k);
    pages.push(x);
  }
  box.appendChild(h("h3", { text: "Pages visited" }));
  const ol = h("ol", { class: "pages" });
  for (const x of pages.slice(-30).reverse()) {
    ol.appendChild(h("li", null, safeLink(x.url, x.title || x.url), h("span", { class: "muted", text: " " + formatTime(x.at) })));
  }
  if (!pages.length) ol.appendChild(h("li", { class: "muted", text: "None yet" }));
  box.appendChild(ol);

  box.appendChild(h("h3", { text: "Past conversations" }));
  const ul = h("ul");
  const past = p && p.conversations ? p.conversations.filter((x) => x.id !== c.conversation_id) : [];
  for (const x of past.slice(0, 20)) {
    ul.appendChild(h("li", null, h("a", { href: "#/history/" + x.id, text: new Date(x.created_at * 1000).toLocaleDateString() + " · " + x.state + (x.tags && x.tags.length ? " · " + x.tags.join(", ") : "") })));
  }
  if (!past.length) ul.appendChild(h("li", { class: "muted", text: "None" }));
  box.appendChild(ul);
}
