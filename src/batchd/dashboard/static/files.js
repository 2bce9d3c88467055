// The caller's files, and one file with its first lines.

import { download, firstLines, getFile, listFiles } from "./api.js";
import { ago, bytes, fileHref, h, link, pager, table, when } from "./dom.js";

const PAGE = 50;
const PREVIEW_LINES = 20;

export async function filesView({ after }) {
  const page = await listFiles(PAGE, after);
  const rows = page.data.map((file) =>
    h(
      "tr",
      { "data-file": file.id },
      h("td", {}, link(fileHref(file.id), h("code", {}, file.id))),
      h("td", {}, file.filename),
      h("td", {}, file.purpose),
      h("td", { class: "number" }, bytes(file.bytes)),
      h("td", {}, ago(file.created_at)),
      h("td", {}, when(file.expires_at)),
    ),
  );
  const body = rows.length
    ? table(["File", "Name", "Purpose", "Size", "Created", "Expires"], rows, { id: "files" })
    : h("p", { class: "muted" }, "No files.");
  return {
    title: "Files",
    nav: "files",
    node: h("section", {}, h("h1", {}, "Files"), body, pager("#/files", page, after)),
    live: false,
  };
}

export async function fileView({ id }) {
  const file = await getFile(id);
  const lines = await firstLines(file.id, PREVIEW_LINES).catch((error) => [error.message]);
  const status = h("span", { class: "muted" });
  const save = () => {
    status.textContent = " downloading…";
    download(file).then(
      () => (status.textContent = ""),
      (error) => (status.textContent = ` ${error.message}`),
    );
  };
  return {
    title: file.filename,
    nav: "files",
    node: h(
      "section",
      { id: "file", "data-file": file.id },
      h("h1", {}, h("code", {}, file.id)),
      h(
        "dl",
        { class: "facts" },
        [
          ["Name", file.filename],
          ["Purpose", file.purpose],
          ["Size", `${bytes(file.bytes)} (${file.bytes} bytes)`],
          ["Created", when(file.created_at)],
          ["Expires", when(file.expires_at) || "never"],
        ].map(([label, value]) => [h("dt", {}, label), h("dd", {}, value)]),
      ),
      h("p", {}, h("button", { type: "button", onclick: save }, "Download"), status),
      h("h2", {}, `First ${PREVIEW_LINES} lines`),
      h("pre", { id: "preview" }, lines.join("\n") || "(empty)"),
    ),
    live: false,
  };
}
