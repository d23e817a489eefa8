// The labeling page. Claims, submits and skips with session + CSRF; the texts it shows
// arrive as HTML that the server sanitized (markdown-it without raw HTML, then nh3). Raw
// model text is only ever put into the page with textContent.
//
// Next task in one round trip: an annotator holds one lease at a time, so the next task
// cannot be leased while the current one is open without holding a second slot of the
// queue for the whole time the annotator reads (see annotation.services). Instead, Enter
// sends the answer to the page's submit endpoint, which records it and claims and renders
// the next task in the same request: one round trip, no second lease. The answer is never
// lost: a failed request keeps the ranking and the client token, so a retry is idempotent
// and is handed the same next task.
const root = document.getElementById("annotate");
const ID_SLOT = "987654321"; // the template reverses the per-assignment URLs with this id
const cfg = {
  kind: root.dataset.kind,
  allowTies: root.dataset.allowTies === "true",
  allowSkip: root.dataset.allowSkip === "true",
  leaseSeconds: Number(root.dataset.leaseSeconds),
  nextUrl: root.dataset.nextUrl,
  submitUrl: (id) => root.dataset.submitNextUrl.replace(ID_SLOT, String(id)),
  skipUrl: (id) => root.dataset.skipUrl.replace(ID_SLOT, String(id)),
};
const pairwise = cfg.kind === "pairwise";
const $ = (id) => document.getElementById(id);

let cur = null; // the task on screen
let busy = false;
let ticker = null;

// --- server ---------------------------------------------------------------------------

function csrfToken() {
  const meta = document.querySelector('meta[name="csrf-token"]');
  if (meta && meta.content) return meta.content;
  const match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
  return match ? decodeURIComponent(match[1]) : "";
}

