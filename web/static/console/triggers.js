// Admin → Triggers (issue 16). A trigger fires on an event: a queued chat (after waiting
// `queue_wait_s`: an auto-reply, a tag, a move to another group) or a visitor browsing before
// any chat (page-view triggers, triggers_visit.js: a greeting, an invitation, or a tag / group
// for the chat they start). Each firing is a note in the chat for agents (greetings also on the
// live visitor list); per visitor a trigger fires at most once per cooldown (docs/admin-api.md).
import { h } from "/widget/client.js";
import { get, put } from "./api.js";
import { EVENTS, NEEDS_TEXT, fillActions, visitFields } from "./triggers_visit.js";

function row(t, groups, onRemove) {
  const n = (x) => (x == null ? "" : String(x));
  const event = t.event || "queued";
  const groupSelect = (value, label) => h("select", { "aria-label": label },
    h("option", { value: "", text: "(any)" }),
    groups.map((g) => h("option", { value: g.id, text: g.name, selected: g.id === value })));
  const f = {
    name: h("input", { value: n(t.name), maxLength: 100, required: true, "aria-label": "Trigger name" }),
    enabled: h("input", { type: "checkbox", checked: t.enabled !== false, "aria-label": "Enabled" }),
    event: h("select", { "aria-label": "When" }, EVENTS.map(([v, l]) => h("option", { value: v, text: l, selected: v === event }))),
    action: h("select", { "aria-label": "Action" }),
    text: h("textarea", { value: n(t.text), maxLength: 2000, rows: 2, "aria-label": "Message text" }),
    tag: h("input", { value: n(t.tag), maxLength: 64, "aria-label": "Tag" }),
    to_group_id: groupSelect(t.to_group_id, "Move to group"),
    queue_wait_s: h("input", { type: "number", min: 0, max: 86400, value: t.queue_wait_s ?? 0, "aria-label": "After waiting (s)" }),
    url_contains: h("input", { value: n(t.url_contains), maxLength: 300, "aria-label": "Page URL contains" }),
    returning: h("select", { "aria-label": "Visitor" },
      h("option", { value: "", text: "any visitor", selected: t.returning_visitor == null }),
      h("option", { value: "yes", text: "returning visitors", selected: t.returning_visitor === true }),
      h("option", { value: "no", text: "first visits", selected: t.returning_visitor === false })),
    attribute: h("input", { value: n(t.attribute), maxLength: 64, "aria-label": "Attribute" }),
    attribute_value: h("input", { value: n(t.attribute_value), maxLength: 300, "aria-label": "Attribute value" }),
    group_id: groupSelect(t.group_id, "Only chats of group"),
    cooldown_s: h("input", { type: "number", min: 0, max: 604800, value: t.cooldown_s ?? 3600, "aria-label": "Per visitor at most every (s)" }),
  };
  fillActions(f.action, event, t.action);
  const visit = visitFields(t);
  const remove = h("button", { type: "button", class: "danger", text: "Remove", onclick: onRemove });
  const label = (text, el, cls) => h("label", cls ? { class: cls } : null, text + " ", el);
  const labels = {
    wait: label("When a queued chat has waited (s)", f.queue_wait_s, "queued-only"),
    group: label("Group", f.group_id, "queued-only"),
    text: label("Message", f.text),
    tag: label("Tag", f.tag),
    to_group: label("Group", f.to_group_id),
  };
  const card = h("fieldset", { class: "card trigger" },
    h("legend", null, f.name, " ", label("enabled", f.enabled)),
    label("When", f.event), labels.wait, ...visit.labels,
    label("Page URL contains", f.url_contains), label("Visitor", f.returning),
    label("Attribute", f.attribute), label("equals", f.attribute_value), labels.group,
    label("Then", f.action), visit.sender, labels.text, labels.tag, labels.to_group,
    label("Per visitor at most every (s)", f.cooldown_s), remove);
  // Show only what the chosen event and action use.
  const sync = () => {
    const ev = f.event.value;
    const action = f.action.value;
    labels.wait.hidden = labels.group.hidden = ev !== "queued";
    for (const l of visit.labels) l.hidden = ev !== "page_view";
    visit.sender.hidden = !(action === "greeting" || action === "invitation");
    labels.text.hidden = !NEEDS_TEXT.has(action);
    labels.tag.hidden = action !== "add_tag";
    labels.to_group.hidden = action !== "assign_group";
  };
  f.event.addEventListener("change", () => {
    fillActions(f.action, f.event.value, f.action.value);
    sync();
  });
  f.action.addEventListener("change", sync);
  sync();
  const read = () => {
    const v = (el) => el.value.trim() || null;
    const ev = f.event.value;
    const action = f.action.value;
    const queued = ev === "queued";
    return {
      ...(t.id ? { id: t.id } : {}),
      name: f.name.value.trim(), enabled: f.enabled.checked, event: ev, action,
      queue_wait_s: queued ? Number(f.queue_wait_s.value || 0) : 0,
      group_id: queued ? v(f.group_id) : null,
      ...(queued ? { time_on_page_s: 0, time_on_site_s: 0, sender_name: null } : visit.read(action)),
      url_contains: v(f.url_contains),
      returning_visitor: f.returning.value === "" ? null : f.returning.value === "yes",
      attribute: v(f.attribute), attribute_value: v(f.attribute) ? f.attribute_value.value : null,
      cooldown_s: Number(f.cooldown_s.value || 0),
      text: NEEDS_TEXT.has(action) ? v(f.text) : null,
      tag: action === "add_tag" ? v(f.tag) : null,
      to_group_id: action === "assign_group" ? v(f.to_group_id) : null,
    };
  };
  return { card, read };
}

export async function triggersScreen(box, ctx) {
  const fail = (err) => ctx.toast(err.message || "Failed", "error");
  const [res, gr] = await Promise.all([get("/triggers"), get("/groups")]);
  box.textContent = "";
  box.appendChild(h("h1", { text: "Triggers" }));
  box.appendChild(h("p", { class: "muted", text: "Greetings for visitors who browse, and rules for queued chats. Each firing shows in the chat as a note for agents." }));
  const list = h("div", { id: "triggers-list" });
  let rows = [];
  const add = (t) => {
    const r = row(t, gr.groups, () => { rows = rows.filter((x) => x !== r); r.card.remove(); });
    rows.push(r);
    list.appendChild(r.card);
  };
  res.triggers.forEach(add);
  const addBtn = h("button", { id: "triggers-add", type: "button", text: "Add trigger",
    onclick: () => add({ name: "New trigger", action: "auto_reply", text: "Thanks for waiting, an agent will be with you shortly." }) });
  const addGreeting = h("button", { id: "triggers-add-greeting", type: "button", text: "Add greeting",
    onclick: () => add({ name: "New greeting", event: "page_view", action: "greeting", time_on_page_s: 30, text: "Hi! Can we help you with anything?" }) });
  const form = h("form", { id: "triggers-form" }, list, addBtn, " ", addGreeting, " ", h("button", { type: "submit", class: "primary", text: "Save triggers" }));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      await put("/triggers", { triggers: rows.map((r) => r.read()) });
      ctx.toast("Triggers saved");
      await triggersScreen(box, ctx);
    } catch (err) {
      fail(err);
    }
  });
  box.appendChild(form);
}
