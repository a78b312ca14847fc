// Account security in the console: the second login step and forced enrollment, "Sign in with
// SSO", the agent's own two-factor settings (#/security) and the admin screen (#/admin/security:
// two-factor policy, resets, OpenID Connect). Text from the API is set with textContent; the QR
// code is an <img> of the server's SVG data URI.
import { h } from "/widget/client.js";
import { get, post, put, del } from "./api.js";

const ROLES = ["agent", "supervisor", "admin", "owner"];
const SSO_ERRORS = {
  sso_unknown: "There is no single sign-on by that name.",
  sso_expired: "The sign-in took too long or was started elsewhere; try again.",
  sso_denied: "The identity provider refused the sign-in.",
  sso_invalid_token: "The identity provider's answer could not be verified.",
  sso_unavailable: "The identity provider could not be reached; try again later.",
  sso_no_role: "Your account has no role in this workspace.",
  seats_exhausted: "All agent seats of this workspace are taken.",
  account_disabled: "This account is disabled.",
  workspace_suspended: "The workspace is suspended.",
};

const $ = (id) => document.getElementById(id);

function field(label, input, id) {
  input.id = id;
  return [h("label", { for: id, text: label }), input];
}

function codeInput(id) {
  return h("input", {
    id, inputMode: "numeric", autocomplete: "one-time-code", required: true, maxLength: 64,
  });
}

function recoveryList(codes) {
  return h("div", { class: "card", role: "status", id: "recovery-box" },
    h("p", { text: "Recovery codes: each works once if you lose your phone. Store them now; they are shown only once." }),
    h("ol", { id: "recovery-codes", class: "secret" }, codes.map((c) => h("li", { text: c }))));
}

function enrollmentView(enrollment) {
  return [
    h("p", { text: "Scan this QR code with an authenticator app, or type the key in by hand." }),
    h("img", { src: enrollment.qr_svg, alt: "QR code for your authenticator app", id: "totp-qr", width: 200, height: 200 }),
    h("p", null, "Key: ", h("code", { class: "secret", id: "totp-secret", text: enrollment.secret })),
  ];
}

// ------------------------------------------------------------------ login

// Called by app.js when the password step answers {second_factor, pending_token}.
export function secondFactor(pending, done) {
  const card = $("login-form");
  const box = h("form", { class: "card login-card", id: "login-2fa", "aria-labelledby": "login-2fa-title" });
  card.hidden = true;
  $("sso-login")?.setAttribute("hidden", "");
  card.after(box);
  const error = h("p", { class: "error", role: "alert", id: "login-2fa-error" });
  const restart = h("button", { type: "button", class: "ghost", text: "Start over", onclick: () => location.reload() });
  if (pending.second_factor === "totp") {
    const code = codeInput("login-code");
    box.append(
      h("h1", { id: "login-2fa-title", text: "Two-factor login" }),
      h("label", { for: "login-code", text: "Code from your authenticator app, or a recovery code" }),
      code,
      h("button", { type: "submit", class: "primary", text: "Verify" }),
      error, restart);
    code.focus();
    box.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      error.textContent = "";
      try {
        const me = await post("/auth/login/2fa", { pending_token: pending.pending_token, code: code.value.trim() });
        box.remove();
        done(me);
      } catch (err) {
        error.textContent = err.message || "Wrong code";
        code.select();
      }
    });
    return;
  }
  // The workspace requires two-factor login and this account has none yet: enroll first.
  box.append(h("h1", { id: "login-2fa-title", text: "Set up two-factor login" }),
    h("p", { text: "Your workspace requires a second factor before you can log in." }));
  post("/auth/2fa/enroll", { pending_token: pending.pending_token }).then((enrollment) => {
    const code = codeInput("login-code");
    box.append(...enrollmentView(enrollment),
      h("label", { for: "login-code", text: "Code shown by the app" }), code,
      h("button", { type: "submit", class: "primary", text: "Turn on and log in" }), error, restart);
    code.focus();
    box.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      error.textContent = "";
      try {
        const res = await post("/auth/2fa/enroll/confirm", { pending_token: pending.pending_token, code: code.value.trim() });
        box.textContent = "";
        box.append(recoveryList(res.recovery_codes),
          h("button", { type: "button", class: "primary", id: "recovery-continue", text: "I have stored them: continue",
            onclick: async () => { box.remove(); done(await get("/me")); } }));
      } catch (err) {
        error.textContent = err.message || "Wrong code";
      }
    });
  }).catch((err) => { box.append(h("p", { class: "error", role: "alert", text: err.message }), restart); });
}

