// The upstreams, as the workers see them.

import { listUpstreams } from "./api.js";
import { ago, h, table } from "./dom.js";

export async function upstreamsView() {
  const upstreams = (await listUpstreams()).data;
  const rows = upstreams.map(({ state, ...upstream }) =>
    h(
      "tr",
      { "data-upstream": upstream.name },
      h("td", {}, upstream.name),
      h("td", {}, h("span", { class: `badge ${state}`, "data-field": "state" }, state)),
      h("td", { "data-field": "reason" }, upstream.reason ?? ""),
      h("td", {}, ago(upstream.since)),
      h("td", { class: "number", "data-field": "lines_waiting" }, upstream.lines_waiting),
      h("td", { class: "number" }, upstream.batches),
      h("td", { class: "number" }, upstream.workers),
    ),
  );
  const body = rows.length
    ? table(["Upstream", "State", "Reason", "Since", "Lines waiting", "Batches", "Workers"], rows, {
        id: "upstreams",
      })
    : h("p", { class: "muted" }, "No worker has reported on an upstream yet.");
  return {
    title: "Upstreams",
    nav: "upstreams",
    node: h("section", {}, h("h1", {}, "Upstreams"), body),
    live: true,
  };
}
