// Admin screens, all on the HTTP admin API (/api/v1). Text from the API is always set with
// textContent. Reports (charts) live in reports.js; agent editing, members, tags, tokens and the
// audit log in admin_agents.js.
import { h } from "/widget/client.js";
import { get, post, put, patch, del, qs } from "./api.js";
import { securityAdmin } from "./security.js";
import { webhooks } from "./webhooks.js";
import { agentEditor, auditScreen, groupMembers, tagsScreen, tokensScreen } from "./admin_agents.js";
import { reportsScreen } from "./reports.js";
import { hoursScreen } from "./hours.js";
import { triggersScreen } from "./triggers.js";

const ROLES = ["agent", "supervisor", "admin", "owner", "bot"];

let ctx = null;
let previewListener = null;

export function renderAdmin(section, box, context) {
  ctx = context;
  box.textContent = "";
  if (previewListener) {
    removeEventListener("message", previewListener);
    previewListener = null;
  }
  const screens = {
    agents, groups, canned, widget, routing, export: exportScreen,
    reports: (b) => reportsScreen(b, ctx), audit: (b) => auditScreen(b, ctx),
    tags: (b) => tagsScreen(b, ctx), tokens: (b) => tokensScreen(b, ctx),
    security: (b) => securityAdmin(b, ctx),
    webhooks: (b) => webhooks(b, ctx),
    hours: (b) => hoursScreen(b, ctx),
    triggers: (b) => triggersScreen(b, ctx),
  };
  (screens[section] || agents)(box).catch((err) => box.appendChild(h("p", { class: "error", text: err.message })));
}

function field(label, input, id) {
  input.id = id;
  return [h("label", { for: id, text: label }), input];
}

function fail(err) {
  ctx.toast(err.message || "Failed", "error");
}

function revealSecret(box, label, secret) {
  const p = h("p", { class: "card", role: "status" }, label + " ", h("code", { class: "secret", text: secret }), " (shown only once)");
  box.prepend(p);
}

// ------------------------------------------------------------------ agents

async function agents(box) {
  const [list, groupsRes] = await Promise.all([get("/agents"), get("/groups")]);
  const groupNames = new Map(groupsRes.groups.map((g) => [g.id, g.name]));
  box.appendChild(h("h1", { text: "Agents and roles" }));

  const username = h("input", { required: true, minLength: 3, maxLength: 64, pattern: "[A-Za-z0-9_.\\-]+", autocomplete: "off" });
  const display = h("input", { required: true, maxLength: 200 });
  const email = h("input", { type: "email", maxLength: 320 });
  const role = h("select", null, ROLES.map((r) => h("option", { value: r, text: r })));
  const password = h("input", { type: "password", minLength: 10, maxLength: 256, autocomplete: "new-password", placeholder: "leave empty to generate one" });
  const maxChats = h("input", { type: "number", min: 1, max: 100, value: 5 });
  const groupSel = h("select", { multiple: true, size: Math.min(4, Math.max(2, groupsRes.groups.length)) },
    groupsRes.groups.map((g) => h("option", { value: g.id, text: g.name })));
  const form = h("form", { class: "card", id: "agent-create" },
    h("h2", { text: "New agent" }),
    field("Username", username, "agent-username"),
    field("Display name", display, "agent-display"),
    field("Email", email, "agent-email"),
    field("Role", role, "agent-role"),
    field("Password", password, "agent-password"),
    field("Max concurrent chats", maxChats, "agent-max"),
    field("Groups", groupSel, "agent-groups"),
    h("button", { type: "submit", class: "primary full", text: "Create agent" }));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const body = {
      username: username.value.trim(), display_name: display.value.trim(), role: role.value,
      max_chats: Number(maxChats.value), group_ids: [...groupSel.selectedOptions].map((o) => o.value),
    };
    if (email.value.trim()) body.email = email.value.trim();
    if (password.value) body.password = password.value;
    try {
      const res = await post("/agents", body);
      ctx.toast("Agent " + res.agent.display_name + " created");
      await agents(clear(box));
      if (res.password) revealSecret(box, "Password for " + res.agent.username + ":", res.password);
    } catch (err) {
      fail(err);
    }
  });
  box.appendChild(form);

  const tbody = h("tbody");
  for (const a of list.agents) {
    const roleSel = h("select", { "aria-label": "Role of " + a.username }, ROLES.map((r) => h("option", { value: r, text: r, selected: r === a.role })));
    roleSel.addEventListener("change", () => patch("/agents/" + a.id, { role: roleSel.value }).then(() => ctx.toast("Role changed")).catch(fail));
    const enabled = h("input", { type: "checkbox", checked: a.enabled, "aria-label": "Enabled: " + a.username });
    enabled.addEventListener("change", () => patch("/agents/" + a.id, { enabled: enabled.checked }).then(() => ctx.toast(enabled.checked ? "Enabled" : "Disabled")).catch(fail));
    const reset = h("button", { type: "button", text: "Reset password" });
    reset.addEventListener("click", async () => {
      try {
        const res = await post("/agents/" + a.id + "/reset-password");
        revealSecret(box, "New password for " + a.username + ":", res.password);
      } catch (err) {
        fail(err);
      }
    });
    const edit = h("button", { type: "button", text: "Edit", "aria-label": "Edit " + a.username });
    edit.addEventListener("click", () => {
      box.querySelectorAll(".agent-edit").forEach((f) => f.remove());
      const editor = agentEditor(a, groupsRes.groups, ctx, () => agents(clear(box)));
      box.insertBefore(editor, form.nextSibling);
      editor.querySelector("input").focus();
    });
    tbody.appendChild(h("tr", { "data-username": a.username },
      h("td", { text: a.display_name }), h("td", { text: a.username }), h("td", null, roleSel),
      h("td", null, enabled), h("td", { text: String(a.max_chats) }),
      h("td", { text: a.group_ids.map((g) => groupNames.get(g) || g).join(", ") }), h("td", null, edit, " ", reset)));
  }
  box.appendChild(h("table", { class: "table", id: "agents-table" },
    h("thead", null, h("tr", null, ["Name", "Username", "Role", "Enabled", "Max chats", "Groups", ""].map((t) => h("th", { scope: "col", text: t })))),
    tbody));
}

