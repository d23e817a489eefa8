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
//
// Besides: "both are bad" (a full tie, flagged), releasing a task back to the queue, a review
// of the annotator's last answer (changed while its task is open, the leased task kept
// meanwhile), and a manager's preview, which claims nothing (data-preview).
const root = document.getElementById("annotate");
const ID_SLOT = "987654321"; // the template reverses the per-assignment URLs with this id
const cfg = {
  kind: root.dataset.kind,
  allowTies: root.dataset.allowTies === "true",
  allowSkip: root.dataset.allowSkip === "true",
  allowBothBad: root.dataset.allowBothBad === "true",
  preview: root.dataset.preview === "true",
  leaseSeconds: Number(root.dataset.leaseSeconds),
  nextUrl: root.dataset.nextUrl,
  submitUrl: (id) => root.dataset.submitNextUrl.replace(ID_SLOT, String(id)),
  skipUrl: (id) => root.dataset.skipUrl.replace(ID_SLOT, String(id)),
  releaseUrl: (id) => root.dataset.releaseUrl.replace(ID_SLOT, String(id)),
  lastUrl: root.dataset.lastUrl,
  amendUrl: (id) => root.dataset.amendUrl.replace(ID_SLOT, String(id)),
  previewUrl: root.dataset.previewUrl,
};
const pairwise = cfg.kind === "pairwise";
const $ = (id) => document.getElementById(id);

let cur = null; // the task on screen (cur.review: the last answer, shown again; cur.readOnly: nothing to change)
let held = null; // the leased task, kept while the annotator reviews their last answer
let busy = false;
let ticker = null;
let lastPromptKey = null; // the prompt of the task shown before, for the "same prompt" note
let previewIndex = 0; // the preview's place in the queue of open tasks
let hovered = null; // the response card under the pointer, which J / K scroll

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

// ``api`` for calls whose failure the page shows and moves on from: a network error becomes a
// failed reply (status 0, the error's message as the detail) instead of a rejection.
function apiOrFailure(url, options) {
  return api(url, options).catch((err) => ({ ok: false, status: 0, data: { detail: err.message } }));
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
  return { placed: cur.placed.map((p) => ({ ...p })), tieNext: cur.tieNext, bothBad: cur.bothBad };
}

function remember() {
  // Every change to the answer passes here; any change but "both are bad" itself ends that verdict.
  if (sayUntilAction) say("");
  cur.history.push(snapshot());
  cur.bothBad = false;
}

function undo() {
  const prev = cur.history.pop();
  if (!prev) return say("Nothing to undo.");
  cur.placed = prev.placed;
  cur.tieNext = prev.tieNext;
  cur.bothBad = prev.bothBad;
  say("");
  paint();
}

function chooseBothBad() {
  // A full tie of every response, flagged: "both are bad" (pairwise), "all are bad" (ranking).
  if (!cfg.allowBothBad || !cur || cur.readOnly) return;
  remember();
  cur.placed = cur.order.map((id, i) => ({ id, joined: i > 0 }));
  cur.tieNext = false;
  cur.bothBad = true;
  paint();
}

function placedFrom(tiersList) {
  return tiersList.flatMap((tier) => tier.map((id, i) => ({ id, joined: i > 0 })));
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
  if (cur.readOnly) return;
  const [a, b] = cur.order;
  remember();
  if (which === "left") cur.placed = [{ id: a, joined: false }, { id: b, joined: false }];
  else if (which === "right") cur.placed = [{ id: b, joined: false }, { id: a, joined: false }];
  else cur.placed = [{ id: a, joined: false }, { id: b, joined: true }];
  paint();
}

function place(id, { joined = false, before = null } = {}) {
  if (cur.readOnly) return;
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
  cardSizes.disconnect();
  hovered = null;
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
    // "more ↓" over the bottom of a card whose text goes on below (sticky, so it stays at the edge).
    const more = document.createElement("div");
    more.className = "more";
    more.setAttribute("aria-hidden", "true");
    const cue = document.createElement("span");
    cue.textContent = "more ↓";
    cue.addEventListener("click", (e) => {
      e.stopPropagation();
      scrollCard(card, 1);
    });
    more.append(cue);
    card.append(head, body, more);
    card.addEventListener("scroll", () => updateMore(card), { passive: true });
    card.addEventListener("mouseenter", () => (hovered = card));
    card.addEventListener("mouseleave", () => {
      if (hovered === card) hovered = null;
    });
    cardSizes.observe(card);
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
  $("same-prompt").hidden = !cur.samePrompt;
}

// --- long responses ------------------------------------------------------------------------

const cardSizes = new ResizeObserver((entries) => entries.forEach((entry) => updateMore(entry.target)));

