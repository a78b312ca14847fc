// Admin → Hours (issue 16): the workspace's business hours (time zone, weekly periods,
// holidays) and groups' own schedules. Shows whether the workspace is open now. Outside the
// hours the widget offers the offline form and routing assigns nothing (docs/admin-api.md).
import { h } from "/widget/client.js";
import { get, put } from "./api.js";

const DAYS = [["mon", "Monday"], ["tue", "Tuesday"], ["wed", "Wednesday"], ["thu", "Thursday"],
  ["fri", "Friday"], ["sat", "Saturday"], ["sun", "Sunday"]];

// "09:00-12:00, 13:00-17:30" <-> periods of one day
function periodsText(weekly, day) {
  return weekly.filter((p) => p.day === day).map((p) => p.open + "-" + p.close).join(", ");
}

function parsePeriods(day, text) {
  return text.split(",").map((s) => s.trim()).filter(Boolean).map((s) => {
    const [open, close] = s.split("-").map((x) => x.trim());
    return { day, open, close };
  });
}

function scheduleEditor(prefix, sched) {
  const tz = h("input", { id: prefix + "-tz", value: sched.time_zone || "UTC", maxLength: 64, required: true });
  const days = DAYS.map(([day, label]) => {
    const input = h("input", { id: prefix + "-" + day, value: periodsText(sched.weekly || [], day), placeholder: "closed, or 09:00-17:00, 18:00-20:00" });
    return { day, label, input };
  });
  const holidays = h("input", { id: prefix + "-holidays", value: (sched.holidays || []).join(", "), placeholder: "2026-12-25, 2027-01-01" });
  const nodes = [
    h("label", { for: tz.id, text: "Time zone (IANA, e.g. Europe/Paris)" }), tz,
    ...days.flatMap((d) => [h("label", { for: d.input.id, text: d.label }), d.input]),
    h("label", { for: holidays.id, text: "Holidays (closed all day)" }), holidays,
  ];
  const read = () => ({
    time_zone: tz.value.trim(),
    weekly: days.flatMap((d) => parsePeriods(d.day, d.input.value)),
    holidays: holidays.value.split(",").map((s) => s.trim()).filter(Boolean),
  });
  return { nodes, read };
}

export async function hoursScreen(box, ctx) {
  const fail = (err) => ctx.toast(err.message || "Failed", "error");
  const [res, gr] = await Promise.all([get("/settings/hours"), get("/groups")]);
  const hours = res.hours;
  box.textContent = "";
  box.appendChild(h("h1", { text: "Business hours" }));
  box.appendChild(h("p", { id: "hours-now", class: "card", role: "status",
    text: !hours.enabled ? "No business hours: always open." : res.open_now ? "Open now." : "Closed now: visitors see the offline form." }));
  const enabled = h("input", { id: "hours-enabled", type: "checkbox", checked: hours.enabled });
  const main = scheduleEditor("hours", hours);
  const groupEditors = gr.groups.map((g) => {
    const own = (hours.groups || []).find((x) => x.group_id === g.id);
    const on = h("input", { id: "hours-g-" + g.id + "-on", type: "checkbox", checked: !!own });
    const ed = scheduleEditor("hours-g-" + g.id, own || { time_zone: hours.time_zone });
    return { g, on, ed };
  });
  const form = h("form", { id: "hours-form", class: "card" },
    h("label", { for: "hours-enabled" }, enabled, " Use business hours"),
    ...main.nodes,
    groupEditors.map(({ g, on, ed }) => h("fieldset", null, h("legend", { text: g.name }),
      h("label", { for: on.id }, on, " Own hours for this group"), ...ed.nodes)),
    h("button", { type: "submit", class: "primary full", text: "Save hours" }));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      await put("/settings/hours", {
        enabled: enabled.checked, ...main.read(),
        groups: groupEditors.filter((x) => x.on.checked).map((x) => ({ group_id: x.g.id, ...x.ed.read() })),
      });
      ctx.toast("Hours saved");
      await hoursScreen(box, ctx);
    } catch (err) {
      fail(err);
    }
  });
  box.appendChild(form);
}
