// Admin screen: webhook subscriptions, their delivery log and redelivery (docs/webhooks.md).
// Everything goes through the admin API (/api/v1/webhooks); text from the API is set with
// textContent only.
import { h } from "/widget/client.js";
import { get, post, patch, del } from "./api.js";

export const EVENT_TYPES = [
  "chat.started",
  "message.created",
  "chat.assigned",
  "chat.transferred",
  "chat.closed",
  "chat.rated",
  "offline_message.created",
  "visitor.identified",
  "agent.status",
];

function when(ts) {
  return ts == null ? "" : new Date(ts * 1000).toLocaleString();
}

function showSecret(box, label, secret) {
  const old = box.querySelector("#webhook-secret-card");
  if (old) old.remove();
  box.prepend(h("p", { class: "card", role: "status", id: "webhook-secret-card" }, label + " ",
    h("code", { class: "secret", id: "webhook-secret", text: secret }), " (shown only once: keep it on the receiving side)"));
}

export async function webhooks(box, ctx) {
  const fail = (err) => ctx.toast(err.message || "Failed", "error");
  const res = await get("/webhooks");
  box.textContent = "";
  box.appendChild(h("h1", { text: "Webhooks" }));
  box.appendChild(h("p", { class: "muted", text: "Signed HTTPS deliveries of chat events to your systems. See docs/webhooks.md for the payloads and how to verify the signature." }));

  const url = h("input", { id: "webhook-url", type: "url", required: true, maxLength: 2000, placeholder: "https://example.com/livechat" });
  const description = h("input", { id: "webhook-description", maxLength: 200 });
  const boxes = EVENT_TYPES.map((t) => h("label", { class: "check" },
    h("input", { type: "checkbox", name: "webhook-event", value: t, checked: t === "message.created" }), " " + t));
  const form = h("form", { class: "card", id: "webhook-create" },
    h("h2", { text: "New webhook" }),
    h("label", { for: "webhook-url", text: "Endpoint URL" }), url,
    h("label", { for: "webhook-description", text: "Description" }), description,
    h("fieldset", null, h("legend", { text: "Events" }), boxes),
    h("button", { type: "submit", class: "primary full", text: "Add webhook" }));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const types = [...form.querySelectorAll("input[name=webhook-event]:checked")].map((i) => i.value);
    const body = { url: url.value.trim(), event_types: types };
    if (description.value.trim()) body.description = description.value.trim();
    try {
      const created = await post("/webhooks", body);
      ctx.toast("Webhook added");
      await webhooks(box, ctx);
      showSecret(box, "Signing secret:", created.secret);
    } catch (err) {
      fail(err);
    }
  });
  box.appendChild(form);

  const deliveries = h("section", { id: "webhook-deliveries", class: "card", hidden: true });
  const tbody = h("tbody");
  for (const w of res.webhooks) {
    const status = w.enabled ? "enabled" : "disabled: " + (w.disabled_reason || "");
    const show = h("button", { type: "button", text: "Deliveries" });
    show.addEventListener("click", () => showDeliveries(deliveries, w, ctx).catch(fail));
    const rotate = h("button", { type: "button", text: "Rotate secret" });
    rotate.addEventListener("click", async () => {
      try {
        const out = await post("/webhooks/" + w.id + "/rotate-secret");
        showSecret(box, "New signing secret (the old one keeps working for a day):", out.secret);
      } catch (err) {
        fail(err);
      }
    });
    const toggle = h("button", { type: "button", text: w.enabled ? "Disable" : "Enable" });
    toggle.addEventListener("click", async () => {
      try {
        await patch("/webhooks/" + w.id, { enabled: !w.enabled });
        ctx.toast(w.enabled ? "Webhook disabled" : "Webhook enabled");
        await webhooks(box, ctx);
      } catch (err) {
        fail(err);
      }
    });
    const remove = h("button", { type: "button", class: "danger", text: "Delete" });
    remove.addEventListener("click", async () => {
      if (!confirm("Delete this webhook and its delivery log?")) return;
      try {
        await del("/webhooks/" + w.id);
        ctx.toast("Webhook deleted");
        await webhooks(box, ctx);
      } catch (err) {
        fail(err);
      }
    });
    tbody.appendChild(h("tr", { "data-id": w.id, class: w.enabled ? "" : "disabled" },
      h("td", { text: w.url }), h("td", { text: w.description || "" }),
      h("td", { text: w.event_types.join(", ") }), h("td", { class: "webhook-status", text: status }),
      h("td", { text: String(w.consecutive_failures) }), h("td", { text: "…" + w.secret_hint }),
      h("td", null, show, rotate, toggle, remove)));
  }
  box.appendChild(h("table", { class: "table", id: "webhooks-table" },
    h("thead", null, h("tr", null, ["URL", "Description", "Events", "Status", "Failures in a row", "Secret", ""].map((t) => h("th", { scope: "col", text: t })))),
    tbody));
  box.appendChild(deliveries);
}

