// Notifications of new chats: the title flashes, and with notifications on, a beep and (when
// the console is not visible) a desktop notification.
import { $, S } from "./state.js";

export function renderNotifyButton() {
  const btn = $("notify-btn");
  btn.textContent = S.notify ? "Notifications on" : "Enable notifications";
  btn.setAttribute("aria-pressed", String(S.notify));
}

$("notify-btn").addEventListener("click", async () => {
  S.notify = !S.notify;
  if (S.notify) {
    if ("Notification" in window && Notification.permission === "default") {
      try {
        await Notification.requestPermission();
      } catch (_) {
        /* denied */
      }
    }
    ensureAudio();
  }
  localStorage.setItem("lc-console-notify", S.notify ? "1" : "0");
  renderNotifyButton();
});

function ensureAudio() {
  if (!S.audio && window.AudioContext) S.audio = new AudioContext();
  if (S.audio && S.audio.state === "suspended") S.audio.resume();
}

function beep() {
  ensureAudio();
  const ctx = S.audio;
  if (!ctx) return;
  const now = ctx.currentTime;
  [880, 1320].forEach((freq, i) => {
    const osc = ctx.createOscillator();
    const gain = ctx.createGain();
    osc.frequency.value = freq;
    gain.gain.setValueAtTime(0.0001, now + i * 0.16);
    gain.gain.exponentialRampToValueAtTime(0.2, now + i * 0.16 + 0.02);
    gain.gain.exponentialRampToValueAtTime(0.0001, now + i * 0.16 + 0.15);
    osc.connect(gain).connect(ctx.destination);
    osc.start(now + i * 0.16);
    osc.stop(now + i * 0.16 + 0.16);
  });
}

export function alertNewChat(title, body) {
  document.title = "● " + title + " · livechat";
  setTimeout(() => (document.title = "Agent console · livechat"), 8000);
  if (!S.notify) return;
  try {
    beep();
  } catch (_) {
    /* no audio device */
  }
  if ("Notification" in window && Notification.permission === "granted" && document.visibilityState !== "visible") {
    const n = new Notification(title, { body: String(body).slice(0, 140), tag: "livechat-new" });
    n.onclick = () => {
      window.focus();
      n.close();
    };
  }
}
