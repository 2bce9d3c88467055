// The caller's batches, newest first, a page at a time.

import { listBatches } from "./api.js";
import { ago, badge, batchHref, h, link, pager, progress, table } from "./dom.js";

export const PAGE = 50;
export const TERMINAL = new Set(["completed", "failed", "expired", "cancelled"]);

export async function batchesView({ after }) {
  const page = await listBatches(PAGE, after);
  const rows = page.data.map(row);
  const body = rows.length
    ? table(["Batch", "Status", "Progress", "Endpoint", "Model", "Created", "Metadata"], rows, {
        id: "batches",
      })
    : h("p", { class: "muted" }, after ? "No older batches." : "No batches yet.");
  return {
    title: "Batches",
    nav: "batches",
    node: h("section", {}, h("h1", {}, "Batches"), body, pager("#/", page, after)),
    // The newest page also watches for new batches; an older one only for running ones.
    live: !after || page.data.some((batch) => !TERMINAL.has(batch.status)),
  };
}

function row(batch) {
  return h(
    "tr",
    { "data-batch": batch.id },
    h("td", {}, link(batchHref(batch.id), h("code", {}, batch.id))),
    h("td", {}, badge(batch.status)),
    h("td", {}, progress(batch.request_counts)),
    h("td", {}, batch.endpoint),
    h("td", {}, batch.model ?? ""),
    h("td", { title: new Date(batch.created_at * 1000).toISOString() }, ago(batch.created_at)),
    h("td", { class: "metadata" }, metadata(batch.metadata)),
  );
}

export function metadata(pairs) {
  if (!pairs) return null;
  return Object.entries(pairs).map(([key, value]) =>
    h("span", { class: "pair" }, h("span", { class: "key" }, key), "=", value),
  );
}
