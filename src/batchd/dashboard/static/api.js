// The /v1 API as the dashboard calls it: the key from session storage as a bearer.

const KEY = "batchd.key";
const PREVIEW_BYTES = 1 << 20; // a preview never reads more than this from a file

export class Unauthorized extends Error {}

export class ApiError extends Error {}

export const storedKey = () => sessionStorage.getItem(KEY);
export const storeKey = (key) => sessionStorage.setItem(KEY, key);
export const forgetKey = () => sessionStorage.removeItem(KEY);

const enc = encodeURIComponent;

function query(params) {
  const defined = Object.entries(params).filter(([, v]) => v !== undefined && v !== null);
  return defined.length ? "?" + new URLSearchParams(defined).toString() : "";
}

async function call(path) {
  const key = storedKey();
  const headers = key ? { Authorization: `Bearer ${key}` } : {};
  const response = await fetch(path, { headers, cache: "no-store" });
  if (response.status === 401) throw new Unauthorized("The key was refused.");
  if (!response.ok) throw new ApiError(await errorMessage(response));
  return response;
}

async function errorMessage(response) {
  try {
    const { error } = await response.json();
    return `${error.message} (${error.code ?? response.status})`;
  } catch {
    return `HTTP ${response.status}`;
  }
}

const json = async (path) => (await call(path)).json();

export const listBatches = (limit, after) => json(`v1/batches${query({ limit, after })}`);
export const getBatch = (id) => json(`v1/batches/${enc(id)}`);
export const listFiles = (limit, after) => json(`v1/files${query({ limit, after })}`);
export const getFile = (id) => json(`v1/files/${enc(id)}`);
export const listUpstreams = () => json("v1/upstreams");

/** The first `count` lines of a file, read as a stream that is dropped once they are in. */
export async function firstLines(fileId, count) {
  const response = await call(`v1/files/${enc(fileId)}/content`);
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  const lines = [];
  let rest = "";
  let read = 0;
  while (lines.length < count && read < PREVIEW_BYTES) {
    const { value, done } = await reader.read();
    if (done) break;
    read += value.length;
    const parts = (rest + value).split("\n");
    rest = parts.pop();
    lines.push(...parts);
  }
  if (rest && lines.length < count && read < PREVIEW_BYTES) lines.push(rest);
  reader.cancel().catch(() => {});
  return lines.filter((line) => line.trim()).slice(0, count);
}

/** Save a file's bytes: fetched with the key (a plain link could not send it). */
export async function download(file) {
  const blob = await (await call(`v1/files/${enc(file.id)}/content`)).blob();
  const url = URL.createObjectURL(blob);
  const link = Object.assign(document.createElement("a"), { href: url, download: file.filename });
  link.click();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}
