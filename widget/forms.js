// The panel's forms: the pre-chat form, the offline message, the transcript by email, the
// rating after a chat, and "Start a new chat". frame.js hands them the connection and the
// commands they call.
import { ProtocolError, h, newId } from "./client.js";
import { buildDepartmentSelect, chosenDepartment, departmentsOf } from "./departments.js";
import { $, KEY, state, store } from "./state.js";

export function prechatFields() {
  const c = state.config;
  return c.pre_chat_enabled && Array.isArray(c.pre_chat_fields) ? c.pre_chat_fields : [];
}

export function buildPrechat() {
  const box = $("lc-prechat-fields");
  // Built again when the configuration arrives again (the hello after the page's first fetch):
  // what the visitor has already typed or chosen must survive it.
  const kept = new Map();
  for (const el of box.querySelectorAll("input, textarea, select")) {
    if (el.value) kept.set(el.name, el.value);
  }
  box.textContent = "";
  prechatFields().forEach((f, i) => {
    const id = "lc-pc-" + i;
    const name = String(f.name || "field" + i);
    box.appendChild(h("label", { for: id, text: f.label || name }));
    box.appendChild(h(f.kind === "textarea" ? "textarea" : "input", {
      id, name, required: !!f.required, maxLength: 1000,
      type: f.kind === "textarea" ? null : name === "email" || f.kind === "email" ? "email" : "text",
      autocomplete: name === "email" ? "email" : name === "name" ? "name" : "off",
    }));
  });
  buildDepartmentSelect(box, departmentsOf(state.config));
  for (const el of box.querySelectorAll("input, textarea, select")) {
    const value = kept.get(el.name);
    if (value === undefined) continue;
    if (el.tagName !== "SELECT" || [...el.options].some((o) => o.value === value)) el.value = value;
  }
}

const UNREACHED = new Set(["disconnected", "offline", "timeout", "unavailable", "shutting_down"]);

function formError(form, err) {
  let p = form.querySelector(".lc-error");
  if (!p) form.appendChild((p = h("p", { class: "lc-error", role: "alert" })));
  let text = "";
  if (err instanceof ProtocolError) {
    // The server's refusal says what to correct; a lost connection only asks to try again.
    text = UNREACHED.has(err.code) ? "Could not reach us just now. Please try again." : err.message;
  } else if (err) {
    text = String(err);
  }
  p.textContent = text;
  p.hidden = !err;
}

export function wireForms({ conn, setProfile, sendText, setConversation, renderAll }) {
  const input = $("lc-input");
  $("lc-prechat").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const profile = { attributes: {} };
    for (const el of $("lc-prechat-fields").querySelectorAll("input, textarea")) {
      const v = el.value.trim();
      if (!v) continue;
      if (el.name === "name" || el.name === "email") profile[el.name] = v;
      else profile.attributes[el.name] = v;
    }
    const form = ev.currentTarget;
    formError(form, null);
    try {
      await setProfile(profile, { strict: true });
    } catch (err) {
      formError(form, err);
      return;
    }
    const text = $("lc-prechat-msg").value;
    store.set("prechat_done", true);
    $("lc-prechat-msg").value = "";
    sendText(text, chosenDepartment());
    renderAll();
    input.focus();
  });
  $("lc-offline").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const form = ev.currentTarget;
    const btn = form.querySelector("button[type=submit]");
    btn.disabled = true;
    formError(form, null);
    try {
      await conn.request("offline_message", {
        name: $("lc-off-name").value.trim() || null,
        email: $("lc-off-email").value.trim(),
        text: $("lc-off-msg").value.trim(),
        client_msg_id: form.dataset.cmid || (form.dataset.cmid = newId()),
      });
      $("lc-off-done").hidden = false;
      $("lc-off-msg").value = "";
      delete form.dataset.cmid;
    } catch (err) {
      formError(form, err);
    } finally {
      btn.disabled = false;
    }
  });
  $("lc-transcript").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const form = ev.currentTarget;
    formError(form, null);
    $("lc-tr-done").hidden = true;
    try {
      const res = await fetch("/api/v1/widget/transcript", {
        method: "POST",
        credentials: "omit",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({
          key: KEY,
          visitor_token: store.get("token") || "",
          conversation_id: state.conv ? state.conv.conversation_id : "",
          email: $("lc-tr-email").value.trim(),
        }),
      });
      if (!res.ok) {
        const body = await res.json().catch(() => null);
        throw new Error((body && body.error && body.error.message) || "Could not send it.");
      }
      $("lc-tr-done").hidden = false;
    } catch (err) {
      formError(form, err.message || String(err));
    }
  });
  const stars = [...document.querySelectorAll(".lc-stars label")];
  const paint = () => {
    const checked = document.querySelector(".lc-stars input:checked");
    const n = checked ? Number(checked.value) : 0;
    stars.forEach((l, i) => l.classList.toggle("on", i < n));
  };
  document.querySelectorAll(".lc-stars input").forEach((r) => r.addEventListener("change", paint));
  $("lc-rating").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const form = ev.currentTarget;
    const checked = form.querySelector("input[name=rating]:checked");
    if (!checked || !state.conv) {
      formError(form, "Choose a rating from 1 to 5 stars.");
      return;
    }
    formError(form, null);
    try {
      await conn.request("rate", {
        conversation_id: state.conv.conversation_id,
        rating: Number(checked.value),
        comment: $("lc-rate-comment").value.trim() || null,
      });
      state.rated.add(state.conv.conversation_id);
      store.set("rated", [...state.rated].slice(-20));
      renderAll();
    } catch (err) {
      formError(form, err);
    }
  });
  $("lc-new").addEventListener("click", () => {
    setConversation(null);
    state.events.clear();
    renderAll();
    input.focus();
  });
}