// "Sign in with SSO" under the password form, and the error an SSO attempt came back with.
export function setupSsoLogin() {
  const form = $("login-form");
  if (!form || $("sso-login")) return;
  const slug = h("input", { id: "sso-slug", autocomplete: "organization", maxLength: 40, required: true,
    value: localStorage.getItem("lc-sso-slug") || "", placeholder: "your workspace's SSO name" });
  const sso = h("form", { class: "card login-card", id: "sso-login", "aria-label": "Single sign-on" },
    h("label", { for: "sso-slug", text: "Workspace SSO name" }), slug,
    h("button", { type: "submit", id: "sso-button", text: "Sign in with SSO" }));
  sso.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const name = slug.value.trim().toLowerCase();
    localStorage.setItem("lc-sso-slug", name);
    location.assign("/api/v1/auth/sso/" + encodeURIComponent(name) + "/start");
  });
  form.after(sso);
  const params = new URLSearchParams(location.search);
  const error = params.get("sso_error");
  if (error) {
    $("login-error").textContent = SSO_ERRORS[error] || "Single sign-on failed (" + error + ").";
    history.replaceState(null, "", location.pathname + location.hash);
  }
}

// ------------------------------------------------------------------ #/security (every agent)

export async function renderSecurity(box, ctx) {
  box.textContent = "";
  box.append(h("h1", { text: "Security" }));
  const status = await get("/me/2fa");
  const section = h("section", { class: "card", id: "twofa-card" });
  box.append(section);
  if (!status.enabled) {
    section.append(h("h2", { text: "Two-factor login is off" }),
      h("p", { text: status.required ? "Your workspace requires it: set it up now." : "Add a code from an authenticator app to your password." }));
    const start = h("button", { type: "button", class: "primary", id: "twofa-start", text: "Set up two-factor login" });
    section.append(start);
    start.addEventListener("click", async () => {
      try {
        const enrollment = await post("/me/2fa/enroll");
        start.remove();
        const code = codeInput("twofa-code");
        const form = h("form", { id: "twofa-confirm" },
          ...enrollmentView(enrollment),
          h("label", { for: "twofa-code", text: "Code shown by the app" }), code,
          h("button", { type: "submit", class: "primary", text: "Turn on" }));
        section.append(form);
        form.addEventListener("submit", async (ev) => {
          ev.preventDefault();
          try {
            const res = await post("/me/2fa/confirm", { code: code.value.trim() });
            ctx.toast("Two-factor login is on");
            await renderSecurity(box, ctx);
            box.append(recoveryList(res.recovery_codes));
          } catch (err) {
            ctx.toast(err.message, "error");
          }
        });
        code.focus();
      } catch (err) {
        ctx.toast(err.message, "error");
      }
    });
    return;
  }
  section.append(h("h2", { text: "Two-factor login is on" }),
    h("p", { id: "recovery-left", text: status.recovery_codes_left + " recovery codes left." }));
  const renewCode = codeInput("renew-code");
  const renew = h("form", { id: "twofa-renew" },
    h("label", { for: "renew-code", text: "Current code (to make new recovery codes)" }), renewCode,
    h("button", { type: "submit", text: "New recovery codes" }));
  renew.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      const res = await post("/me/2fa/recovery-codes", { code: renewCode.value.trim() });
      await renderSecurity(box, ctx);
      box.append(recoveryList(res.recovery_codes));
    } catch (err) {
      ctx.toast(err.message, "error");
    }
  });
  section.append(renew);
  if (!status.required) {
    const offCode = codeInput("off-code");
    const off = h("form", { id: "twofa-off" },
      h("label", { for: "off-code", text: "Current code (to turn two-factor login off)" }), offCode,
      h("button", { type: "submit", class: "danger", text: "Turn off" }));
    off.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      try {
        await post("/me/2fa/disable", { code: offCode.value.trim() });
        ctx.toast("Two-factor login is off");
        await renderSecurity(box, ctx);
      } catch (err) {
        ctx.toast(err.message, "error");
      }
    });
    section.append(off);
  }
}

// ------------------------------------------------------------------ #/admin/security

