// The reports screen: every figure from GET /reports (definitions in docs/reports.md), charts
// as inline SVG, and the same figures as a CSV download (GET /reports/csv).
import { h } from "/widget/client.js";
import { get, qs } from "./api.js";

const SVG = "http://www.w3.org/2000/svg";
const LABEL_CHARS = 14;

function svg(tag, attrs, text) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
  if (text != null) el.textContent = text;
  return el;
}

/** Whole-number y-axis ticks with a "nice" step (1, 2, 5 × 10^n): never a repeated value. */
export function yTicks(max) {
  const top = Math.max(1, Math.ceil(max));
  const raw = top / 4;
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = Math.max(1, [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw));
  const ticks = [];
  for (let v = 0; v < top + step; v += step) ticks.push(v);
  return ticks;
}

/** A label that fits under a bar: the start of it, with an ellipsis when cut. */
export function shortLabel(label) {
  const s = String(label);
  return s.length > LABEL_CHARS ? s.slice(0, LABEL_CHARS - 1) + "…" : s;
}

/** Vertical bar chart of [label, value] pairs; labels are shown whole in the tooltips. */
export function barChart(title, pairs, { cls = "bar", label = shortLabel } = {}) {
  const W = 720, H = 220, pad = { l: 36, r: 8, t: 12, b: 36 };
  const ticks = yTicks(Math.max(0, ...pairs.map((p) => p[1])));
  const max = ticks[ticks.length - 1];
  const root = svg("svg", { viewBox: "0 0 " + W + " " + H, role: "img", "aria-label": title });
  root.appendChild(svg("title", {}, title));
  const iw = W - pad.l - pad.r, ih = H - pad.t - pad.b;
  const step = pairs.length ? iw / pairs.length : iw;
  ticks.forEach((v, i) => {
    const y = pad.t + ih - (ih * v) / max;
    root.appendChild(svg("line", { x1: pad.l, x2: W - pad.r, y1: y, y2: y, class: "axis", "stroke-dasharray": i ? "2 3" : "" }));
    root.appendChild(svg("text", { x: pad.l - 6, y: y + 3, "text-anchor": "end", class: "tick" }, String(v)));
  });
  const every = Math.ceil(pairs.length / 12);
  pairs.forEach(([name, value], i) => {
    const bh = (ih * value) / max;
    const x = pad.l + i * step + step * 0.15;
    const rect = svg("rect", { x, y: pad.t + ih - bh, width: Math.max(1, step * 0.7), height: bh, class: cls });
    rect.appendChild(svg("title", {}, name + ": " + value));
    root.appendChild(rect);
    if (i % every === 0) root.appendChild(svg("text", { x: x + step * 0.35, y: H - pad.b + 14, "text-anchor": "middle", class: "xlabel" }, label(name)));
  });
  return h("figure", { class: "chart" }, h("figcaption", { text: title }), root);
}

export function fmtSeconds(s) {
  if (s == null) return "–";
  return s < 90 ? Math.round(s) + " s" : (s / 60).toFixed(1) + " min";
}

const fmtPct = (p) => (p == null ? "–" : p.toFixed(1).replace(/\.0$/, "") + " %");
const fmtRating = (r) => (r == null ? "–" : Number(r).toFixed(2) + " / 5");

function stat(label, value, key) {
  return h("div", { class: "stat", "data-stat": key }, h("b", { text: String(value) }), h("span", { class: "muted", text: label }));
}

function table(id, head, rows) {
  return h("table", { class: "table", id },
    h("thead", null, h("tr", null, head.map((t) => h("th", { scope: "col", text: t })))),
    h("tbody", null, rows.map((cells) => h("tr", null, cells.map((c) => h("td", { text: String(c) }))))));
}

const sliceCells = (x) => [x.chats, x.missed, fmtSeconds(x.frt_p50_s), fmtSeconds(x.duration_p50_s), fmtRating(x.avg_rating), fmtPct(x.csat_pct)];
const SLICE_HEAD = ["Chats", "Missed", "First response (median)", "Duration (median)", "Avg rating", "CSAT"];

export async function reportsScreen(box, ctx) {
  box.appendChild(h("h1", { text: "Reports" }));
  const range = h("select", { "aria-label": "Period", id: "report-range" }, [1, 7, 30, 90].map((d) => h("option", { value: d, text: d === 1 ? "Last 24 hours" : "Last " + d + " days", selected: d === 30 })));
  const csv = h("a", { id: "report-csv", text: "Download CSV", download: "livechat-report.csv" });
  const body = h("div");
  box.appendChild(h("div", { class: "row" }, range, csv));
  box.appendChild(h("p", { class: "muted", text: "Missed: chats a visitor started that no agent answered (taken by nobody, left as an offline message, or still waiting). Chats an agent started count as chats but not in first response. CSAT: share of rated chats rated 4 or 5." }));
  box.appendChild(body);
  const [agentsRes, groupsRes] = await Promise.all([get("/agents").catch(() => ({ agents: [] })), get("/groups").catch(() => ({ groups: [] }))]);
  const agentName = new Map(agentsRes.agents.map((a) => [a.id, a.display_name]));
  const groupName = new Map(groupsRes.groups.map((g) => [g.id, g.name]));
  async function load() {
    body.textContent = "";
    const until = Math.floor(Date.now() / 1000);
    const since = until - Number(range.value) * 86400;
    csv.href = "/api/v1/reports/csv" + qs({ since, until });
    const r = await get("/reports" + qs({ since, until }));
    body.appendChild(h("div", { class: "stats", id: "report-stats" },
      stat("Chats", r.total_chats, "chats"), stat("Missed", r.missed_chats, "missed"),
      stat("First response (median)", fmtSeconds(r.first_response_p50_s), "frt_p50"),
      stat("First response (90th pct)", fmtSeconds(r.first_response_p90_s), "frt_p90"),
      stat("Duration (median)", fmtSeconds(r.duration_p50_s), "duration"),
      stat("Average rating", fmtRating(r.average_rating), "rating"),
      stat("CSAT (" + r.rated_chats + " rated)", fmtPct(r.csat_pct), "csat")));
    const perDay = r.chats_per_day.map((d) => (Array.isArray(d) ? d : [d.day, d.chats]));
    body.appendChild(barChart("Chats per day", perDay, { label: (day) => String(day).slice(5) }));
    const nameOf = (id) => agentName.get(id) || id;
    const perAgent = r.per_agent.map((a) => [nameOf(a.agent_id), a.chats || 0]);
    if (perAgent.length) body.appendChild(barChart("Chats per agent", perAgent, { cls: "bar2" }));
    body.appendChild(h("h2", { text: "Agents" }));
    body.appendChild(table("report-agents", ["Agent", ...SLICE_HEAD], r.per_agent.map((a) => [nameOf(a.agent_id), ...sliceCells(a)])));
    if (r.per_group.length) {
      body.appendChild(h("h2", { text: "Groups" }));
      body.appendChild(table("report-groups", ["Group", ...SLICE_HEAD], r.per_group.map((g) => [groupName.get(g.group_id) || g.group_id, ...sliceCells(g)])));
    }
  }
  range.addEventListener("change", () => load().catch((err) => ctx.toast(err.message, "error")));
  await load();
}
