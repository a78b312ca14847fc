// The composer: reply, internal note or whisper; canned responses on "/"; typing indicators
// for the visitor; files dropped or attached go to the open chat.
import { h, newId } from "/widget/client.js";
import { initFiles } from "./files.js";
import { $, S, currentChat, toast } from "./state.js";
import { renderLog } from "./chat_view.js";

function composerMode() {
  const checked = document.querySelector("input[name=mode]:checked");
  return checked ? checked.value : "reply";
}
document.querySelectorAll("input[name=mode]").forEach((r) => r.addEventListener("change", () => {
  $("composer").className = "composer mode-" + composerMode();
  $("composer-input").placeholder = composerMode() === "reply" ? "Type a reply… (/ for canned responses, Enter to send)" : composerMode() === "note" ? "Internal note: only agents see it" : "Whisper: only the chat's agents see it";
}));

function sendComposer() {
  const input = $("composer-input");
  let text = input.value.trim();
  if (!text || !S.openId) return;
  const exact = /^\/(\S+)$/.exec(text);
  if (exact) {
    const c = S.canned.find((x) => x.shortcut === exact[1]);
    if (c) text = c.text;
  }
  input.value = "";
  hideSuggest();
  stopTyping();
  S.outbox.add({ client_msg_id: newId(), conversation_id: S.openId, text, kind: composerMode() });
  renderLog();
}

initFiles({
  convId: () => S.openId,
  send: (convId, files) => {
    S.outbox.add({ client_msg_id: newId(), conversation_id: convId, text: "", kind: "reply", files });
    renderLog();
  },
  onError: (text) => toast(text, "error"),
});

$("composer").addEventListener("submit", (ev) => {
  ev.preventDefault();
  sendComposer();
});

$("composer-input").addEventListener("keydown", (ev) => {
  const sug = S.suggest;
  if (!$("canned-suggest").hidden && sug.items.length) {
    if (ev.key === "ArrowDown" || ev.key === "ArrowUp") {
      ev.preventDefault();
      sug.index = (sug.index + (ev.key === "ArrowDown" ? 1 : sug.items.length - 1)) % sug.items.length;
      renderSuggest();
      return;
    }
    if (ev.key === "Enter" || ev.key === "Tab") {
      ev.preventDefault();
      pickCanned(sug.items[sug.index]);
      return;
    }
    if (ev.key === "Escape") {
      hideSuggest();
      return;
    }
  }
  if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) {
    ev.preventDefault();
    sendComposer();
  }
});

$("composer-input").addEventListener("input", () => {
  const text = $("composer-input").value;
  const m = /^\/(\S*)$/.exec(text);
  if (m) {
    const items = S.canned.filter((c) => c.shortcut.toLowerCase().startsWith(m[1].toLowerCase())).slice(0, 8);
    S.suggest = { items, index: 0 };
    if (items.length) renderSuggest();
    else hideSuggest();
  } else hideSuggest();
  if (composerMode() === "reply") typingTick(text);
});

function renderSuggest() {
  const ul = $("canned-suggest");
  ul.textContent = "";
  S.suggest.items.forEach((c, i) => {
    ul.appendChild(h("li", {
      role: "option",
      id: "canned-" + i,
      "aria-selected": i === S.suggest.index ? "true" : "false",
      onmousedown: (ev) => {
        ev.preventDefault();
        pickCanned(c);
      },
    }, h("b", { text: "/" + c.shortcut }), c.text));
  });
  ul.hidden = false;
  $("composer-input").setAttribute("aria-activedescendant", "canned-" + S.suggest.index);
}

function hideSuggest() {
  $("canned-suggest").hidden = true;
  $("composer-input").removeAttribute("aria-activedescendant");
}

function pickCanned(c) {
  $("composer-input").value = c.text;
  hideSuggest();
  $("composer-input").focus();
}

function typingTick(text) {
  const c = currentChat();
  if (!c || c.state === "closed" || !S.conn.ready) return;
  if (!text) {
    stopTyping();
    return;
  }
  const now = Date.now();
  if (!S.typingOn || now - S.typingSentAt > 2000) {
    S.typingOn = true;
    S.typingSentAt = now;
    S.conn.request("typing", { conversation_id: S.openId, is_typing: true }, { queue: false }).catch(() => {});
  }
  clearTimeout(S.typingTimer);
  S.typingTimer = setTimeout(stopTyping, 4000);
}

export function stopTyping() {
  clearTimeout(S.typingTimer);
  if (S.typingOn && S.openId && S.conn.ready) {
    S.conn.request("typing", { conversation_id: S.openId, is_typing: false }, { queue: false }).catch(() => {});
  }
  S.typingOn = false;
}
