// Admin → Triggers (issue 16): auto-replies and rules for queued chats. A trigger fires once a
// queued chat has waited `queue_wait_s` and its visitor matches the conditions; its action is
// an auto-reply to the visitor, a tag, or a move to another group. Each firing is a note in the
// chat for agents; per visitor a trigger fires at most once per cooldown (docs/admin-api.md).
import { h } from "/widget/client.js";
import { get, put } from "./api.js";

const ACTIONS = [["auto_reply", "Auto-reply while queued"], ["add_tag", "Add a tag"], ["assign_group", "Move to group"]];

function row(t, groups, onRemove) {
  const n = (x) => (x == null ? "" : String(x));
  const groupSelect = (value, label) => h("select", { "aria-label": label },
    h("option", { value: "", text: "(any)" }),
    groups.map((g) => h("option", { value: g.id, text: g.name, selected: g.id === value })));
  const f = {
    name: h("input", { value: n(t.name), maxLength: 100, required: true, "aria-label": "Trigger name" }),
    enabled: h("input", { type: "checkbox", checked: t.enabled !== false, "aria-label": "Enabled" }),
    action: h("select", { "aria-label": "Action" }, ACTIONS.map(([v, l]) => h("option", { value: v, text: l, selected: v === t.action }))),
    text: h("textarea", { value: n(t.text), maxLength: 2000, rows: 2, "aria-label": "Auto-reply text" }),
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
  const remove = h("button", { type: "button", class: "danger", text: "Remove", onclick: onRemove });
  const label = (text, el) => h("label", null, text + " ", el);
  const card = h("fieldset", { class: "card trigger" },
    h("legend", null, f.name, " ", label("enabled", f.enabled)),
    label("When a queued chat has waited (s)", f.queue_wait_s),
    label("Page URL contains", f.url_contains), label("Visitor", f.returning),
    label("Attribute", f.attribute), label("equals", f.attribute_value), label("Group", f.group_id),
    label("Then", f.action), label("Reply", f.text), label("Tag", f.tag), label("Group", f.to_group_id),
    label("Per visitor at most every (s)", f.cooldown_s), remove);
  const read = () => {
    const v = (el) => el.value.trim() || null;
    const action = f.action.value;
    return {
      ...(t.id ? { id: t.id } : {}),
      name: f.name.value.trim(), enabled: f.enabled.checked, action,
      queue_wait_s: Number(f.queue_wait_s.value || 0), url_contains: v(f.url_contains),
      returning_visitor: f.returning.value === "" ? null : f.returning.value === "yes",
      attribute: v(f.attribute), attribute_value: v(f.attribute) ? f.attribute_value.value : null,
      group_id: v(f.group_id), cooldown_s: Number(f.cooldown_s.value || 0),
      text: action === "auto_reply" ? v(f.text) : null,
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
  box.appendChild(h("p", { class: "muted", text: "Rules for queued chats. Each firing shows in the chat as a note for agents." }));
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
  const form = h("form", { id: "triggers-form" }, list, addBtn, " ", h("button", { type: "submit", class: "primary", text: "Save triggers" }));
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
