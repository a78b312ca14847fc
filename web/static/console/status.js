// The agent's own status in the header: accepting, away or not accepting (docs/console.md).
// The toggle switches between accepting and not accepting; the select next to it offers all
// three. The server may change the status too (auto-away after idling, offline): every
// `welcome_agent` and own `agent_status` push goes through showStatus.
const LABELS = {
  accepting: "Accepting chats",
  away: "Away",
  not_accepting: "Not accepting chats",
  offline: "Offline",
};

let current = "not_accepting";
let send = null; // async (status) => void, set by initStatus

export function showStatus(status) {
  current = LABELS[status] ? status : "not_accepting";
  const btn = document.getElementById("status-toggle");
  btn.setAttribute("aria-pressed", String(current === "accepting"));
  btn.textContent = LABELS[current];
  btn.dataset.status = current;
  const select = document.getElementById("status-select");
  if (select && current !== "offline") select.value = current;
  return current;
}

async function choose(status, onError) {
  try {
    await send(status);
    showStatus(status);
  } catch (err) {
    onError(err);
    showStatus(current);
  }
}

// request(status) sends set_status; onError(err) tells the agent it failed; onChange(status)
// lets the app keep its own copy.
export function initStatus({ request, onError, onChange }) {
  send = async (status) => {
    await request(status);
    onChange(status);
  };
  const btn = document.getElementById("status-toggle");
  const select = document.createElement("select");
  select.id = "status-select";
  select.className = "status-select";
  select.setAttribute("aria-label", "Your status");
  for (const value of ["accepting", "away", "not_accepting"]) {
    const opt = document.createElement("option");
    opt.value = value;
    opt.textContent = LABELS[value];
    select.appendChild(opt);
  }
  btn.after(select);
  btn.addEventListener("click", () =>
    choose(current === "accepting" ? "not_accepting" : "accepting", onError));
  select.addEventListener("change", () => choose(select.value, onError));
}