async function showDeliveries(section, w, ctx) {
  const fail = (err) => ctx.toast(err.message || "Failed", "error");
  const res = await get("/webhooks/" + w.id + "/deliveries?limit=50");
  section.hidden = false;
  section.textContent = "";
  const refresh = h("button", { type: "button", id: "webhook-deliveries-refresh", text: "Refresh" });
  refresh.addEventListener("click", () => showDeliveries(section, w, ctx).catch(fail));
  section.appendChild(h("h2", { text: "Deliveries to " + w.url }));
  section.appendChild(refresh);
  const attempts = h("div", { id: "webhook-attempts" });
  const tbody = h("tbody");
  for (const d of res.deliveries) {
    const again = h("button", { type: "button", text: "Redeliver" });
    again.addEventListener("click", async () => {
      try {
        await post("/webhooks/" + w.id + "/deliveries/" + d.id + "/redeliver");
        ctx.toast("Delivery queued again");
      } catch (err) {
        fail(err);
      }
    });
    const log = h("button", { type: "button", text: "Attempts" });
    log.addEventListener("click", async () => {
      try {
        const detail = await get("/webhooks/" + w.id + "/deliveries/" + d.id);
        attempts.textContent = "";
        attempts.appendChild(h("h3", { text: "Attempts of " + d.event_type + " " + d.event_id }));
        attempts.appendChild(h("table", { class: "table", id: "webhook-attempts-table" },
          h("thead", null, h("tr", null, ["#", "Status", "Error", "Latency (ms)", "At"].map((t) => h("th", { scope: "col", text: t })))),
          h("tbody", null, detail.attempts_log.map((a) => h("tr", null,
            h("td", { text: String(a.attempt) }), h("td", { text: a.status_code == null ? "" : String(a.status_code) }),
            h("td", { text: a.error || "" }), h("td", { text: a.latency_ms.toFixed(1) }), h("td", { text: when(a.at) }))))));
        attempts.appendChild(h("pre", { class: "payload", text: detail.payload }));
      } catch (err) {
        fail(err);
      }
    });
    tbody.appendChild(h("tr", { "data-id": d.id, "data-state": d.state },
      h("td", { text: d.event_type }), h("td", { class: "delivery-state", text: d.state }),
      h("td", { text: String(d.attempts) }), h("td", { text: d.last_status == null ? "" : String(d.last_status) }),
      h("td", { text: d.last_error || "" }), h("td", { text: when(d.created_at) }),
      h("td", { text: d.state === "pending" ? when(d.next_attempt_at) : "" }), h("td", null, log, again)));
  }
  section.appendChild(h("table", { class: "table", id: "webhook-deliveries-table" },
    h("thead", null, h("tr", null, ["Event", "State", "Attempts", "Last status", "Last error", "Created", "Next attempt", ""].map((t) => h("th", { scope: "col", text: t })))),
    tbody));
  section.appendChild(attempts);
}