export async function securityAdmin(box, ctx) {
  const [overview, list] = await Promise.all([get("/settings/security"), get("/agents")]);
  let sso = null;
  try {
    sso = await get("/settings/sso");
  } catch (err) {
    if (err.status !== 404) throw err;
  }
  box.append(h("h1", { text: "Sign-in and two-factor" }));

  const policy = h("select", null,
    [["none", "Nobody"], ["admins", "Owners and admins"], ["all", "Every agent"]].map(([v, t]) =>
      h("option", { value: v, text: t, selected: overview.require_2fa === v })));
  const policyForm = h("form", { class: "card", id: "policy-form" },
    h("h2", { text: "Two-factor login" }),
    field("Required for", policy, "require-2fa"),
    h("button", { type: "submit", class: "primary full", text: "Save policy" }));
  policyForm.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      await put("/settings/security", { require_2fa: policy.value });
      ctx.toast("Policy saved; it applies at each agent's next login");
    } catch (err) {
      ctx.toast(err.message, "error");
    }
  });
  box.append(policyForm);

  const enrolled = new Set(overview.two_factor_agent_ids);
  const rows = list.agents.map((a) => h("tr", null,
    h("td", { text: a.display_name + " (" + a.username + ")" }),
    h("td", { text: enrolled.has(a.id) ? "on" : "off" }),
    h("td", null, enrolled.has(a.id) ? h("button", { type: "button", text: "Reset 2FA", "aria-label": "Reset 2FA of " + a.username,
      onclick: async () => {
        if (!confirm("Remove two-factor login of " + a.username + "? Their sessions end.")) return;
        try {
          await post("/agents/" + encodeURIComponent(a.id) + "/2fa/reset");
          ctx.toast("Two-factor login of " + a.username + " removed");
          box.textContent = "";
          await securityAdmin(box, ctx);
        } catch (err) {
          ctx.toast(err.message, "error");
        }
      } }) : null)));
  box.append(h("table", { class: "table", id: "twofa-agents" },
    h("thead", null, h("tr", null, h("th", { text: "Agent" }), h("th", { text: "Two-factor" }), h("th", { text: "" }))),
    h("tbody", null, rows)));

  const s = sso || { slug: "", issuer: "", client_id: "", role_claim: "roles", role_map: {}, default_role: "agent", sso_only: false, enabled: true };
  const slug = h("input", { required: true, maxLength: 40, value: s.slug, pattern: "[a-z0-9][a-z0-9\\-]{1,39}" });
  const issuer = h("input", { required: true, maxLength: 500, value: s.issuer, placeholder: "https://id.example.com" });
  const clientId = h("input", { required: true, maxLength: 500, value: s.client_id });
  const secret = h("input", { type: "password", maxLength: 1000, autocomplete: "off", placeholder: sso ? "leave empty to keep" : "" });
  const claim = h("input", { required: true, maxLength: 100, value: s.role_claim });
  const map = h("textarea", { rows: 3, value: Object.entries(s.role_map).map(([k, v]) => k + "=" + v).join("\n"), placeholder: "support=agent\nleads=supervisor" });
  const fallback = h("select", null, h("option", { value: "", text: "(refuse the sign-in)", selected: s.default_role == null }),
    ROLES.filter((r) => r !== "owner").map((r) => h("option", { value: r, text: r, selected: s.default_role === r })));
  const only = h("input", { type: "checkbox", checked: s.sso_only });
  const enabled = h("input", { type: "checkbox", checked: s.enabled });
  const ssoForm = h("form", { class: "card", id: "sso-form" },
    h("h2", { text: "Single sign-on (OpenID Connect)" }),
    field("SSO name (typed at login)", slug, "sso-cfg-slug"),
    field("Issuer", issuer, "sso-cfg-issuer"),
    field("Client id", clientId, "sso-cfg-client"),
    field("Client secret", secret, "sso-cfg-secret"),
    field("Role claim", claim, "sso-cfg-claim"),
    field("Role mapping (value=role per line)", map, "sso-cfg-map"),
    field("Role when nothing maps", fallback, "sso-cfg-default"),
    field("SSO only (owners keep passwords)", only, "sso-cfg-only"),
    field("Enabled", enabled, "sso-cfg-enabled"),
    sso ? h("p", { class: "full", id: "sso-redirect", text: "Redirect URI to register at the provider: " + sso.redirect_uri }) : null,
    h("button", { type: "submit", class: "primary full", text: "Save single sign-on" }),
    sso ? h("button", { type: "button", class: "full danger", text: "Remove single sign-on", onclick: async () => {
      try {
        await del("/settings/sso");
        box.textContent = "";
        await securityAdmin(box, ctx);
      } catch (err) {
        ctx.toast(err.message, "error");
      }
    } }) : null);
  ssoForm.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const roleMap = {};
    for (const line of map.value.split("\n")) {
      const [k, v] = line.split("=").map((x) => (x || "").trim());
      if (k && v) roleMap[k] = v;
    }
    const body = {
      slug: slug.value.trim().toLowerCase(), issuer: issuer.value.trim(), client_id: clientId.value.trim(),
      role_claim: claim.value.trim(), role_map: roleMap, default_role: fallback.value || null,
      sso_only: only.checked, enabled: enabled.checked,
    };
    if (secret.value) body.client_secret = secret.value;
    try {
      await put("/settings/sso", body);
      ctx.toast("Single sign-on saved");
      box.textContent = "";
      await securityAdmin(box, ctx);
    } catch (err) {
      ctx.toast(err.message, "error");
    }
  });
  box.append(ssoForm);
}
