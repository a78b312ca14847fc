// Admin screens that complete the API's reach: edit an agent (name, email, chat limit,
// groups), group members, the tag catalogue, API tokens, and a readable audit log.
// Text from the API is always set with textContent.
import { h } from "/widget/client.js";
import { get, post, put, patch, del, qs } from "./api.js";

function fail(ctx, err) {
  ctx.toast(err.message || "Failed", "error");
}

/** Edit form for one agent, opened from the agents table; resolves after a save. */
export function agentEditor(agent, groups, ctx, onSaved) {
  const id = "edit-" + agent.id;
  const display = h("input", { id: id + "-display", value: agent.display_name, required: true, maxLength: 200 });
  const email = h("input", { id: id + "-email", type: "email", value: agent.email || "", maxLength: 320 });
  const maxChats = h("input", { id: id + "-max", type: "number", min: 1, max: 100, step: 1, required: true, value: agent.max_chats });
  const boxes = groups.map((g) => h("label", { class: "check" },
    h("input", { type: "checkbox", value: g.id, checked: agent.group_ids.includes(g.id), "aria-label": "Member of " + g.name }), " " + g.name));
  const form = h("form", { class: "card agent-edit", "data-agent": agent.username },
    h("h2", { text: "Edit " + agent.username }),
    h("label", { for: id + "-display", text: "Display name" }), display,
    h("label", { for: id + "-email", text: "Email" }), email,
    h("label", { for: id + "-max", text: "Max concurrent chats (1–100)" }), maxChats,
    h("span", { text: "Groups" }), h("div", { class: "checks" }, boxes.length ? boxes : h("span", { class: "muted", text: "No groups yet" })),
    h("button", { type: "submit", class: "primary full", text: "Save agent" }));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const body = {
      display_name: display.value.trim(),
      max_chats: Number(maxChats.value),
      group_ids: boxes.map((b) => b.querySelector("input")).filter((c) => c.checked).map((c) => c.value),
    };
    if (email.value.trim()) body.email = email.value.trim();
    try {
      await patch("/agents/" + agent.id, body);
      ctx.toast("Saved " + body.display_name);
      ctx.reload();
      await onSaved();
    } catch (err) {
      fail(ctx, err);
    }
  });
  return form;
}

/** Members of each group, with add and remove (each a PATCH of the agent's group_ids). */
export async function groupMembers(box, groups, ctx, redraw) {
  const { agents } = await get("/agents");
  const section = h("section", { class: "card", id: "group-members" }, h("h2", { text: "Members" }));
  for (const g of groups) {
    const members = agents.filter((a) => a.group_ids.includes(g.id));
    const others = agents.filter((a) => !a.group_ids.includes(g.id));
    const list = h("ul", { class: "members", "aria-label": "Members of " + g.name });
    for (const a of members) {
      const remove = h("button", { type: "button", text: "Remove", "aria-label": "Remove " + a.display_name + " from " + g.name });
      remove.addEventListener("click", () => setGroups(a, a.group_ids.filter((x) => x !== g.id)));
      list.appendChild(h("li", null, a.display_name + " (" + a.username + ") ", remove));
    }
    if (!members.length) list.appendChild(h("li", { class: "muted", text: "No members" }));
    const pick = h("select", { "aria-label": "Add to " + g.name }, h("option", { value: "", text: "Add an agent…" }),
      others.map((a) => h("option", { value: a.id, text: a.display_name + " (" + a.username + ")" })));
    pick.addEventListener("change", () => {
      const a = others.find((x) => x.id === pick.value);
      if (a) setGroups(a, [...a.group_ids, g.id]);
    });
    section.appendChild(h("div", { class: "group-block", "data-group": g.name }, h("h3", { text: g.name }), list, pick));
  }
  async function setGroups(agent, groupIds) {
    try {
      await patch("/agents/" + agent.id, { group_ids: groupIds });
      ctx.toast("Members of the group changed");
      ctx.reload();
      await redraw();
    } catch (err) {
      fail(ctx, err);
    }
  }
  box.appendChild(section);
}

// ------------------------------------------------------------------ tag catalogue

export async function tagsScreen(box, ctx) {
  const { tags } = await get("/tags");
  box.appendChild(h("h1", { text: "Tags" }));
  box.appendChild(h("p", { class: "muted", text: "Agents can tag chats only with these tags. With an empty catalogue any tag is accepted." }));
  const input = h("input", { id: "tag-new", maxLength: 64, required: true, pattern: "\\S(.*\\S)?" });
  const form = h("form", { class: "card", id: "tag-form" }, h("label", { for: "tag-new", text: "New tag" }), input,
    h("button", { type: "submit", class: "primary full", text: "Add tag" }));
  const list = h("ul", { class: "tags", id: "tag-list" });
  async function save(next) {
    try {
      await put("/tags", { tags: next });
      ctx.toast("Tag catalogue saved");
      ctx.reload();
      box.textContent = "";
      await tagsScreen(box, ctx);
    } catch (err) {
      fail(ctx, err);
    }
  }
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const tag = input.value.trim();
    if (!tag) return;
    if (tags.includes(tag)) {
      ctx.toast("Tag " + tag + " is already in the catalogue", "error");
      return;
    }
    save([...tags, tag]);
  });
  for (const t of tags) {
    const remove = h("button", { type: "button", text: "Remove", "aria-label": "Remove tag " + t });
    remove.addEventListener("click", () => save(tags.filter((x) => x !== t)));
    list.appendChild(h("li", { "data-tag": t }, h("span", { class: "tag", text: t }), " ", remove));
  }
  if (!tags.length) list.appendChild(h("li", { class: "muted", text: "No tags: any tag is accepted" }));
  box.append(form, list);
}

