// One batch: counts, timeline, throughput, files, and its first errors.

import { firstLines, getBatch } from "./api.js";
import { TERMINAL, metadata } from "./batches.js";
import { badge, duration, fileHref, h, link, now, progress, when } from "./dom.js";

const FIRST_ERRORS = 10;
const HEADINGS = ["Request", "Code", "Status", "Message"];
const STEPS = [
  ["created_at", "created"],
  ["in_progress_at", "in progress"],
  ["cancelling_at", "cancelling"],
  ["finalizing_at", "finalizing"],
  ["completed_at", "completed"],
  ["failed_at", "failed"],
  ["expired_at", "expired"],
  ["cancelled_at", "cancelled"],
];

const lastSeen = new Map(); // batch id -> {at, done}: the rate between two looks

export async function batchView({ id }) {
  const batch = await getBatch(id);
  const errorLines = batch.error_file_id
    ? await firstLines(batch.error_file_id, FIRST_ERRORS).catch((error) => error)
    : [];
  return {
    title: batch.id,
    nav: "batches",
    node: h(
      "section",
      { id: "batch", "data-batch": batch.id },
      h("h1", {}, h("code", {}, batch.id), " ", badge(batch.status)),
      overview(batch),
      progress(batch.request_counts),
      h(
        "div",
        { class: "columns" },
        h("div", {}, h("h2", {}, "Counts"), counts(batch), throughput(batch)),
        h("div", {}, h("h2", {}, "Timeline"), timeline(batch)),
        h("div", {}, h("h2", {}, "Files"), files(batch)),
      ),
      h("h2", {}, "First errors"),
      errors(batch, errorLines),
    ),
    live: !TERMINAL.has(batch.status),
  };
}

function facts(pairs) {
  return h(
    "dl",
    { class: "facts" },
    pairs.map(([label, value, field]) => [
      h("dt", {}, label),
      h("dd", { "data-field": field }, value ?? "—"),
    ]),
  );
}

function overview(batch) {
  return facts([
    ["Endpoint", batch.endpoint, "endpoint"],
    ["Model", batch.model, "model"],
    ["Window", batch.completion_window, "window"],
    ["Expires", when(batch.expires_at), "expires_at"],
    ["Metadata", batch.metadata ? metadata(batch.metadata) : null, "metadata"],
  ]);
}

function counts(batch) {
  const { total, completed, failed } = batch.request_counts;
  const usage = batch.usage;
  return facts([
    ["Total", total, "total"],
    ["Completed", completed, "completed"],
    ["Failed", failed, "failed"],
    ["Remaining", total - completed - failed, "remaining"],
    ["Tokens", usage ? `${usage.input_tokens} in · ${usage.output_tokens} out` : null, "tokens"],
  ]);
}

function throughput(batch) {
  const { total, completed, failed } = batch.request_counts;
  const done = completed + failed;
  const start = batch.in_progress_at;
  const end = batch.finalizing_at ?? batch.cancelled_at ?? batch.expired_at ?? batch.failed_at;
  const elapsed = start ? Math.max(0, (end ?? now()) - start) : 0;
  // Timestamps are whole seconds: a batch done within one counts as taking one.
  const average = start && done ? done / Math.max(elapsed, 1) : null;
  const recent = recentRate(batch.id, done);
  const running = start && !end;
  const left = total - done;
  const rate = recent ?? average;
  return facts([
    ["Throughput", average === null ? null : `${average.toFixed(1)} lines/s`, "throughput"],
    ["Now", running && recent !== null ? `${recent.toFixed(1)} lines/s` : null, "rate"],
    ["Duration", start ? duration(elapsed) : null, "elapsed"],
    ["Time left", running && rate ? `~${duration(left / rate)}` : null, "eta"],
  ]);
}

function recentRate(id, done) {
  const at = now();
  const previous = lastSeen.get(id);
  lastSeen.set(id, { at, done });
  if (!previous || at - previous.at < 0.5) return null;
  return Math.max(0, done - previous.done) / (at - previous.at);
}

function timeline(batch) {
  const steps = STEPS.filter(([field]) => batch[field] !== null);
  steps.sort((a, b) => batch[a[0]] - batch[b[0]]);
  return h(
    "ol",
    { class: "timeline", id: "timeline" },
    steps.map(([field, label]) =>
      h(
        "li",
        { "data-step": label },
        h("span", { class: "step" }, label),
        h("time", {}, when(batch[field])),
        h("span", { class: "muted" }, offset(batch, field)),
      ),
    ),
  );
}

function offset(batch, field) {
  return field === "created_at" ? "" : `+${duration(batch[field] - batch.created_at)}`;
}

function files(batch) {
  const fileLink = (id) => (id ? link(fileHref(id), h("code", {}, id)) : null);
  return facts([
    ["Input", fileLink(batch.input_file_id), "input_file"],
    ["Output", fileLink(batch.output_file_id), "output_file"],
    ["Errors", fileLink(batch.error_file_id), "error_file"],
  ]);
}

function errors(batch, errorLines) {
  if (errorLines instanceof Error) {
    return h("p", { class: "error" }, `The error file could not be read: ${errorLines.message}`);
  }
  const rows = [
    ...(batch.errors?.data ?? []).map((error) =>
      errorRow(error.line === null ? "" : `line ${error.line}`, error.code, null, error.message),
    ),
    ...errorLines.map(resultError),
  ];
  if (rows.length) {
    return h(
      "table",
      { id: "errors" },
      h("thead", {}, h("tr", {}, HEADINGS.map((text) => h("th", {}, text)))),
      h("tbody", {}, rows),
    );
  }
  const waiting = batch.request_counts.failed && !batch.error_file_id;
  const text = waiting ? "Failed lines are listed once the batch finalizes." : "No errors.";
  return h("p", { class: "muted" }, text);
}

function resultError(text) {
  let line;
  try {
    line = JSON.parse(text);
  } catch {
    return errorRow("", "unreadable", null, text.slice(0, 200));
  }
  const body = line.response?.body;
  const error = line.error ?? body?.error ?? {};
  const status = line.response?.status_code;
  const code = error.code ?? error.type ?? (status ? `http_${status}` : "");
  const message = typeof error.message === "string" ? error.message : JSON.stringify(body ?? "");
  return errorRow(line.custom_id, code, status, message);
}

function errorRow(request, code, status, message) {
  return h(
    "tr",
    {},
    h("td", { class: "custom-id" }, request),
    h("td", {}, h("code", { "data-field": "code" }, code ?? "")),
    h("td", {}, status ?? ""),
    h("td", { class: "message" }, message ?? ""),
  );
}