function clear(box) {
  box.textContent = "";
  return box;
}

// ------------------------------------------------------------------ groups

async function groups(box) {
  const res = await get("/groups");
  box.appendChild(h("h1", { text: "Groups" }));
  const name = h("input", { required: true, maxLength: 200 });
  const fallback = h("select", null, h("option", { value: "", text: "(none)" }), res.groups.map((g) => h("option", { value: g.id, text: g.name })));
  const pub = h("input", { type: "checkbox" });
  const form = h("form", { class: "card" }, h("h2", { text: "New group" }), field("Name", name, "group-name"),
    field("Fallback group", fallback, "group-fallback"),
    field("Department visitors may choose", pub, "group-public"), h("button", { type: "submit", class: "primary full", text: "Create group" }));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      await post("/groups", { name: name.value.trim(), fallback_group_id: fallback.value || null, public: pub.checked });
      ctx.reload();
      await groups(clear(box));
    } catch (err) {
      fail(err);
    }
  });
  box.appendChild(form);
  const tbody = h("tbody");
  for (const g of res.groups) {
    const rename = h("input", { value: g.name, maxLength: 200, "aria-label": "Name of group " + g.name });
    const fb = h("select", { "aria-label": "Fallback of " + g.name }, h("option", { value: "", text: "(none)" }),
      res.groups.filter((x) => x.id !== g.id).map((x) => h("option", { value: x.id, text: x.name, selected: x.id === g.fallback_group_id })));
    const isPublic = h("input", { type: "checkbox", checked: !!g.public, "aria-label": "Visitors may choose " + g.name });
    const save = h("button", { type: "button", text: "Save" });
    save.addEventListener("click", () => patch("/groups/" + g.id, { name: rename.value.trim(), fallback_group_id: fb.value || null, public: isPublic.checked }).then(() => ctx.toast("Saved")).catch(fail));
    const remove = h("button", { type: "button", class: "danger", text: "Delete" });
    remove.addEventListener("click", async () => {
      if (!confirm("Delete group " + g.name + "?")) return;
      try {
        await del("/groups/" + g.id);
        ctx.reload();
        await groups(clear(box));
      } catch (err) {
        fail(err);
      }
    });
    tbody.appendChild(h("tr", null, h("td", null, rename), h("td", null, fb), h("td", null, h("label", null, isPublic, " Department")), h("td", null, save, " ", remove)));
  }
  box.appendChild(h("table", { class: "table" }, h("thead", null, h("tr", null, ["Name", "Fallback", "Visitors may choose", ""].map((t) => h("th", { scope: "col", text: t })))), tbody));
  await groupMembers(box, res.groups, ctx, () => groups(clear(box)));
}

