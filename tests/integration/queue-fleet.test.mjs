// A mixed fleet (one Node worker, two of ours) drains 2,000 jobs: each exactly once.
import assert from 'node:assert/strict';
import { readFileSync, mkdtempSync, existsSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test, after } from 'node:test';
import {
  requireServices, bullmq, connection, queueName, startWorker, stopWorker, waitFor,
} from './lib/harness.mjs';

await requireServices();
const { Queue, Worker } = await bullmq();
const cleanups = [];
after(async () => { for (const f of cleanups.reverse()) await f(); });

test('2,000 jobs through one Node worker and two of ours: each processed exactly once', async () => {
  const name = queueName('fleet');
  const queue = new Queue(name, { connection: connection() });
  cleanups.push(async () => { await queue.obliterate({ force: true }); await queue.close(); });
  const tmp = mkdtempSync(join(tmpdir(), 'mi-fleet-'));
  cleanups.push(async () => rmSync(tmp, { recursive: true, force: true }));  // after the workers stop
  const nodeSeen = [];
  const nw = new Worker(name, async (job) => { nodeSeen.push(job.id); return { worker: 'node' }; },
    { connection: connection(), concurrency: 8 });
  cleanups.push(() => nw.close());
  const ours = [1, 2].map((i) => startWorker(name, {
    MEDIA_INGEST_CONCURRENCY: '16', MI_TEST_RECORD: join(tmp, `w${i}`),
  }));
  for (const w of ours) cleanups.push(() => stopWorker(w));  // when the test fails first
  const N = 2000;
  const bulk = [];
  for (let i = 0; i < N; i++) {
    bulk.push({ name: 'ingest', data: { messageId: i, providerMediaId: `m${i}`, test: { sleepMs: i % 7 } } });
  }
  for (let i = 0; i < N; i += 500) await queue.addBulk(bulk.slice(i, i + 500));
  await waitFor(async () => (await queue.getJobCounts()).completed === N,
    { what: `${N} completed`, timeout: 120000, interval: 200 });
  for (const w of ours) assert.equal(await stopWorker(w), 0, w.logs);
  await nw.close();

  const cSeen = [1, 2].flatMap((i) => {
    const f = join(tmp, `w${i}`);
    return existsSync(f) ? readFileSync(f, 'utf8').trim().split('\n').filter(Boolean) : [];
  });
  const all = [...cSeen, ...nodeSeen];
  assert.equal(all.length, N, `runs: ${all.length} (c ${cSeen.length}, node ${nodeSeen.length})`);
  assert.equal(new Set(all).size, N, 'no job ran twice');
  assert.ok(cSeen.length > 0 && nodeSeen.length > 0, 'both kinds of worker took part');
  const c = await queue.getJobCounts();
  assert.equal(c.active + c.waiting + c.delayed + c.prioritized + c.failed, 0, JSON.stringify(c));
});
