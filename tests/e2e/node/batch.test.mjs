// End-to-end test of batchd with the official `openai` npm package, used unchanged.
//
// Run by tests/e2e/test_node_sdk.py against a fresh batchd server, with OPENAI_BASE_URL and
// OPENAI_API_KEY set. Standalone: OPENAI_BASE_URL=http://127.0.0.1:8000/v1 OPENAI_API_KEY=sk-test
// node --test tests/e2e/node/batch.test.mjs (the server must serve the model "gpt-test").

import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';

import OpenAI, { APIError, NotFoundError } from 'openai';

const TERMINAL = new Set(['completed', 'failed', 'expired', 'cancelled']);
const STATUSES = new Set([
  'validating', 'failed', 'in_progress', 'finalizing',
  'completed', 'expired', 'cancelling', 'cancelled',
]);
const LINE_COUNT = 10;
const RUN = randomUUID();

// Every HTTP request the SDK sends, so retries can be observed.
const sent = [];
function countingFetch(url, init) {
  sent.push({ method: (init?.method ?? 'GET').toUpperCase(), url: String(url) });
  return fetch(url, init);
}
const sentTo = (method, suffix) =>
  sent.filter((r) => r.method === method && new URL(r.url).pathname.endsWith(suffix)).length;

let client;
let tmpDir;
const state = {};

function chatLine(customId, i) {
  return {
    custom_id: customId,
    method: 'POST',
    url: '/v1/chat/completions',
    body: { model: 'gpt-test', messages: [{ role: 'user', content: `hello ${i}` }] },
  };
}

function writeJsonl(name, lines) {
  const file = path.join(tmpDir, name);
  fs.writeFileSync(file, lines.map((line) => JSON.stringify(line) + '\n').join(''));
  return file;
}

async function upload(file) {
  return client.files.create({ file: fs.createReadStream(file), purpose: 'batch' });
}

