// The widget's shared state: its parameters (from the iframe URL), the per-site localStorage
// store (namespaced by widget key) and the in-memory state of this tab. frame.js owns the
// connection and changes them; log.js and forms.js read them.

const params = new URLSearchParams(location.search);
export const KEY = params.get("key") || "";
export const HOST = params.get("host") || "";
export const PREVIEW = params.get("preview") === "1"; // the console's live preview: no connection
export const NS = "lc:" + KEY + (PREVIEW ? ":preview:" : ":");
export const $ = (id) => document.getElementById(id);

export const store = {
  get(k, dflt = null) {
    try {
      const v = localStorage.getItem(NS + k);
      return v == null ? dflt : JSON.parse(v);
    } catch (_) {
      return dflt;
    }
  },
  set(k, v) {
    try {
      if (v == null) localStorage.removeItem(NS + k);
      else localStorage.setItem(NS + k, JSON.stringify(v));
    } catch (_) {
      /* private mode: we still work, we just forget on reload */
    }
  },
};

export const state = {
  config: {},
  visitorId: null,
  conv: null, // ConversationSummary (or a stub {conversation_id, state})
  events: new Map(), // seq -> EventView (visible to the visitor)
  open: sessionStorage.getItem(NS + "open") === "1",
  unread: store.get("unread", 0),
  agentsAvailable: true,
  sneakPeek: false,
  queue: null,
  typingTimer: null,
  draftTimer: null,
  lastTypingSent: 0,
  typingActive: false,
  agentTypingUntil: 0,
  page: null,
  historyLoaded: null,
  rated: new Set(store.get("rated", [])),
  offlineSent: false,
  status: "connecting",
};