// ------------------------------------------------------------------ canned responses

async function canned(box) {
  const res = await get("/canned-responses");
  box.appendChild(h("h1", { text: "Canned responses" }));
  box.appendChild(h("p", { class: "muted", text: "Agents type /shortcut in a chat to insert the text." }));
  const shortcut = h("input", { required: true, maxLength: 64, pattern: "[A-Za-z0-9_\\-]+" });
  const text = h("textarea", { required: true, maxLength: 5000, rows: 3 });
  const form = h("form", { class: "card" }, h("h2", { text: "New canned response" }), field("Shortcut", shortcut, "canned-shortcut"),
    field("Text", text, "canned-text"), h("button", { type: "submit", class: "primary full", text: "Add" }));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      await post("/canned-responses", { shortcut: shortcut.value.trim().replace(/^\//, ""), text: text.value });
      ctx.reload();
      await canned(clear(box));
    } catch (err) {
      fail(err);
    }
  });
  box.appendChild(form);
  const tbody = h("tbody");
  for (const c of res.canned_responses) {
    const t = h("textarea", { value: c.text, rows: 2, maxLength: 5000, "aria-label": "Text of /" + c.shortcut });
    const sc = h("input", { value: c.shortcut, maxLength: 64, pattern: "[A-Za-z0-9_\\-]+", "aria-label": "Shortcut of /" + c.shortcut });
    const save = h("button", { type: "button", text: "Save" });
    save.addEventListener("click", () => patch("/canned-responses/" + c.id, { shortcut: sc.value.trim().replace(/^\//, ""), text: t.value }).then(() => {
      ctx.toast("Saved");
      ctx.reload();
    }).catch(fail));
    const remove = h("button", { type: "button", class: "danger", text: "Delete" });
    remove.addEventListener("click", async () => {
      try {
        await del("/canned-responses/" + c.id);
        ctx.reload();
        await canned(clear(box));
      } catch (err) {
        fail(err);
      }
    });
    tbody.appendChild(h("tr", null, h("td", null, "/", sc), h("td", null, t), h("td", null, save, " ", remove)));
  }
  box.appendChild(h("table", { class: "table" }, h("thead", null, h("tr", null, ["Shortcut", "Text", ""].map((x) => h("th", { scope: "col", text: x })))), tbody));
}

// ------------------------------------------------------------------ widget settings

async function widget(box) {
  const s = await get("/settings/widget");
  const key = ctx.me.workspace.widget_key;
  box.appendChild(h("h1", { text: "Widget" }));
  const wrap = h("div", { class: "widget-admin" });
  box.appendChild(wrap);

  const colorPick = h("input", { type: "color", value: s.color });
  const colorText = h("input", { value: s.color, maxLength: 7, pattern: "#[0-9a-fA-F]{6}", "aria-label": "Colour (hex)" });
  const title = h("input", { value: s.title, maxLength: 100, required: true });
  const greeting = h("textarea", { value: s.greeting, maxLength: 1000, rows: 2 });
  const position = h("select", null, ["right", "left"].map((p) => h("option", { value: p, text: p, selected: p === s.position })));
  const preChat = h("input", { type: "checkbox", checked: s.pre_chat_enabled });
  const fieldsBox = h("div", { class: "full" });
  const offline = h("input", { type: "checkbox", checked: s.offline_form_enabled });
  const offlineMsg = h("textarea", { value: s.offline_message, maxLength: 1000, rows: 2 });
  const sneak = h("input", { type: "checkbox", checked: s.sneak_peek });
  const origins = h("textarea", { value: (s.allowed_origins || []).join("\n"), rows: 3, placeholder: "https://www.example.com" });
  let preFields = (s.pre_chat_fields || []).map((f) => Object.assign({}, f));

  function renderFields() {
    fieldsBox.textContent = "";
    fieldsBox.hidden = !preChat.checked;
    preFields.forEach((f, i) => {
      const n = h("input", { value: f.name, maxLength: 64, pattern: "[A-Za-z0-9_]+", "aria-label": "Field name", required: true, oninput: () => ((f.name = n.value), update()) });
      const l = h("input", { value: f.label, maxLength: 200, "aria-label": "Field label", required: true, oninput: () => ((f.label = l.value), update()) });
      const k = h("select", { "aria-label": "Field kind", onchange: () => ((f.kind = k.value), update()) }, ["text", "email", "textarea"].map((x) => h("option", { value: x, text: x, selected: x === f.kind })));
      const r = h("input", { type: "checkbox", checked: f.required, "aria-label": "Required", onchange: () => ((f.required = r.checked), update()) });
      const x = h("button", { type: "button", text: "Remove", onclick: () => ((preFields = preFields.filter((y) => y !== f)), renderFields(), update()) });
      fieldsBox.appendChild(h("div", { class: "row" }, n, l, k, h("label", null, r, " required"), x));
    });
    fieldsBox.appendChild(h("button", { type: "button", text: "Add pre-chat field", onclick: () => {
      preFields.push({ name: preFields.length ? "field" + preFields.length : "name", label: preFields.length ? "Field" : "Your name", kind: "text", required: false });
      renderFields();
      update();
    } }));
  }

  function current() {
    return {
      color: /^#[0-9a-fA-F]{6}$/.test(colorText.value) ? colorText.value : s.color,
      title: title.value.trim() || "Chat with us",
      greeting: greeting.value,
      position: position.value,
      pre_chat_enabled: preChat.checked,
      pre_chat_fields: preFields.map((f) => ({ name: f.name, label: f.label, kind: f.kind || "text", required: !!f.required })),
      offline_form_enabled: offline.checked,
      offline_message: offlineMsg.value,
      sneak_peek: sneak.checked,
      allowed_origins: origins.value.split(/\s+/).map((o) => o.trim()).filter(Boolean),
    };
  }

  const frame = h("iframe", {
    class: "preview-frame", title: "Widget preview",
    src: "/widget/frame.html?preview=1&key=" + encodeURIComponent(key) + "&host=" + encodeURIComponent(location.origin),
  });
  function update() {
    if (frame.contentWindow) {
      frame.contentWindow.postMessage({ lc: 1, type: "preview", config: Object.assign({ online: true }, current()) }, location.origin);
    }
  }
  previewListener = (ev) => {
    if (ev.source === frame.contentWindow && ev.origin === location.origin && ev.data && ev.data.type === "ready") update();
  };
  addEventListener("message", previewListener);

  colorPick.addEventListener("input", () => {
    colorText.value = colorPick.value;
    update();
  });
  colorText.addEventListener("input", () => {
    if (/^#[0-9a-fA-F]{6}$/.test(colorText.value)) colorPick.value = colorText.value;
    update();
  });
  for (const el of [title, greeting, position, offline, offlineMsg, sneak]) el.addEventListener("input", update);
  preChat.addEventListener("change", () => {
    renderFields();
    update();
  });

  const form = h("form", { class: "card", id: "widget-form" },
    h("h2", { text: "Appearance and behaviour" }),
    field("Colour", colorPick, "widget-color"), h("span"), colorText,
    field("Title", title, "widget-title"),
    field("Greeting", greeting, "widget-greeting"),
    field("Position", position, "widget-position"),
    field("Pre-chat form", preChat, "widget-prechat"), fieldsBox,
    field("Offline form", offline, "widget-offline"),
    field("Offline message", offlineMsg, "widget-offline-msg"),
    field("Sneak peek (agents see drafts; visitors are told)", sneak, "widget-sneak"),
    field("Allowed origins (one per line; empty: any site)", origins, "widget-origins"),
    h("button", { type: "submit", class: "primary full", text: "Save widget settings" }));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      await put("/settings/widget", current());
      ctx.toast("Widget settings saved");
    } catch (err) {
      fail(err);
    }
  });
  renderFields();

  const snippet = '<script src="' + location.origin + '/widget.js" data-key="' + key + '" async></script>';
  const code = h("pre", { class: "snippet", id: "embed-snippet", text: snippet });
  const copy = h("button", { type: "button", text: "Copy snippet", onclick: () => navigator.clipboard.writeText(snippet).then(() => ctx.toast("Copied")).catch(fail) });
  const secretBtn = h("button", { type: "button", text: "Show identity secret" });
  const secretOut = h("p");
  secretBtn.addEventListener("click", async () => {
    try {
      const r = await get("/settings/identity-secret");
      secretOut.textContent = "";
      secretOut.append("HMAC-SHA256 key: ", h("code", { class: "secret", text: r.identity_secret }));
    } catch (err) {
      fail(err);
    }
  });
  const left = h("div", null, form,
    h("section", { class: "card" }, h("h2", { text: "Embed snippet" }),
      h("p", { class: "muted", text: "Paste before </body> on every page of your site." }), code, copy,
      h("h2", { text: "Signed identity" }),
      h("p", { class: "muted", text: "Call LiveChat.identify(userId, hex HMAC-SHA256(secret, userId)) computed on your server." }),
      secretBtn, secretOut));
  wrap.append(left, h("div", null, h("h2", { text: "Live preview" }), frame));
}

