// Files in the console: attach (button, drag and drop, paste) and show what a chat's messages
// carry. Uploads go to /api/v1/conversations/{id}/files with the session cookie and the CSRF
// header; the message then carries the file ids. Images show inline (<img> with the cookie),
// other files as links. The server serves every file as a download (Content-Disposition:
// attachment, nosniff), so opening one never runs it in our origin.
import { h } from "/widget/client.js";

const IMAGE_TYPES = ["image/png", "image/jpeg", "image/gif", "image/webp"];

function fileUrl(id) {
  return "/api/v1/files/" + encodeURIComponent(id);
}

async function upload(convId, file) {
  const headers = {};
  const csrf = sessionStorage.getItem("lc-csrf");
  if (csrf) headers["X-CSRF-Token"] = csrf;
  const url = "/api/v1/conversations/" + encodeURIComponent(convId) + "/files?name=" +
    encodeURIComponent(file.name || "pasted-image.png");
  const res = await fetch(url, { method: "POST", credentials: "same-origin", headers, body: file });
  const data = await res.json().catch(() => null);
  if (!res.ok) throw new Error((data && data.error && data.error.message) || "upload failed");
  return data;
}

/** Show a message's files under its text (once per node). */
export function renderFiles(li, files) {
  if (!files || !files.length || li.querySelector(".files")) return;
  const box = h("div", { class: "files" });
  for (const f of files) {
    const link = h("a", { class: "file", href: fileUrl(f.id), target: "_blank", rel: "noopener", title: f.name });
    if (IMAGE_TYPES.includes(f.type)) link.appendChild(h("img", { class: "thumb", src: fileUrl(f.id), alt: f.name }));
    else link.textContent = f.name + " (" + Math.max(1, Math.round(f.size / 1024)) + " KB)";
    box.appendChild(link);
  }
  li.insertBefore(box, li.querySelector(".meta"));
  const text = li.querySelector(".text");
  if (text && !text.textContent) text.hidden = true; // a file without words: no empty bubble
}

/** Wire attaching in the composer; send(files) gets [{id, name, type, size}]. */
export function initFiles({ convId, send, onError }) {
  const row = document.querySelector("#composer .composer-row");
  const input = h("input", { type: "file", multiple: true, hidden: true, id: "composer-file" });
  const button = h("button", {
    type: "button", id: "composer-attach", class: "ghost", title: "Attach a file",
    "aria-label": "Attach a file", text: "Attach", onclick: () => input.click(),
  });
  row.insertBefore(button, document.getElementById("composer-send"));
  row.appendChild(input);
  const take = async (list) => {
    const id = convId();
    const picked = [...list].slice(0, 10);
    if (!id || !picked.length) return;
    try {
      const done = await Promise.all(picked.map((f) => upload(id, f)));
      send(id, done.map((d) => ({ id: d.id, name: d.name, type: d.type, size: d.size })));
    } catch (err) {
      onError(String(err.message || err));
    }
  };
  input.addEventListener("change", () => {
    take(input.files);
    input.value = "";
  });
  const pane = document.getElementById("chat-pane");
  pane.addEventListener("dragover", (ev) => {
    if (ev.dataTransfer && [...ev.dataTransfer.types].includes("Files")) ev.preventDefault();
  });
  pane.addEventListener("drop", (ev) => {
    if (ev.dataTransfer && ev.dataTransfer.files.length) {
      ev.preventDefault();
      take(ev.dataTransfer.files);
    }
  });
  document.getElementById("composer-input").addEventListener("paste", (ev) => {
    const files = ev.clipboardData ? ev.clipboardData.files : null;
    if (files && files.length) {
      ev.preventDefault();
      take(files);
    }
  });
}
