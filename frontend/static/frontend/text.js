// Text from the server's records as the pages show it (frontend/text.py does the same on the
// server): absolute server paths in job logs and run data are replaced, never shown.

const ABS_PATH = /(?<![\w.])\/[^\s'"]+\/[^\s'"]*/g;

export function scrubPaths(text) {
  return String(text).replace(ABS_PATH, "[server path]");
}