// ------------------------------------------------------------------ routing

async function routing(box) {
  const [s, gr] = await Promise.all([get("/settings/routing"), get("/groups")]);
  box.appendChild(h("h1", { text: "Routing" }));
  const mode = h("select", null, h("option", { value: "auto", text: "Automatic (least busy agent)", selected: s.mode === "auto" }),
    h("option", { value: "manual", text: "Manual (agents pick from the queue)", selected: s.mode === "manual" }));
  const timeout = h("input", { type: "number", min: 0, step: 1, value: s.agent_response_timeout_s });
  const abandon = h("input", { type: "number", min: 0, max: 86400, step: 1, value: s.abandon_queued_after_s });
  const sticky = h("input", { type: "checkbox", checked: s.sticky_agent });
  const stickyNew = h("input", { type: "checkbox", checked: !!s.sticky_new_chats });
  const inviteTtl = h("input", { type: "number", min: 0, max: 86400, step: 1, value: s.invitation_expires_after_s ?? 600 });
  const group = h("select", null, h("option", { value: "", text: "(whole workspace)" }), gr.groups.map((g) => h("option", { value: g.id, text: g.name, selected: g.id === s.default_group_id })));
  const form = h("form", { class: "card" }, h("h2", { text: "How chats reach agents" }),
    field("Mode", mode, "routing-mode"),
    field("Re-route if the agent does not answer within (s)", timeout, "routing-timeout"),
    field("Close queued chats after (s, 0 = never)", abandon, "routing-abandon"),
    field("Prefer the visitor's previous agent", sticky, "routing-sticky"),
    field("A returning visitor's new chat goes to their last agent", stickyNew, "routing-sticky-new"),
    field("Default group", group, "routing-group"),
    field("Unanswered invitations expire after (s, 0 = never)", inviteTtl, "routing-invite-ttl"),
    h("button", { type: "submit", class: "primary full", text: "Save routing" }));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      await put("/settings/routing", {
        mode: mode.value, agent_response_timeout_s: Number(timeout.value), abandon_queued_after_s: Number(abandon.value),
        sticky_agent: sticky.checked, sticky_new_chats: stickyNew.checked, default_group_id: group.value || null,
        invitation_expires_after_s: Number(inviteTtl.value),
      });
      ctx.toast("Routing saved");
    } catch (err) {
      fail(err);
    }
  });
  box.appendChild(form);
}

// ------------------------------------------------------------------ export

async function exportScreen(box) {
  box.appendChild(h("h1", { text: "Export" }));
  box.appendChild(h("section", { class: "card" },
    h("p", { text: "Download everything the workspace holds (conversations, events, visitors, agents) as JSON lines, or one row per conversation as CSV." }),
    h("p", { class: "row" },
      h("a", { href: "/api/v1/export?format=jsonl", download: "livechat-export.jsonl", text: "Download JSONL" }),
      h("a", { href: "/api/v1/export?format=csv", download: "livechat-conversations.csv", text: "Download CSV" }))));
  const visitor = h("input", { placeholder: "visitor id", "aria-label": "Visitor id", maxLength: 128 });
  const link = h("a", { text: "Download this visitor's data", href: "#" });
  visitor.addEventListener("input", () => {
    link.href = "/api/v1/export" + qs({ format: "jsonl", visitor_id: visitor.value.trim() });
  });
  box.appendChild(h("section", { class: "card" }, h("h2", { text: "One visitor (data subject request)" }), h("p", { class: "row" }, visitor, link)));
}
