// Files in the widget: attach (button, drag and drop, paste), upload over HTTP with the visitor
// token, then send the message with the file ids. Received files are fetched with the same
// token (a plain <img src> could not carry it) and shown from a blob: URL: images inline, other
// files as download links. The server decides what a file is; we only show what it says.
import { h } from "./client.js";

const IMAGE_TYPES = ["image/png", "image/jpeg", "image/gif", "image/webp"];
const blobs = new Map(); // file id -> Promise<blob: URL>

function upload(key, token, file) {
  const url = "/api/v1/widget/files?key=" + encodeURIComponent(key) +
    "&name=" + encodeURIComponent(file.name || "pasted-image.png");
  return fetch(url, {
    method: "POST",
    credentials: "omit",
    headers: { Authorization: "Bearer " + token },
    body: file,
  }).then(async (res) => {
    const data = await res.json().catch(() => null);
    if (!res.ok) throw new Error((data && data.error && data.error.message) || "upload failed");
    return data;
  });
}

function fileUrl(key, token, id) {
  if (!blobs.has(id)) {
    const url = "/api/v1/widget/files/" + encodeURIComponent(id) + "?key=" + encodeURIComponent(key);
    const p = fetch(url, { credentials: "omit", headers: { Authorization: "Bearer " + token } })
      .then((res) => {
        if (!res.ok) throw new Error("HTTP " + res.status);
        return res.blob();
      })
      .then((b) => URL.createObjectURL(b));
    p.catch(() => blobs.delete(id));
    blobs.set(id, p);
  }
  return blobs.get(id);
}

/** Show a message's files under its text. */
export function renderFiles(li, files, key, token) {
  if (!files || !files.length || li.querySelector(".lc-files")) return;
  const box = h("div", { class: "lc-files" });
  for (const f of files) {
    const link = h("a", { class: "lc-file", download: f.name, text: f.name, title: f.name });
    const item = h("div", { class: "lc-file-item" }, link);
    box.appendChild(item);
    if (!f.id) continue; // still uploading
    fileUrl(key, token(), f.id).then((u) => {
      link.href = u;
      if (IMAGE_TYPES.includes(f.type)) {
        link.textContent = "";
        link.appendChild(h("img", { class: "lc-thumb", src: u, alt: f.name }));
      }
    }, () => {
      link.textContent = f.name + " (unavailable)";
    });
  }
  li.insertBefore(box, li.querySelector(".lc-meta"));
  const text = li.querySelector(".lc-text");
  if (text && !text.textContent) text.hidden = true; // a file without words: no empty bubble
}

/**
 * Wire the attach button, drag and drop on the panel, and paste into the input.
 * send(files) is given [{id, name, type, size}] once every upload succeeded.
 */
export function initFiles({ key, token, send }) {
  const composer = document.getElementById("lc-composer");
  const note = h("p", { class: "lc-banner", role: "alert", hidden: true });
  composer.parentNode.insertBefore(note, composer);
  const onError = (text) => {
    note.textContent = text;
    note.hidden = false;
    setTimeout(() => { note.hidden = true; }, 6000);
  };
  const input = h("input", { type: "file", multiple: true, hidden: true, id: "lc-file" });
  const button = h("button", {
    id: "lc-attach", class: "lc-attach", type: "button", "aria-label": "Attach a file",
    title: "Attach a file", onclick: () => input.click(),
  });
  // A constant icon (no user text ever goes through innerHTML).
  button.innerHTML = '<svg viewBox="0 0 24 24" aria-hidden="true"><path d="M21 11l-8.5 8.5a5 5 0 01-7-7L14 4a3.5 3.5 0 015 5l-8.5 8.5a2 2 0 01-3-3L15 7"/></svg>';
  composer.insertBefore(button, document.getElementById("lc-send"));
  composer.appendChild(input);

  const take = async (list) => {
    const picked = [...list].slice(0, 10);
    if (!picked.length) return;
    if (!token()) return onError("Not connected yet: try again in a moment.");
    try {
      const done = await Promise.all(picked.map((f) => upload(key, token(), f)));
      send(done.map((d) => ({ id: d.id, name: d.name, type: d.type, size: d.size })));
    } catch (err) {
      onError(String(err.message || err));
    }
  };
  input.addEventListener("change", () => {
    take(input.files);
    input.value = "";
  });
  const panel = document.getElementById("lc-panel");
  panel.addEventListener("dragover", (ev) => {
    if (ev.dataTransfer && [...ev.dataTransfer.types].includes("Files")) {
      ev.preventDefault();
      panel.classList.add("lc-drop");
    }
  });
  panel.addEventListener("dragleave", () => panel.classList.remove("lc-drop"));
  panel.addEventListener("drop", (ev) => {
    panel.classList.remove("lc-drop");
    if (ev.dataTransfer && ev.dataTransfer.files.length) {
      ev.preventDefault();
      take(ev.dataTransfer.files);
    }
  });
  document.getElementById("lc-input").addEventListener("paste", (ev) => {
    const files = ev.clipboardData ? ev.clipboardData.files : null;
    if (files && files.length) {
      ev.preventDefault();
      take(files);
    }
  });
}
