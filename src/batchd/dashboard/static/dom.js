// Building DOM from data. Data only ever becomes text nodes or attribute values, never markup.

export function h(tag, attrs = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    else element.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    element.append(child instanceof Node ? child : String(child));
  }
  return element;
}

export const link = (href, ...children) => h("a", { href }, ...children);

export const batchHref = (id) => `#/batches/${encodeURIComponent(id)}`;
export const fileHref = (id) => `#/files/${encodeURIComponent(id)}`;

export function table(headings, rows, attrs = {}) {
  return h(
    "table",
    attrs,
    h("thead", {}, h("tr", {}, headings.map((text) => h("th", {}, text)))),
    h("tbody", {}, rows),
  );
}

export const badge = (status) =>
  h("span", { class: `badge ${status}`, "data-status": status }, status);

export function when(seconds) {
  if (seconds === null || seconds === undefined) return "";
  return new Date(seconds * 1000).toLocaleString();
}

export function duration(seconds) {
  if (seconds < 60) return `${Math.round(seconds)} s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ${Math.round(seconds % 60)} s`;
  return `${Math.floor(seconds / 3600)} h ${Math.round((seconds % 3600) / 60)} min`;
}

export function ago(seconds) {
  if (seconds === null || seconds === undefined) return "";
  return `${duration(Math.max(0, now() - seconds))} ago`;
}

export function bytes(count) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = count;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${unit ? value.toFixed(1) : value} ${units[unit]}`;
}

export const now = () => Date.now() / 1000;

export function progress(counts) {
  const done = counts.completed + counts.failed;
  const percent = counts.total ? Math.floor((100 * done) / counts.total) : 0;
  const bar = h(
    "div",
    { class: "bar", title: `${percent}%` },
    h("span", { class: "ok" }),
    h("span", { class: "failed" }),
  );
  // Widths through the CSSOM: the style-src policy forbids style attributes.
  bar.children[0].style.width = `${counts.total ? (100 * counts.completed) / counts.total : 0}%`;
  bar.children[1].style.width = `${counts.total ? (100 * counts.failed) / counts.total : 0}%`;
  const failed = counts.failed
    ? h("span", { class: "failed-count" }, ` · ${counts.failed} failed`)
    : null;
  const text = `${counts.completed} / ${counts.total}`;
  return h(
    "div",
    { class: "progress" },
    bar,
    h("span", { class: "counts", "data-field": "progress" }, text, failed),
  );
}

export function pager(base, page, after) {
  const links = [];
  if (after) links.push(link(base, "« Newest"));
  if (page.has_more && page.last_id) {
    const href = `${base}?after=${encodeURIComponent(page.last_id)}`;
    links.push(h("a", { href, class: "more", "data-control": "more" }, "Older »"));
  }
  return h("nav", { class: "pager" }, links);
}