async function api(url, { method = "GET", body } = {}) {
  const headers = { Accept: "application/json" };
  if (method !== "GET") headers["X-CSRFToken"] = csrfToken();
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const res = await fetch(url, {
    method,
    headers,
    credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  let data = null;
  if (res.status !== 204) {
    try {
      data = await res.json();
    } catch {
      data = null;
    }
  }
  return { status: res.status, ok: res.ok, data };
}

function uuid4() {
  if (crypto.randomUUID) return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

// --- messages ---------------------------------------------------------------------------

let sayTimer = null;
let sayUntilAction = false;

function say(text, kind = "", { untilAction = false } = {}) {
  const el = $("message");
  el.textContent = text;
  el.className = `banner ${kind}`;
  el.hidden = !text;
  // Confirmations go away by themselves; errors stay until the next message. A message
  // shown untilAction (a skip's confirmation, "choose first") stays until the annotator
  // next changes the answer: it is about the state they see, which that action changes.
  sayUntilAction = Boolean(text) && untilAction;
  clearTimeout(sayTimer);
  if (kind === "ok" && !untilAction) sayTimer = setTimeout(() => say(""), 2500);
}

function show(which) {
  for (const id of ["loading", "empty", "task"]) $(id).hidden = id !== which;
}

function fmt(seconds) {
  const s = Math.max(0, Math.floor(seconds));
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}

// --- the ranking state ------------------------------------------------------------------
// ``placed`` is the ranking built so far, best first: items {id, joined}, where joined
// means "tied with the item before". Pairwise answers use the same shape.

function snapshot() {
  return { placed: cur.placed.map((p) => ({ ...p })), tieNext: cur.tieNext };
}

function remember() {
  // Every change to the answer passes here.
  if (sayUntilAction) say("");
  cur.history.push(snapshot());
}

function undo() {
  const prev = cur.history.pop();
  if (!prev) return say("Nothing to undo.");
  cur.placed = prev.placed;
  cur.tieNext = prev.tieNext;
  say("");
  paint();
}

function tiers(placed = cur.placed) {
  const out = [];
  for (const p of placed) {
    if (p.joined && out.length) out[out.length - 1].push(p.id);
    else out.push([p.id]);
  }
  return out;
}

function unplaced() {
  const done = new Set(cur.placed.map((p) => p.id));
  return cur.order.filter((id) => !done.has(id));
}

function choosePair(which) {
  const [a, b] = cur.order;
  remember();
  if (which === "left") cur.placed = [{ id: a, joined: false }, { id: b, joined: false }];
  else if (which === "right") cur.placed = [{ id: b, joined: false }, { id: a, joined: false }];
  else cur.placed = [{ id: a, joined: false }, { id: b, joined: true }];
  paint();
}

function place(id, { joined = false, before = null } = {}) {
  remember();
  cur.placed = cur.placed.filter((p) => p.id !== id);
  const item = { id, joined: joined && cur.placed.length > 0 };
  const at = before === null ? -1 : cur.placed.findIndex((p) => p.id === before);
  if (at < 0) cur.placed.push(item);
  else {
    // The inserted card takes the place of the one it was dropped on, tie flag included.
    item.joined = cur.placed[at].joined && at > 0;
    cur.placed[at].joined = false;
    cur.placed.splice(at, 0, item);
  }
  cur.tieNext = false;
  paint();
}

function placeByKey(n) {
  const id = cur.order[n - 1];
  if (id === undefined) return;
  if (cur.placed.some((p) => p.id === id)) return say(`Response ${n} is already placed: undo or move it.`);
  place(id, { joined: cur.tieNext });
}

function moveBy(id, delta) {
  const i = cur.placed.findIndex((p) => p.id === id);
  const j = i + delta;
  if (i < 0 || j < 0 || j >= cur.placed.length) return;
  remember();
  // Cards move; the tier structure (which places are tied) stays where it is.
  const ids = cur.placed.map((p) => p.id);
  [ids[i], ids[j]] = [ids[j], ids[i]];
  cur.placed = cur.placed.map((p, k) => ({ id: ids[k], joined: p.joined }));
  paint();
  const row = $("order").querySelector(`[data-id="${id}"]`);
  if (row) row.focus();
}

function toggleTie(id) {
  const i = cur.placed.findIndex((p) => p.id === id);
  if (i <= 0 || !cfg.allowTies) return;
  remember();
  cur.placed[i].joined = !cur.placed[i].joined;
  paint();
}

function removePlaced(id) {
  const i = cur.placed.findIndex((p) => p.id === id);
  if (i < 0) return;
  remember();
  // The next card takes over this place rather than joining the tier above.
  if (cur.placed[i + 1] && !cur.placed[i].joined) cur.placed[i + 1].joined = false;
  cur.placed.splice(i, 1);
  paint();
}

function isComplete() {
  return cur.placed.length === cur.order.length;
}

// --- drawing ------------------------------------------------------------------------------

function label(id) {
  const n = cur.order.indexOf(id) + 1;
  return pairwise ? (n === 1 ? "Left" : "Right") : String(n);
}

function placeNames() {
  // "1st", "2nd", "tied 2nd" ... by tier, for each placed id.
  const names = new Map();
  tiers().forEach((tier, t) => {
    const ord = ["1st", "2nd", "3rd"][t] || `${t + 1}th`;
    for (const id of tier) names.set(id, tier.length > 1 ? `tied ${ord}` : ord);
  });
  return names;
}

function setSanitizedHtml(el, html) {
  // Only HTML from the render endpoint comes here: it went through the server's
  // markdown-it (raw HTML off) and nh3 allowlist. Parsed in an inert document first.
  const doc = new DOMParser().parseFromString(html, "text/html");
  el.replaceChildren(...doc.body.childNodes);
}

function drawTask() {
  const turns = $("turns");
  turns.replaceChildren();
  cur.rendered.prompt.forEach((m) => {
    const turn = document.createElement("article");
    turn.className = `turn role-${m.role === "assistant" ? "assistant" : m.role === "system" ? "system" : "user"}`;
    const who = document.createElement("p");
    who.className = "who";
    who.textContent = m.role;
    const body = document.createElement("div");
    body.className = "md";
    setSanitizedHtml(body, m.html);
    turn.append(who, body);
    turns.append(turn);
  });

  const list = $("responses");
  list.replaceChildren();
  cur.rendered.responses.forEach((r, i) => {
    const card = document.createElement("article");
    card.className = "response";
    card.dataset.id = String(r.id);
    card.tabIndex = 0;
    const head = document.createElement("header");
    const key = document.createElement("span");
    key.className = "key";
    key.textContent = String(i + 1);
    const title = document.createElement("span");
    title.className = "title";
    title.textContent = pairwise ? (i === 0 ? "Left  (1 / ←)" : "Right  (2 / →)") : `Response ${i + 1}`;
    const badge = document.createElement("span");
    badge.className = "badge";
    head.append(key, title, badge);
    const body = document.createElement("div");
    body.className = "md";
    setSanitizedHtml(body, r.html);
    card.append(head, body);
    if (!pairwise) {
      card.draggable = true;
      card.addEventListener("dragstart", (e) => {
        e.dataTransfer.setData("text/plain", String(r.id));
        e.dataTransfer.effectAllowed = "move";
      });
    } else {
      card.addEventListener("click", (e) => {
        if (e.target.closest("a")) return;
        choosePair(i === 0 ? "left" : "right");
      });
    }
    list.append(card);
  });
}

// The prompt's box is short so that the page fits the window: a conversation opens at its last
// turn, the one the responses answer (its start in view); the earlier turns are a scroll up.
function showLastTurn() {
  const turns = $("turns");
  const last = turns.lastElementChild;
  turns.scrollTop = last ? last.getBoundingClientRect().top - turns.firstElementChild.getBoundingClientRect().top : 0;
}

function paint() {
  const names = placeNames();
  const best = tiers()[0] || [];
  for (const card of $("responses").children) {
    const id = Number(card.dataset.id);
    const badge = card.querySelector(".badge");
    const name = names.get(id);
    card.classList.toggle("placed", !pairwise && Boolean(name));
    card.classList.toggle("best", pairwise && best.includes(id) && best.length === 1);
    card.classList.toggle("tied", pairwise && best.length === 2);
    badge.textContent = pairwise ? (best.length === 2 ? "tie" : best[0] === id ? "better" : "") : name || "";
  }
  if (!pairwise) drawOrder(names);
  const choice = $("choice");
  if (pairwise) {
    const t = tiers();
    choice.textContent = !t.length
      ? "Choose with 1 / ← or 2 / →" + (cfg.allowTies ? ", tie with 3 / ↓" : "")
      : t.length === 1
        ? "Tie. Enter submits."
        : `${label(t[0][0])} is better. Enter submits.`;
  } else {
    const left = unplaced().length;
    choice.textContent = left
      ? `${left} left to place${cur.tieNext ? " (next ties with the last)" : ""}${left === 1 ? "; Enter puts it last and submits" : ""}`
      : "Ranking complete. Enter submits.";
  }
  $("submit").disabled = busy || !(isComplete() || (!pairwise && unplaced().length === 1));
}

function drawOrder(names) {
  const ol = $("order");
  ol.replaceChildren();
  cur.placed.forEach((p, i) => {
    const li = document.createElement("li");
    li.className = "row" + (p.joined && i > 0 ? " joined" : "");
    li.dataset.id = String(p.id);
    li.tabIndex = 0;
    li.draggable = true;
    li.setAttribute("aria-label", `${names.get(p.id)}: response ${label(p.id)}`);
    const where = document.createElement("span");
    where.className = "place";
    where.textContent = names.get(p.id);
    const key = document.createElement("span");
    key.className = "key";
    key.textContent = label(p.id);
    const text = document.createElement("span");
    text.className = "excerpt";
    text.textContent = excerpt(p.id);
    li.append(where, key, text, tool("↑", "Move up", () => moveBy(p.id, -1)), tool("↓", "Move down", () => moveBy(p.id, 1)));
    if (cfg.allowTies && i > 0) li.append(tool(p.joined ? "untie" : "tie ↑", "Tie with the one above", () => toggleTie(p.id)));
    li.append(tool("✕", "Take out of the ranking", () => removePlaced(p.id)));
    li.addEventListener("dragstart", (e) => {
      e.dataTransfer.setData("text/plain", String(p.id));
      e.dataTransfer.effectAllowed = "move";
    });
    li.addEventListener("dragover", (e) => {
      e.preventDefault();
      li.classList.add("drop-before");
    });
    li.addEventListener("dragleave", () => li.classList.remove("drop-before"));
    li.addEventListener("drop", (e) => {
      e.preventDefault();
      e.stopPropagation();
      const id = Number(e.dataTransfer.getData("text/plain"));
      if (id && id !== p.id && cur.order.includes(id)) place(id, { before: p.id });
      else paint();
    });
    ol.append(li);
  });
  const end = document.createElement("li");
  end.className = "drop-end";
  end.textContent = cur.placed.length ? "Drop here to put a response last" : "Drop responses here, best first";
  ol.append(end);
}

function tool(text, title, onClick) {
  const b = document.createElement("button");
  b.type = "button";
  b.className = "tool";
  b.textContent = text;
  b.title = title;
  b.setAttribute("aria-label", title);
  b.addEventListener("click", onClick);
  return b;
}

function excerpt(id) {
  const r = cur.assignment.responses.find((x) => x.id === id);
  const text = r ? r.text.replace(/\s+/g, " ").trim() : "";
  return text.length > 90 ? `${text.slice(0, 90)}…` : text;
}

// --- the loop -----------------------------------------------------------------------------

async function loadNext() {
  busy = true;
  show("loading");
  try {
    const res = await api(cfg.nextUrl, { method: "POST" });
    if (!res.ok) return fail(res, "Could not get a task");
    showNext(res.data.next);
  } catch (err) {
    say(`Could not reach the server (${err.message}). Reload the page to try again.`, "error");
  } finally {
    busy = false;
    if (cur) paint();
  }
}

function showNext(next) {
  if (!next) {
    cur = null;
    stopTicker();
    show("empty");
    return;
  }
  begin(next);
}

function fail(res, what) {
  const detail = res.data && res.data.detail ? `: ${res.data.detail}` : ` (HTTP ${res.status})`;
  say(what + detail, "error");
}

function begin(assignment) {
  cur = {
    assignment,
    rendered: assignment,
    order: assignment.display_order,
    placed: [],
    tieNext: false,
    history: [],
    token: uuid4(),
    startedAt: Date.now(),
    expiresAt: Date.parse(assignment.expires_at),
  };
  $("task").dataset.assignment = String(assignment.id);
  setProgress(assignment.progress);
  for (const r of document.querySelectorAll('input[name="confidence"]')) r.checked = false;
  $("rationale").value = "";
  drawTask();
  show("task");
  showLastTurn();
  say(assignment.resumed ? "Resumed the task you had open." : "");
  startTicker();
  $("workspace").focus({ preventScroll: true });
  window.scrollTo(0, 0);
}

function setProgress(p) {
  if (!p) return;
  $("done-today").textContent = String(p.done_today);
  $("done-project").textContent = String(p.done_project);
}

function bump(id) {
  $(id).textContent = String(Number($(id).textContent) + 1);
}

async function submit() {
  if (!cur || busy) return;
  if (!pairwise && unplaced().length === 1) place(unplaced()[0]);
  if (!isComplete()) {
    return say(pairwise ? "Choose a response first." : "Place every response first.", "error", { untilAction: true });
  }
  const body = {
    ranking: tiers(),
    client_token: cur.token,
    time_taken_ms: Date.now() - cur.startedAt,
  };
  const conf = document.querySelector('input[name="confidence"]:checked');
  if (conf) body.confidence = Number(conf.value);
  const rationale = $("rationale").value.trim();
  if (rationale) body.rationale = rationale;
  busy = true;
  show("loading");
  const t0 = performance.now();
  let res;
  try {
    res = await api(cfg.submitUrl(cur.assignment.id), { method: "POST", body });
  } catch (err) {
    busy = false;
    show("task");
    paint();
    return say(`Not saved: could not reach the server (${err.message}). Press Enter to try again.`, "error");
  }
  if (!res.ok) {
    // A malformed answer or a refusal that leaves the task with the annotator: stay on it.
    busy = false;
    show("task");
    paint();
    return fail(res, "Not saved");
  }
  const { submitted, refused, next } = res.data;
  busy = false;
  showNext(next); // the next task carries the server's progress counts
  if (cur) paint();
  if (submitted) {
    if (!next && submitted.created) {
      bump("done-today");
      bump("done-project");
    }
    say("Saved.", "ok");
  } else if (refused) {
    say(`Not saved: ${refused.detail}.`, "error");
  }
  // For bench/ui_latency.py and the browser tests: Enter to the next task being usable.
  root.dataset.lastSubmitMs = String(Math.round(performance.now() - t0));
}

function openSkip() {
  if (!cfg.allowSkip || !cur || busy) return;
  const dialog = $("skip-dialog");
  $("skip-reason").value = "";
  dialog.showModal();
  $("skip-reason").focus();
}

async function doSkip(reason) {
  busy = true;
  show("loading");
  const res = await api(cfg.skipUrl(cur.assignment.id), { method: "POST", body: { reason } }).catch((err) => ({
    ok: false,
    status: 0,
    data: { detail: err.message },
  }));
  busy = false;
  if (!res.ok) {
    show("task");
    paint();
    return fail(res, "Not skipped");
  }
  await loadNext();
  // After the next task is drawn (drawing it clears the banner), unless loading it failed.
  if ($("message").hidden) say("Skipped.", "ok", { untilAction: true });
}

// --- time ---------------------------------------------------------------------------------

function startTicker() {
  stopTicker();
  tick();
  ticker = setInterval(tick, 1000);
}

function stopTicker() {
  if (ticker) clearInterval(ticker);
  ticker = null;
  $("lease-warning").hidden = true;
  $("timer").textContent = "–";
}

function tick() {
  if (!cur) return;
  $("timer").textContent = fmt((Date.now() - cur.startedAt) / 1000);
  const left = (cur.expiresAt - Date.now()) / 1000;
  const warnAt = Math.min(120, cfg.leaseSeconds / 4);
  const warn = $("lease-warning");
  if (left <= 0) {
    warn.textContent = "Your hold on this task has ended. Submitting may still work if nobody else took it.";
    warn.hidden = false;
  } else if (left <= warnAt) {
    warn.textContent = `Your hold on this task ends in ${fmt(left)}. Submit soon, or it may go to someone else.`;
    warn.hidden = false;
  } else {
    warn.hidden = true;
  }
}

// --- keys ---------------------------------------------------------------------------------

function typing(el) {
  return el && (el.tagName === "TEXTAREA" || el.tagName === "SELECT" || (el.tagName === "INPUT" && el.type !== "radio"));
}

document.addEventListener("keydown", (e) => {
  if (e.defaultPrevented || e.altKey || e.metaKey) return;
  const active = document.activeElement;
  if ($("skip-dialog") && $("skip-dialog").open) return;
  if (e.key === "Enter" && e.ctrlKey) {
    e.preventDefault();
    return submit();
  }
  if (typing(active) || e.ctrlKey) return;
  // Arrow keys inside the confidence radios change the confidence, as they natively do.
  if (active && active.type === "radio" && e.key.startsWith("Arrow")) return;
  if (e.key === "g" || e.key === "G") {
    $("guidelines").open = !$("guidelines").open;
    return;
  }
  if (!cur || busy) return;
  const key = e.key;
  if (key === "Enter") {
    if (active && (active.tagName === "BUTTON" || active.tagName === "A")) return;
    e.preventDefault();
    return submit();
  }
  if (key === "Backspace" || key === "z" || key === "Z") {
    e.preventDefault();
    return undo();
  }
  if (key === "s" || key === "S") {
    e.preventDefault();
    return openSkip();
  }
  if (pairwise) {
    if (key === "1" || key === "ArrowLeft") choosePair("left");
    else if (key === "2" || key === "ArrowRight") choosePair("right");
    else if ((key === "3" || key === "ArrowDown") && cfg.allowTies) choosePair("tie");
    else return;
    e.preventDefault();
    return;
  }
  if (/^[1-9]$/.test(key)) {
    e.preventDefault();
    return placeByKey(Number(key));
  }
  if ((key === "=" || key === "t" || key === "T") && cfg.allowTies) {
    e.preventDefault();
    if (!cur.placed.length || !unplaced().length) return say("A tie joins the next response to the last one placed.");
    remember();
    cur.tieNext = true;
    return paint();
  }
  // A focused ranking row, or a focused card that is already placed, moves with the arrows.
  const focused = active && active.closest ? active.closest("#order li.row, #responses article.placed") : null;
  if (focused && ["ArrowUp", "ArrowDown", "ArrowLeft", "ArrowRight"].includes(key)) {
    e.preventDefault();
    const id = Number(focused.dataset.id);
    moveBy(id, key === "ArrowUp" || key === "ArrowLeft" ? -1 : 1);
    if (focused.tagName === "ARTICLE") $("responses").querySelector(`[data-id="${id}"]`).focus();
  }
});

// --- wiring -------------------------------------------------------------------------------

$("submit").addEventListener("click", submit);
$("undo").addEventListener("click", () => cur && undo());
$("confidence-clear").addEventListener("click", () => {
  for (const r of document.querySelectorAll('input[name="confidence"]')) r.checked = false;
});
if ($("skip")) {
  $("skip").addEventListener("click", openSkip);
  $("skip-cancel").addEventListener("click", () => $("skip-dialog").close());
  $("skip-form").addEventListener("submit", (e) => {
    const reason = $("skip-reason").value.trim();
    if (!reason) {
      e.preventDefault();
      return;
    }
    doSkip(reason);
  });
}
if (!pairwise) {
  const ol = $("order");
  ol.addEventListener("dragover", (e) => e.preventDefault());
  ol.addEventListener("drop", (e) => {
    e.preventDefault();
    const id = Number(e.dataTransfer.getData("text/plain"));
    if (cur && id && cur.order.includes(id)) place(id);
  });
}

loadNext();
