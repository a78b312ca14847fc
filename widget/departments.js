// Departments (issue 16): the groups a workspace marked public, offered as a choice in the
// pre-chat form; the visitor's first message carries the choice as `group_id`, so the new chat
// is routed to that group (docs/widget.md). A config without departments changes nothing.
import { h } from "./client.js";

export function departmentsOf(config) {
  const list = config && Array.isArray(config.departments) ? config.departments : [];
  return list.filter((d) => d && typeof d.id === "string" && typeof d.name === "string");
}

// Adds the select to the pre-chat form's field box (nothing when there are no departments).
export function buildDepartmentSelect(box, list) {
  if (!list.length) return;
  box.appendChild(h("label", { for: "lc-dept", text: "Department" }));
  box.appendChild(
    h(
      "select",
      { id: "lc-dept", name: "lc-dept", required: true },
      h("option", { value: "", text: "Choose…" }),
      list.map((d) => h("option", { value: d.id, text: d.name })),
    ),
  );
}

// The chosen department's id, or null.
export function chosenDepartment() {
  const el = document.getElementById("lc-dept");
  return el && el.value ? el.value : null;
}