async function waitForBatch(id, { until = TERMINAL, withinMs = 60_000 } = {}) {
  const deadline = Date.now() + withinMs;
  for (;;) {
    const batch = await client.batches.retrieve(id);
    assert.ok(STATUSES.has(batch.status), `unknown status ${batch.status}`);
    if (until.has(batch.status)) return batch;
    assert.ok(Date.now() < deadline, `batch ${id} still ${batch.status} after ${withinMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

function checkLineShape(line) {
  assert.deepEqual(Object.keys(line).sort(), ['custom_id', 'error', 'id', 'response']);
  assert.equal(typeof line.id, 'string');
  assert.ok(line.id.startsWith('batch_req_'), `line id ${line.id}`);
  assert.equal(typeof line.custom_id, 'string');
  assert.equal(line.error, null);
  assert.notEqual(line.response, null);
  assert.deepEqual(Object.keys(line.response).sort(), ['body', 'request_id', 'status_code']);
  assert.equal(line.response.status_code, 200);
  assert.equal(typeof line.response.body, 'object');
  assert.notEqual(line.response.body, null);
  assert.ok(!Array.isArray(line.response.body));
}

async function collect(iterable) {
  const items = [];
  for await (const item of iterable) items.push(item);
  return items;
}

describe('batchd with the openai npm SDK', { concurrency: false }, () => {
  before(() => {
    // Never let this test reach api.openai.com by accident.
    assert.ok(process.env.OPENAI_BASE_URL, 'OPENAI_BASE_URL must point at a batchd server');
    client = new OpenAI({ maxRetries: 2, timeout: 30_000, fetch: countingFetch });
    tmpDir = fs.mkdtempSync(path.join(os.tmpdir(), 'batchd-node-'));
  });

  after(() => {
    if (tmpDir) fs.rmSync(tmpDir, { recursive: true, force: true });
  });

  it('uploads a JSONL file and runs a batch to completion', { timeout: 90_000 }, async () => {
    const ids = Array.from({ length: LINE_COUNT }, (_, i) => `req-${i}`);
    const input = writeJsonl('input.jsonl', ids.map((id, i) => chatLine(id, i)));

    const file = await upload(input);
    assert.ok(file.id.startsWith('file-'), `file id ${file.id}`);
    assert.equal(file.object, 'file');
    assert.equal(file.purpose, 'batch');
    assert.equal(file.filename, 'input.jsonl');
    assert.equal(file.bytes, fs.statSync(input).size);

    const metadata = { suite: 'node-e2e', run: RUN };
    const created = await client.batches.create({
      input_file_id: file.id,
      endpoint: '/v1/chat/completions',
      completion_window: '24h',
      metadata,
    });
    assert.ok(created.id.startsWith('batch_'), `batch id ${created.id}`);
    assert.equal(created.object, 'batch');
    assert.equal(created.status, 'validating');
    assert.equal(created.input_file_id, file.id);
    assert.equal(created.endpoint, '/v1/chat/completions');
    assert.equal(created.completion_window, '24h');
    assert.deepEqual(created.metadata, metadata);

    const batch = await waitForBatch(created.id);
    assert.equal(batch.status, 'completed', JSON.stringify(batch));
    assert.deepEqual(batch.request_counts, { total: LINE_COUNT, completed: LINE_COUNT, failed: 0 });
    assert.equal(batch.error_file_id, null);
    assert.ok(batch.output_file_id, 'a completed batch with successes has an output file');
    assert.equal(batch.model, 'gpt-test');
    assert.deepEqual(batch.metadata, metadata);
    assert.ok(batch.completed_at >= batch.created_at);

    const response = await client.files.content(batch.output_file_id);
    const text = await response.text();
    assert.ok(text.endsWith('\n'), 'JSONL ends with a newline');
    const lines = text.split('\n').filter((l) => l !== '').map((l) => JSON.parse(l));
    assert.equal(lines.length, LINE_COUNT);
    lines.forEach(checkLineShape);
    assert.deepEqual(lines.map((l) => l.custom_id).sort(), [...ids].sort());
    for (const line of lines) {
      assert.equal(line.response.body.object, 'chat.completion');
    }

    const outputFile = await client.files.retrieve(batch.output_file_id);
    assert.equal(outputFile.purpose, 'batch_output');

    Object.assign(state, { batch, inputFileId: file.id });
  });

  it('lists batches and files with auto-pagination', { timeout: 60_000 }, async () => {
    assert.ok(state.batch, 'needs the completed batch');
    // Two more batches, so that three span two pages of two.
    const other = await upload(writeJsonl('list.jsonl', [chatLine('list-0', 0)]));
    const more = [];
    for (let i = 0; i < 2; i++) {
      const created = await client.batches.create({
        input_file_id: other.id,
        endpoint: '/v1/chat/completions',
        completion_window: '24h',
      });
      more.push(await waitForBatch(created.id));
    }
    const [second, third] = more;

    const listCalls = sentTo('GET', '/batches');
    const batches = await collect(client.batches.list({ limit: 2 }));
    const batchIds = batches.map((b) => b.id);
    assert.ok(batchIds.includes(state.batch.id), 'the completed batch is listed');
    assert.ok(batchIds.includes(second.id), 'the second batch is listed');
    assert.ok(batchIds.includes(third.id), 'the third batch is listed');
    assert.equal(new Set(batchIds).size, batchIds.length, 'no batch listed twice');
    assert.ok(batchIds.indexOf(third.id) < batchIds.indexOf(second.id), 'newest first');
    assert.ok(batchIds.indexOf(second.id) < batchIds.indexOf(state.batch.id), 'newest first');
    assert.ok(sentTo('GET', '/batches') - listCalls >= 2, 'paged with limit 2');

    // Five files (two inputs, three outputs) span three pages of two.
    const fileCalls = sentTo('GET', '/files');
    const files = await collect(client.files.list({ limit: 2 }));
    const fileIds = files.map((f) => f.id);
    const outputs = [state.batch, second, third].map((b) => b.output_file_id);
    for (const id of [state.inputFileId, other.id, ...outputs]) {
      assert.ok(fileIds.includes(id), `file ${id} is listed`);
    }
    assert.equal(new Set(fileIds).size, fileIds.length, 'no file listed twice');
    assert.ok(sentTo('GET', '/files') - fileCalls >= 2, 'paged with limit 2');

    const batchFiles = await collect(client.files.list({ purpose: 'batch', limit: 2 }));
    assert.ok(batchFiles.every((f) => f.purpose === 'batch'));
    assert.ok(batchFiles.some((f) => f.id === state.inputFileId));
  });

  it('cancels a batch right after creating it', { timeout: 60_000 }, async () => {
    const ids = Array.from({ length: LINE_COUNT }, (_, i) => `cancel-${i}`);
    const file = await upload(writeJsonl('cancel.jsonl', ids.map((id, i) => chatLine(id, i))));
    const created = await client.batches.create({
      input_file_id: file.id,
      endpoint: '/v1/chat/completions',
      completion_window: '24h',
    });

    const cancelling = await client.batches.cancel(created.id);
    assert.equal(cancelling.id, created.id);
    assert.ok(['cancelling', 'cancelled'].includes(cancelling.status), cancelling.status);
    assert.notEqual(cancelling.cancelling_at, null);

    const done = await waitForBatch(created.id);
    assert.equal(done.status, 'cancelled', JSON.stringify(done));
    assert.notEqual(done.cancelled_at, null);
    assert.equal(done.completed_at, null);

    // A second cancel of a cancelled batch answers it unchanged.
    const again = await client.batches.cancel(created.id);
    assert.equal(again.status, 'cancelled');
  });

  it('refuses to cancel a completed batch with a 409 the SDK does not retry', async () => {
    assert.ok(state.batch, 'needs the completed batch');
    const before = sentTo('POST', `/batches/${state.batch.id}/cancel`);
    const started = Date.now();
    const error = await client.batches.cancel(state.batch.id).then(
      () => assert.fail('cancel of a completed batch succeeded'),
      (e) => e,
    );
    const elapsed = Date.now() - started;
    assert.ok(error instanceof APIError, `expected an APIError, got ${error}`);
    assert.equal(error.status, 409);
    assert.equal(error.type, 'invalid_request_error');
    assert.equal(error.error.message, "Cannot cancel a batch with status 'completed'.");
    assert.equal(error.headers.get('x-should-retry'), 'false');
    assert.equal(sentTo('POST', `/batches/${state.batch.id}/cancel`) - before, 1, 'sent once');
    assert.ok(elapsed < 2_000, `failed fast (took ${elapsed} ms)`);
  });

  it('answers an unknown batch with a NotFoundError', async () => {
    const before = sent.length;
    const error = await client.batches.retrieve('batch_nope').then(
      () => assert.fail('retrieving an unknown batch succeeded'),
      (e) => e,
    );
    assert.ok(error instanceof NotFoundError, `expected a NotFoundError, got ${error}`);
    assert.equal(error.status, 404);
    assert.equal(error.error.message, "No batch found with id 'batch_nope'.");
    assert.equal(error.type, 'invalid_request_error');
    assert.ok(error.requestID, 'the error carries x-request-id');
    assert.equal(sent.length - before, 1, 'a 404 is not retried');
  });
});
