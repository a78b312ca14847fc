/*
 * livechat-engine widget loader, served as /widget.js.
 *
 * Embed:  <script src="https://chat.example.com/widget.js" data-key="WIDGET_KEY" async></script>
 *
 * The loader only creates an <iframe> (the chat itself runs inside it, on the chat server's
 * origin, isolated from the page's styles and scripts), resizes it, reports page views, and
 * exposes window.LiveChat. Messages between the two windows are checked both ways: the page
 * accepts only frames from the iframe's window and the chat server's origin; the iframe accepts
 * only this page's origin.
 *
 * API (calls made before the script loaded are queued: window.LiveChat = {q: [["open"]]}):
 *   LiveChat.open(), LiveChat.close(), LiveChat.toggle()
 *   LiveChat.setVisitor({name, email, attributes})
 *   LiveChat.identify(userId, signature)        // signature: hex HMAC-SHA256(identity secret, userId)
 *   LiveChat.on(event, callback) / LiveChat.off(event, callback)
 *     events: ready, open, close, unread (count), message ({author_type, text}), chat_started,
 *             chat_ended
 */
(function () {
  "use strict";
  if (window.LiveChat && window.LiveChat.__loaded) return;

  var script = document.currentScript;
  if (!script || !script.getAttribute("data-key")) {
    script = document.querySelector("script[data-key][src*='widget.js']");
  }
  if (!script) return;
  var key = script.getAttribute("data-key");
  var origin = new URL(script.src, location.href).origin;
  var hostOrigin = location.origin;

  var queued = (window.LiveChat && window.LiveChat.q) || [];
  var listeners = {};
  var pending = [];
  var ready = false;
  var isOpen = false;
  var frame = null;
  var lastUrl = null;
  var side = "right";

  function emit(name, detail) {
    (listeners[name] || []).slice().forEach(function (cb) {
      try {
        cb(detail);
      } catch (err) {
        setTimeout(function () {
          throw err;
        });
      }
    });
  }

  function post(msg) {
    msg.lc = 1;
    if (ready && frame && frame.contentWindow) frame.contentWindow.postMessage(msg, origin);
    else pending.push(msg);
  }

  var BASE =
    "position:fixed;z-index:2147483000;border:0;background:transparent;color-scheme:normal;" +
    "margin:0;padding:0;right:auto;bottom:auto;";
  // Position against what the visitor sees (the visual viewport), not the layout viewport: on a
  // phone, a host page wider than the screen widens the layout viewport, and "right:0;
  // bottom:0; width:100vw" then puts the panel partly off screen to the right and below.
  function layout() {
    if (!frame) return;
    var vv = window.visualViewport;
    var vw = vv ? vv.width : document.documentElement.clientWidth || window.innerWidth;
    var vh = vv ? vv.height : window.innerHeight;
    var ox = vv ? vv.offsetLeft : 0;
    var oy = vv ? vv.offsetTop : 0;
    var small = vw < 480;
    var w, h;
    if (!isOpen) {
      w = 92;
      h = 92;
    } else if (small) {
      w = vw;
      h = vh;
    } else {
      w = Math.min(416, vw);
      h = Math.min(680, vh);
    }
    var left = side === "left" ? ox : ox + vw - w;
    var top = oy + vh - h;
    frame.style.cssText =
      BASE + "width:" + w + "px;height:" + h + "px;left:" + left + "px;top:" + top + "px;";
    // Media queries inside the frame see the frame, not the phone: say which layout it is.
    if (ready) post({ type: "layout", full: isOpen && small });
  }

  function reportPage() {
    var url = location.href;
    if (url === lastUrl) return;
    var referrer = lastUrl || document.referrer || null;
    lastUrl = url;
    post({ type: "page", url: url, title: document.title || null, referrer: referrer });
  }

  function onMessage(ev) {
    if (!frame || ev.source !== frame.contentWindow || ev.origin !== origin) return;
    var msg = ev.data;
    if (!msg || msg.lc !== 1 || typeof msg.type !== "string") return;
    switch (msg.type) {
      case "ready":
        ready = true;
        var backlog = pending;
        pending = [];
        backlog.forEach(function (m) {
          frame.contentWindow.postMessage(m, origin);
        });
        layout();
        emit("ready");
        break;
      case "state":
        if (msg.open !== isOpen) {
          isOpen = !!msg.open;
          layout();
          emit(isOpen ? "open" : "close");
        }
        break;
      case "config":
        side = msg.position === "left" ? "left" : "right";
        layout();
        break;
      case "event":
        if (typeof msg.name === "string") emit(msg.name, msg.detail);
        break;
    }
  }

  function create() {
    frame = document.createElement("iframe");
    frame.src =
      origin + "/widget/frame.html?key=" + encodeURIComponent(key) +
      "&host=" + encodeURIComponent(hostOrigin);
    frame.title = "Live chat";
    frame.setAttribute("allow", "clipboard-write");
    frame.setAttribute("referrerpolicy", "origin");
    frame.id = "livechat-widget-frame";
    layout();
    window.addEventListener("message", onMessage);
    window.addEventListener("resize", layout);
    if (window.visualViewport) {
      // Pinch zoom, the on-screen keyboard and scrolling a wide page move the visual viewport.
      window.visualViewport.addEventListener("resize", layout);
      window.visualViewport.addEventListener("scroll", layout);
    }
    (document.body || document.documentElement).appendChild(frame);
    reportPage();
    // Single-page apps change the URL without loading a page: watch history and hash changes.
    ["pushState", "replaceState"].forEach(function (name) {
      var original = history[name];
      history[name] = function () {
        var result = original.apply(this, arguments);
        setTimeout(reportPage, 0);
        return result;
      };
    });
    window.addEventListener("popstate", reportPage);
    window.addEventListener("hashchange", reportPage);
  }

  var api = {
    __loaded: true,
    open: function () {
      post({ type: "open" });
    },
    close: function () {
      post({ type: "close" });
    },
    toggle: function () {
      post({ type: isOpen ? "close" : "open" });
    },
    isOpen: function () {
      return isOpen;
    },
    setVisitor: function (info) {
      info = info || {};
      post({
        type: "visitor",
        name: info.name == null ? null : String(info.name),
        email: info.email == null ? null : String(info.email),
        attributes: info.attributes && typeof info.attributes === "object" ? info.attributes : {},
      });
    },
    identify: function (userId, signature) {
      post({ type: "identify", user_id: String(userId), signature: String(signature || "") });
    },
    on: function (name, cb) {
      if (typeof cb !== "function") return;
      (listeners[name] = listeners[name] || []).push(cb);
    },
    off: function (name, cb) {
      listeners[name] = (listeners[name] || []).filter(function (x) {
        return x !== cb;
      });
    },
  };
  window.LiveChat = api;
  queued.forEach(function (call) {
    if (call && typeof api[call[0]] === "function") api[call[0]].apply(api, call.slice(1));
  });

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", create);
  else create();
})();
