// The export page: the threshold preview follows the form (a running snapshot's bar is the
// shared job component, followed by jobs.js). The form itself is a plain POST (it works
// without this script). Data comes from #exports-data (json_script), never inline script.

import { drawPreview } from "./dashboard.js";

const PREVIEW_FIELDS = ["tie_policy", "weighting", "min_reliability", "exclude_annotators"];

function formValues(form) {
  const data = new FormData(form);
  return {
    threshold: Number.parseFloat(data.get("threshold")),
    minVotes: Number.parseInt(data.get("min_votes"), 10),
    query() {
      const params = new URLSearchParams();
      for (const name of PREVIEW_FIELDS) for (const value of data.getAll(name)) if (value !== "") params.append(name, value);
      const t = Number.parseFloat(data.get("threshold"));
      if (Number.isFinite(t) && t >= 0.5 && t <= 1) params.set("threshold", String(t));
      return params;
    },
  };
}

function summarise(element, preview, values) {
  const curves = preview.curves || [];
  if (!curves.length || !Number.isFinite(values.threshold) || !Number.isFinite(values.minVotes)) {
    element.textContent = "Enter a threshold and a minimum number of votes.";
    return;
  }
  const m = Math.min(Math.max(1, values.minVotes), curves[curves.length - 1].min_votes);
  let index = -1;
  preview.thresholds.forEach((t, i) => { if (t <= values.threshold + 1e-9) index = i; });
  if (index < 0) {
    element.textContent = "The threshold must be between 0.5 and 1.";
    return;
  }
  const exact = Math.abs(preview.thresholds[index] - values.threshold) < 1e-9 && m === values.minVotes;
  const kept = curves[m - 1].kept[index];
  element.replaceChildren();
  element.append(exact ? "This snapshot would keep " : "This snapshot would keep at most ");
  const strong = document.createElement("strong");
  strong.textContent = kept.toLocaleString("en");
  element.append(strong, ` of ${preview.units.toLocaleString("en")} voted response pairs.`);
}

function initPreview(data) {
  const form = document.getElementById("export-form");
  const chart = document.getElementById("preview-chart");
  const summary = document.getElementById("preview-summary");
  let preview = data.preview;
  let request = 0;
  let timer = null;

  const redraw = () => {
    const values = formValues(form);
    drawPreview(chart, preview, { threshold: values.threshold, minVotes: values.minVotes });
    summarise(summary, preview, values);
  };

  const refetch = async () => {
    const mine = ++request;
    const url = `${data.preview_url}?${formValues(form).query()}`;
    try {
      const response = await fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" });
      const body = await response.json();
      if (mine !== request) return; // a newer request is on its way
      if (!response.ok) {
        const [field, messages] = Object.entries(body)[0] || ["", ["could not compute the preview"]];
        summary.textContent = `Preview unavailable: ${field ? `${field}: ` : ""}${[].concat(messages).join(" ")}`;
        return;
      }
      preview = body;
      redraw();
    } catch (error) {
      if (mine === request) summary.textContent = `Preview unavailable: ${error.message}`;
    }
  };

  form.addEventListener("input", (event) => {
    const name = event.target.name;
    if (name === "threshold" || name === "min_votes") {
      redraw();
      // A threshold off the grid gets an exact count from the server.
      if (name === "threshold") { clearTimeout(timer); timer = setTimeout(refetch, 300); }
    } else if (PREVIEW_FIELDS.includes(name)) {
      clearTimeout(timer);
      timer = setTimeout(refetch, 250);
    }
  });
  redraw();
  // A form sent back with errors may hold other settings than the embedded preview's.
  if (form.dataset.bound === "true") refetch();
}

function init() {
  const source = document.getElementById("exports-data");
  if (!source || !document.getElementById("exports-page")) return;
  document.documentElement.classList.add("js");
  initPreview(JSON.parse(source.textContent));
  document.getElementById("exports-page").dataset.ready = "true";
}

init();