function updateMore(card) {
  // Text left below the visible part of the card (a few pixels of rounding aside).
  card.classList.toggle("more-below", card.scrollHeight - card.scrollTop - card.clientHeight > 4);
}

function scrollCard(card, direction) {
  card.scrollBy({ top: direction * Math.max(40, Math.round(card.clientHeight * 0.8)), behavior: "instant" });
  updateMore(card);
}

function scrollCards(direction) {
  // The focused card, else the one under the pointer, else all of them together.
  const active = document.activeElement;
  const focused = active && active.closest ? active.closest("#responses > article") : null;
  const cards = focused ? [focused] : hovered && hovered.isConnected ? [hovered] : [...$("responses").children];
  cards.forEach((card) => scrollCard(card, direction));
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
  const bad = cur.bothBad;
  for (const card of $("responses").children) {
    const id = Number(card.dataset.id);
    const badge = card.querySelector(".badge");
    const name = names.get(id);
    card.classList.toggle("placed", !pairwise && Boolean(name) && !bad);
    card.classList.toggle("best", pairwise && best.includes(id) && best.length === 1);
    card.classList.toggle("tied", pairwise && best.length === 2 && !bad);
    card.classList.toggle("bad", bad);
    badge.textContent = bad
      ? pairwise
        ? "both bad"
        : "all bad"
      : pairwise
        ? best.length === 2
          ? "tie"
          : best[0] === id
            ? "better"
            : ""
        : name || "";
  }
  if (!pairwise) drawOrder(names);
  if ($("both-bad")) $("both-bad").setAttribute("aria-pressed", String(bad));
  const choice = $("choice");
  const enter = cur.review ? "Enter saves the change." : "Enter submits.";
  if (cur.readOnly) {
    choice.textContent = cur.review ? cur.review.closed : "";
  } else if (bad) {
    choice.textContent = `${pairwise ? "Both" : "All"} are bad. ${enter}`;
  } else if (pairwise) {
    const t = tiers();
    choice.textContent = !t.length
      ? "Choose with 1 / ← or 2 / →" + (cfg.allowTies ? ", tie with 3 / ↓" : "") + (cfg.allowBothBad ? ", both bad with B" : "")
      : t.length === 1
        ? `Tie. ${enter}`
        : `${label(t[0][0])} is better. ${enter}`;
  } else {
    const left = unplaced().length;
    choice.textContent = left
      ? `${left} left to place${cur.tieNext ? " (next ties with the last)" : ""}${left === 1 ? "; Enter puts it last and submits" : ""}`
      : `Ranking complete. ${enter}`;
  }
  $("submit").disabled = busy || cur.readOnly || !(isComplete() || (!pairwise && unplaced().length === 1));
  // A final answer (or a preview) is shown, not edited.
  $("undo").disabled = Boolean(cur.readOnly);
  if ($("both-bad")) $("both-bad").disabled = Boolean(cur.readOnly);
  document.querySelector("fieldset.confidence").disabled = Boolean(cur.readOnly);
  $("rationale").readOnly = Boolean(cur.readOnly);
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

function samePromptAsBefore(task) {
  // The next task may be another pair of responses to the very prompt just answered (data sets
  // often compare several model pairs on one instruction): say so, or it looks like a repeat.
  const key = JSON.stringify(task.prompt);
  const same = key === lastPromptKey;
  lastPromptKey = key;
  return same;
}

function begin(assignment) {
  cur = {
    assignment,
    rendered: assignment,
    order: assignment.display_order,
    placed: [],
    tieNext: false,
    bothBad: false,
    history: [],
    token: uuid4(),
    startedAt: Date.now(),
    expiresAt: Date.parse(assignment.expires_at),
    samePrompt: samePromptAsBefore(assignment),
  };
  $("task").dataset.assignment = String(assignment.id);
  setProgress(assignment.progress);
  setForm({ confidence: null, rationale: "" });
  drawTask();
  show("task");
  showLastTurn();
  say(assignment.resumed ? "Resumed the task you had open." : "");
  startTicker();
  $("workspace").focus({ preventScroll: true });
  window.scrollTo(0, 0);
}

function readForm() {
  const checked = document.querySelector('input[name="confidence"]:checked');
  return { confidence: checked ? Number(checked.value) : null, rationale: $("rationale").value };
}

function setForm({ confidence, rationale }) {
  for (const r of document.querySelectorAll('input[name="confidence"]')) r.checked = Number(r.value) === confidence;
  $("rationale").value = rationale || "";
}

function setConfidence(n) {
  // Shift+1..5 sets it, the same key again (or Shift+0) clears it.
  if (!cur || cur.readOnly) return;
  const now = readForm().confidence;
  setForm({ confidence: n === 0 || n === now ? null : n, rationale: $("rationale").value });
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
  if (!cur || busy || cfg.preview) return;
  if (cur.review) return amend();
  if (!pairwise && unplaced().length === 1) place(unplaced()[0]);
  if (!isComplete()) {
    return say(pairwise ? "Choose a response first." : "Place every response first.", "error", { untilAction: true });
  }
  const body = {
    ranking: tiers(),
    client_token: cur.token,
    time_taken_ms: Date.now() - cur.startedAt,
  };
  if (cur.bothBad) body.both_bad = true;
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
  if (!cfg.allowSkip || !cur || busy || cur.review) return;
  const dialog = $("skip-dialog");
  $("skip-reason").value = "";
  dialog.showModal();
  $("skip-reason").focus();
}

async function doSkip(reason) {
  busy = true;
  show("loading");
  const res = await apiOrFailure(cfg.skipUrl(cur.assignment.id), { method: "POST", body: { reason } });
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

// --- release ------------------------------------------------------------------------------

async function release() {
  // The task goes back to the queue without an answer or a reason; the next one comes with the reply.
  if (!cur || busy || cur.review || cfg.preview) return;
  busy = true;
  show("loading");
  const res = await apiOrFailure(cfg.releaseUrl(cur.assignment.id), { method: "POST" });
  busy = false;
  if (!res.ok) {
    show("task");
    paint();
    return fail(res, "Not released");
  }
  showNext(res.data.next);
  if (cur) paint();
  say("Released: the task is back in the queue.", "ok", { untilAction: true });
}

// --- the last answer, again ----------------------------------------------------------------

async function openLast() {
  if (busy || cfg.preview || (cur && cur.review)) return;
  busy = true;
  const res = await apiOrFailure(cfg.lastUrl);
  busy = false;
  if (!res.ok) return fail(res, "Could not show your last answer");
  if (!res.data.last) return say("You have not answered a task in this project yet.");
  // The leased task waits, with what was typed for it, until the review ends.
  held = cur;
  if (held) held.form = readForm();
  beginReview(res.data.last);
}

function beginReview(last) {
  cur = {
    review: last,
    assignment: last,
    rendered: last,
    order: last.display_order,
    placed: placedFrom(last.answer.tiers),
    tieNext: false,
    bothBad: last.answer.both_bad,
    history: [],
    readOnly: !last.editable,
    samePrompt: false,
  };
  $("task").dataset.mode = "review";
  setForm({ confidence: last.answer.confidence, rationale: last.answer.rationale });
  setReviewBar();
  drawTask();
  show("task");
  showLastTurn();
  say("");
  paint();
  $("workspace").focus({ preventScroll: true });
}

function setReviewBar() {
  const review = cur && cur.review;
  $("review-bar").hidden = !review;
  $("review-bar").classList.toggle("closed", Boolean(review && cur.readOnly));
  if (review) {
    $("review-text").textContent = cur.readOnly
      ? `Your last answer. ${review.closed}`
      : `Your last answer${review.amended ? " (changed before)" : ""}: change it and press Enter to save the change.`;
  }
  $("submit-label").textContent = review ? "Save change" : "Submit";
  for (const id of ["skip", "release", "back-last"]) if ($(id)) $(id).hidden = Boolean(review);
}

function endReview() {
  if (!cur || !cur.review) return;
  cur = held;
  held = null;
  delete $("task").dataset.mode;
  setReviewBar();
  if (!cur) {
    show("empty");
    return;
  }
  setForm(cur.form || { confidence: null, rationale: "" });
  drawTask();
  show("task");
  showLastTurn();
  paint();
  $("workspace").focus({ preventScroll: true });
}

async function amend() {
  if (cur.readOnly) return say(cur.review.closed, "error");
  if (!isComplete()) return say(pairwise ? "Choose a response first." : "Place every response first.", "error", { untilAction: true });
  const form = readForm();
  const body = { ranking: tiers(), both_bad: cur.bothBad, rationale: form.rationale.trim() };
  if (form.confidence !== null) body.confidence = form.confidence;
  busy = true;
  paint();
  const res = await apiOrFailure(cfg.amendUrl(cur.review.id), { method: "POST", body });
  busy = false;
  if (!res.ok) {
    if (res.data && res.data.code === "task_complete") {
      // Completed meanwhile: the answer stays on screen, read-only, and the bar says why.
      cur.readOnly = true;
      cur.review.closed = res.data.detail;
      setReviewBar();
    }
    paint();
    return fail(res, "Not changed");
  }
  endReview();
  say(res.data.changed ? "Your last answer was changed." : "Your last answer is unchanged.", "ok");
}

// --- a manager's preview ---------------------------------------------------------------------

async function loadPreview(index) {
  busy = true;
  show("loading");
  const res = await apiOrFailure(`${cfg.previewUrl}?n=${Math.max(0, index)}`);
  busy = false;
  if (!res.ok) return fail(res, "Could not show a task");
  const { task, n, open } = res.data;
  $("preview-count").textContent = open ? `Task ${Math.min(n + 1, open)} of ${open} open.` : "";
  $("preview-prev").disabled = n === 0 || !open;
  $("preview-next").disabled = n + 1 >= open;
  if (!task) {
    if (open && n >= open) return loadPreview(open - 1); // the queue got shorter meanwhile
    cur = null;
    show("empty");
    return;
  }
  previewIndex = n;
  $("timer").textContent = "–";
  cur = {
    assignment: task,
    rendered: task,
    order: task.display_order,
    placed: [],
    tieNext: false,
    bothBad: false,
    history: [],
    readOnly: true,
    samePrompt: samePromptAsBefore(task),
  };
  $("task").dataset.mode = "preview";
  $("task").dataset.task = String(task.task_id);
  drawTask();
  show("task");
  showLastTurn();
  paint();
  $("workspace").focus({ preventScroll: true });
}

function previewStep(delta) {
  if (busy) return;
  const next = previewIndex + delta;
  if (next < 0 || (delta > 0 && $("preview-next").disabled)) return;
  loadPreview(next);
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
  const lease = held || cur; // the leased task, also while the last answer is under review
  if (!lease || !lease.expiresAt) return;
  $("timer").textContent = fmt((Date.now() - lease.startedAt) / 1000);
  const left = (lease.expiresAt - Date.now()) / 1000;
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
  if (e.key === "Escape") {
    // Esc leaves the rationale box, so that the keys work again; else it ends a review of the last answer.
    if (active && active.id === "rationale") {
      e.preventDefault();
      active.blur();
      $("workspace").focus({ preventScroll: true });
    } else if (cur && cur.review && !typing(active)) {
      e.preventDefault();
      endReview();
    }
    return;
  }
  if (e.key === "Enter" && e.ctrlKey) {
    e.preventDefault();
    return submit();
  }
  if (typing(active) || e.ctrlKey) return;
  // Arrow keys inside the confidence radios change the confidence, as they natively do.
  if (active && active.type === "radio" && e.key.startsWith("Arrow")) return;
  const key = e.key;
  if (key === "g" || key === "G") {
    $("guidelines").open = !$("guidelines").open;
    return;
  }
  if (busy) return;
  if (cfg.preview) {
    if (key === "n" || key === "N" || key === "p" || key === "P") {
      e.preventDefault();
      return previewStep(key === "n" || key === "N" ? 1 : -1);
    }
  } else if (key === "l" || key === "L") {
    e.preventDefault();
    return openLast();
  }
  if (!cur) return;
  // J / K scroll a long response (the arrows choose): the focused card, else the hovered one, else all.
  if (key === "j" || key === "J" || key === "k" || key === "K") {
    e.preventDefault();
    return scrollCards(key === "j" || key === "J" ? 1 : -1);
  }
  if (cfg.preview) {
    if (key === "Enter") say("Preview: nothing is claimed or saved here. N shows the next open task.");
    return;
  }
  // Shift + 1..5 (by key position, whatever the layout prints there) sets the confidence.
  if (e.shiftKey && /^(Digit|Numpad)[0-5]$/.test(e.code)) {
    e.preventDefault();
    return setConfidence(Number(e.code.slice(-1)));
  }
  if (key === "Enter") {
    if (active && (active.tagName === "BUTTON" || active.tagName === "A")) return;
    e.preventDefault();
    return submit();
  }
  if (cur.readOnly) return;
  if (key === "Backspace" || key === "z" || key === "Z") {
    e.preventDefault();
    return undo();
  }
  if (key === "s" || key === "S") {
    e.preventDefault();
    return openSkip();
  }
  if ((key === "r" || key === "R") && !cur.review) {
    e.preventDefault();
    return release();
  }
  if ((key === "b" || key === "B" || (pairwise && key === "4")) && cfg.allowBothBad) {
    e.preventDefault();
    return chooseBothBad();
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
$("undo").addEventListener("click", () => cur && !cur.readOnly && undo());
$("confidence-clear").addEventListener("click", () => {
  for (const r of document.querySelectorAll('input[name="confidence"]')) r.checked = false;
});
if ($("both-bad")) {
  $("both-bad").addEventListener("click", () => {
    chooseBothBad();
    $("workspace").focus({ preventScroll: true }); // so that Enter submits, as after a key
  });
}
$("release").addEventListener("click", release);
$("back-last").addEventListener("click", openLast);
if ($("empty-back-last")) $("empty-back-last").addEventListener("click", openLast);
$("review-cancel").addEventListener("click", endReview);
if (cfg.preview) {
  $("preview-prev").addEventListener("click", () => previewStep(-1));
  $("preview-next").addEventListener("click", () => previewStep(1));
}
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

if (cfg.preview) loadPreview(0);
else loadNext();