// ------------------------------------------------------------------ API tokens

const SCOPES = [
  ["admin", "Admin API (as your role allows)"],
  ["read", "Read only (GET, no exports)"],
  ["export", "Export only"],
  ["agent", "Console WebSocket only"],
];

export async function tokensScreen(box, ctx) {
  const [{ tokens }, { agents }] = await Promise.all([get("/tokens"), get("/agents")]);
  const names = new Map(agents.map((a) => [a.id, a.display_name]));
  box.appendChild(h("h1", { text: "API tokens" }));
  const name = h("input", { id: "token-name", required: true, maxLength: 200 });
  const scopes = SCOPES.map(([value, label]) => h("label", { class: "check" },
    h("input", { type: "checkbox", value, checked: value === "admin", "aria-label": "Scope " + value }), " " + label));
  const form = h("form", { class: "card", id: "token-form" }, h("h2", { text: "New token" }),
    h("label", { for: "token-name", text: "Name" }), name,
    h("span", { text: "Scopes" }), h("div", { class: "checks" }, scopes),
    h("button", { type: "submit", class: "primary full", text: "Create token" }));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const chosen = scopes.map((l) => l.querySelector("input")).filter((c) => c.checked).map((c) => c.value);
    try {
      const res = await post("/tokens", { name: name.value.trim(), scopes: chosen });
      box.textContent = "";
      await tokensScreen(box, ctx);
      box.prepend(h("p", { class: "card", role: "status", id: "token-secret" }, "Token " + res.info.name + ": ",
        h("code", { class: "secret", text: res.token }), " (shown only once)"));
    } catch (err) {
      fail(ctx, err);
    }
  });
  box.appendChild(form);
  const tbody = h("tbody");
  for (const t of tokens) {
    const revoke = h("button", { type: "button", class: "danger", text: "Revoke", disabled: t.revoked_at != null, "aria-label": "Revoke " + t.name });
    revoke.addEventListener("click", async () => {
      if (!confirm("Revoke token " + t.name + "?")) return;
      try {
        await del("/tokens/" + t.id);
        box.textContent = "";
        await tokensScreen(box, ctx);
      } catch (err) {
        fail(ctx, err);
      }
    });
    const when = (s) => (s == null ? "–" : new Date(s * 1000).toLocaleString());
    tbody.appendChild(h("tr", { "data-token": t.name },
      h("td", { text: t.name }), h("td", { text: names.get(t.agent_id) || t.agent_id }), h("td", { text: t.scopes.join(", ") }),
      h("td", { text: when(t.created_at) }), h("td", { text: when(t.last_used_at) }),
      h("td", { text: t.revoked_at == null ? "active" : "revoked " + when(t.revoked_at) }), h("td", null, revoke)));
  }
  box.appendChild(h("table", { class: "table", id: "tokens-table" },
    h("thead", null, h("tr", null, ["Name", "Acts as", "Scopes", "Created", "Last used", "State", ""].map((x) => h("th", { scope: "col", text: x })))), tbody));
}

// ------------------------------------------------------------------ audit log

/** "agent:ID" or a bare id, shown as the name it has now (the id stays in the title). */
export function describeRef(ref, names) {
  if (!ref) return "";
  const m = /^([a-z_]+):(.+)$/.exec(ref);
  const kind = m ? m[1] : "";
  const id = m ? m[2] : ref;
  const name = names.get(id);
  if (!name) return ref === "system" ? "System" : ref;
  return kind ? kind + " " + name : name;
}

/** Details as "key: value" pairs, ids replaced by names, lists joined. */
export function describeDetails(details, names) {
  return Object.entries(details || {}).map(([k, v]) => {
    const value = Array.isArray(v) ? v.map((x) => names.get(x) || String(x)).join(", ")
      : v && typeof v === "object" ? JSON.stringify(v) : names.get(v) || String(v);
    return k.replace(/_/g, " ") + ": " + value;
  }).join("; ");
}

export async function auditScreen(box, ctx) {
  box.appendChild(h("h1", { text: "Audit log" }));
  const [agentsRes, groupsRes, tokensRes] = await Promise.all([
    get("/agents").catch(() => ({ agents: [] })), get("/groups").catch(() => ({ groups: [] })), get("/tokens").catch(() => ({ tokens: [] }))]);
  const names = new Map();
  for (const a of agentsRes.agents) names.set(a.id, a.display_name + " (" + a.username + ")");
  for (const g of groupsRes.groups) names.set(g.id, g.name);
  for (const t of tokensRes.tokens) names.set(t.id, t.name);
  const tbody = h("tbody");
  const more = h("button", { type: "button", text: "Load more", hidden: true });
  box.appendChild(h("table", { class: "table", id: "audit-table" },
    h("thead", null, h("tr", null, ["When", "Who", "Action", "Target", "Details", "IP"].map((t) => h("th", { scope: "col", text: t })))), tbody));
  box.appendChild(more);
  let cursor = null;
  async function load() {
    const page = await get("/audit" + qs({ limit: 100, cursor }));
    for (const e of page.entries) {
      tbody.appendChild(h("tr", null, h("td", { text: new Date(e.at * 1000).toLocaleString() }),
        h("td", { text: describeRef(e.actor, names), title: e.actor }),
        h("td", { text: e.action }),
        h("td", { text: describeRef(e.target, names), title: e.target || "" }),
        h("td", { text: describeDetails(e.details, names) }), h("td", { text: e.ip || "" })));
    }
    cursor = page.next_cursor;
    more.hidden = !cursor;
  }
  more.addEventListener("click", () => load().catch((err) => fail(ctx, err)));
  await load();
}
