// The demo site's own script: shows the JavaScript API a customer can use.
document.addEventListener("DOMContentLoaded", () => {
  const log = document.getElementById("demo-events");
  const whenReady = (fn) => {
    if (window.LiveChat && window.LiveChat.on) fn(window.LiveChat);
    else setTimeout(() => whenReady(fn), 100);
  };
  whenReady((lc) => {
    for (const name of ["ready", "open", "close", "chat_started", "chat_ended", "message", "unread"]) {
      lc.on(name, (detail) => {
        if (log) log.textContent = "LiveChat event: " + name + (detail != null ? " " + JSON.stringify(detail) : "");
      });
    }
  });
  const open = document.getElementById("demo-open");
  if (open) open.addEventListener("click", () => whenReady((lc) => lc.open()));
  const ident = document.getElementById("demo-identify");
  if (ident) {
    ident.addEventListener("click", () =>
      whenReady((lc) => lc.setVisitor({ name: "Demo Visitor", email: "visitor@example.com", attributes: { plan: "Business" } })),
    );
  }
});
