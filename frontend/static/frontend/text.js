// Text from the server's records as the pages show it (frontend/text.py does the same on the
// server): absolute server paths in job logs and run data are replaced, never shown.

const ABS_PATH = /(?<![\w.])\/[^\s'"]+\/[^\s'"]*/g;

export function scrubPaths(text) {
  return String(text).replace(ABS_PATH, "[server path]");
}

// Times: the server writes <time datetime="ISO-8601"> with a readable fallback; this one
// formatter gives every <time> element, at load and on every live update, the reader's locale
// format, so a reload and a live update look the same. data-format="time" shows the time only,
// data-format="date" the date only.
const DATE_TIME = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" });
const TIME_ONLY = new Intl.DateTimeFormat(undefined, { timeStyle: "medium" });
const DATE_ONLY = new Intl.DateTimeFormat(undefined, { dateStyle: "medium" });

export function formatTime(value, { timeOnly = false, dateOnly = false } = {}) {
  const date = value instanceof Date ? value : new Date(value);
  if (Number.isNaN(date.getTime())) return null;
  return (timeOnly ? TIME_ONLY : dateOnly ? DATE_ONLY : DATE_TIME).format(date);
}

function formatElement(element) {
  const format = element.dataset.format;
  const text = formatTime(element.getAttribute("datetime"), { timeOnly: format === "time", dateOnly: format === "date" });
  if (text !== null) {
    element.textContent = text;
    element.title = element.getAttribute("datetime");
  }
}

export function formatTimes(root = document) {
  for (const element of root.querySelectorAll("time[datetime]")) formatElement(element);
}

// Put an ISO time into a container as a <time> element, formatted like the rest of the page.
export function setTime(container, iso, { timeOnly = false } = {}) {
  if (!container || !iso) return;
  const element = document.createElement("time");
  element.setAttribute("datetime", iso);
  if (timeOnly) element.dataset.format = "time";
  formatElement(element);
  container.replaceChildren(element);
}
