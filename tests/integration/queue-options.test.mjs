// Priority, delay, removeOnComplete/removeOnFail, custom jobId, pause/resume, long jobs,
// and a graceful drain, with Node producing and our worker consuming.
import assert from 'node:assert/strict';
import { readFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test, after } from 'node:test';
import IORedis from 'ioredis';
import {
  REDIS_URL, requireServices, bullmq, connection, queueName, startWorker, stopWorker, waitFor, recordEvents, sleep,
} from './lib/harness.mjs';

await requireServices();
const { Queue, QueueEvents } = await bullmq();
const cleanups = [];
after(async () => { for (const f of cleanups.reverse()) await f(); });
const tmp = mkdtempSync(join(tmpdir(), 'mi-opts-'));
cleanups.push(async () => rmSync(tmp, { recursive: true, force: true }));  // runs last

function newQueue(tag) {
  const name = queueName(tag);
  const queue = new Queue(name, { connection: connection() });
  cleanups.push(async () => { await queue.obliterate({ force: true }); await queue.close(); });
  return { name, queue };
}

const data = (extra = {}) => ({ messageId: 1, providerMediaId: 'x', ...extra });

test('plain jobs first, then prioritized ones by priority; delay is honoured', async () => {
  const { name, queue } = newQueue('prio');
  const rec = join(tmp, 'prio');
  const p5 = await queue.add('ingest', data(), { priority: 5 });
  const p1 = await queue.add('ingest', data(), { priority: 1 });
  const plain = await queue.add('ingest', data());
  const p3 = await queue.add('ingest', data(), { priority: 3 });
  const delayed = await queue.add('ingest', data(), { delay: 1200 });
  const w = startWorker(name, { MEDIA_INGEST_CONCURRENCY: '1', MI_TEST_RECORD: rec });
  try {
    await waitFor(async () => (await queue.getJobCounts()).completed === 5, { what: '5 completed' });
    const order = readFileSync(rec, 'utf8').trim().split('\n');
    assert.deepEqual(order, [plain.id, p1.id, p3.id, p5.id, delayed.id]);
    const d = await queue.getJob(delayed.id);
    assert.ok(d.processedOn - d.timestamp >= 1200, `delayed ran after ${d.processedOn - d.timestamp} ms`);
  } finally {
    assert.equal(await stopWorker(w), 0, w.logs);
  }
});

test('removeOnComplete / removeOnFail: true, a count, and {age, count}', async () => {
  const { name, queue } = newQueue('remove');
  const w = startWorker(name);
  try {
    const gone = await queue.add('ingest', data(), { removeOnComplete: true });
    for (let i = 0; i < 4; i++) await queue.add('ingest', data(), { removeOnComplete: 2 });
    const failGone = await queue.add('ingest', data({ test: { fail: 'x' } }), { removeOnFail: true });
    const kept = await queue.add('ingest', data({ test: { fail: 'y' } }), { removeOnFail: { age: 3600, count: 10 } });
    await waitFor(async () => {
      const c = await queue.getJobCounts();
      return c.waiting + c.active === 0 && c.failed === 1;
    }, { what: 'all finished' });
    assert.equal(await queue.getJob(gone.id), undefined);
    assert.equal(await queue.getJob(failGone.id), undefined);
    assert.equal((await queue.getJobCounts()).completed, 2, 'count 2 keeps the newest 2');
    assert.equal(await (await queue.getJob(kept.id)).getState(), 'failed');
    // {age} removes finished jobs older than age seconds when the next one finishes.
    const old = await queue.add('ingest', data({ test: { fail: 'old' } }), { removeOnFail: { age: 1 } });
    await waitFor(async () => (await queue.getJob(old.id))?.finishedOn, { what: 'old failed' });
    await sleep(1100);
    await queue.add('ingest', data({ test: { fail: 'new' } }), { removeOnFail: { age: 1 } });
    await waitFor(async () => (await queue.getJob(old.id)) === undefined, { what: 'old removed by age' });
  } finally {
    assert.equal(await stopWorker(w), 0, w.logs);
  }
});

test('custom jobId: a duplicate add is ignored and the job runs once', async () => {
  const { name, queue } = newQueue('dedupe');
  const rec = join(tmp, 'dedupe');
  const a = await queue.add('ingest', data({ n: 1 }), { jobId: 'media-1-x' });
  const b = await queue.add('ingest', data({ n: 2 }), { jobId: 'media-1-x' });
  assert.equal(a.id, b.id);
  const w = startWorker(name, { MI_TEST_RECORD: rec });
  try {
    await waitFor(async () => (await queue.getJobCounts()).completed === 1, { what: 'completed' });
    await sleep(300);
    assert.deepEqual(readFileSync(rec, 'utf8').trim().split('\n'), ['media-1-x']);
    assert.equal((await queue.getJob('media-1-x')).data.n, 1);
  } finally {
    assert.equal(await stopWorker(w), 0, w.logs);
  }
});

test('pause from Node stops our claims; resume restarts them', async () => {
  const { name, queue } = newQueue('pause');
  const w = startWorker(name);
  try {
    await sleep(300);
    await queue.pause();
    const job = await queue.add('ingest', data());
    await sleep(1500);
    assert.equal(await (await queue.getJob(job.id)).getState(), 'waiting');
    await queue.resume();
    await waitFor(async () => (await queue.getJobCounts()).completed === 1, { what: 'completed after resume' });
  } finally {
    assert.equal(await stopWorker(w), 0, w.logs);
  }
});

test('a job running 3x lockDuration keeps its lock and runs once', async () => {
  const { name, queue } = newQueue('long');
  const events = await recordEvents(QueueEvents, name);
  cleanups.push(() => events.qe.close());
  const rec = join(tmp, 'long');
  const w = startWorker(name, {
    MEDIA_INGEST_LOCK_DURATION_MS: '1000', MEDIA_INGEST_STALLED_INTERVAL_MS: '300', MI_TEST_RECORD: rec,
  });
  try {
    const job = await queue.add('ingest', data({ test: { sleepMs: 3200 } }));
    await waitFor(async () => (await queue.getJobCounts()).completed === 1, { what: 'completed', timeout: 10000 });
    const j = await queue.getJob(job.id);
    assert.equal(j.attemptsStarted, 1);
    assert.equal(j.stalledCounter, 0);
    assert.deepEqual(readFileSync(rec, 'utf8').trim().split('\n'), [job.id]);
    assert.ok(!events.seen.some((e) => e.ev === 'stalled'));
  } finally {
    assert.equal(await stopWorker(w), 0, w.logs);
  }
});

test('SIGTERM drains: the job in flight finishes, then exit 0', async () => {
  const { name, queue } = newQueue('drain');
  const w = startWorker(name, { MEDIA_INGEST_CONCURRENCY: '1' });
  const job = await queue.add('ingest', data({ test: { sleepMs: 1500 } }));
  await waitFor(async () => (await queue.getJob(job.id)).processedOn, { what: 'started' });
  const queued = await queue.add('ingest', data());
  assert.equal(await stopWorker(w, 'SIGTERM'), 0, w.logs);
  assert.equal(await (await queue.getJob(job.id)).getState(), 'completed');
  // Nothing new is claimed while draining.
  assert.equal(await (await queue.getJob(queued.id)).getState(), 'waiting');
});

test('jobs our worker must not run fail with a clear reason; good jobs beside them complete', async () => {
  const { name, queue } = newQueue('refuse');
  const w = startWorker(name);
  try {
    const good = await queue.add('ingest', data());
    // Non-JSON data written straight into Redis, as a broken producer would.
    const p = `bull:${name}:`;
    const client = new IORedis(REDIS_URL);
    cleanups.push(() => client.quit());
    await client.hset(`${p}bad1`, 'name', 'ingest', 'data', '{not json', 'opts', '{"attempts":3}',
      'timestamp', Date.now(), 'delay', 0, 'priority', 0);
    await client.lpush(`${p}wait`, 'bad1');
    await client.zadd(`${p}marker`, 0, '0');
    const arr = await queue.add('ingest', [1, 2, 3]);
    await waitFor(async () => {
      const c = await queue.getJobCounts();
      return c.completed === 1 && c.failed === 2;
    }, { what: '1 completed, 2 failed' });
    assert.equal(await (await queue.getJob(good.id)).getState(), 'completed');
    const f = await queue.getJob(arr.id);
    assert.match(f.failedReason, /not a JSON object/);
    assert.equal(f.attemptsMade, 1);
    assert.match(await client.hget(`${p}bad1`, 'failedReason'), /not a JSON object/);
  } finally {
    assert.equal(await stopWorker(w), 0, w.logs);
  }
});

test('a flushed script cache and killed connections: scripts reload, the worker reconnects', async () => {
  const { name, queue } = newQueue('resilience');
  const w = startWorker(name);
  const client = new IORedis(REDIS_URL);
  cleanups.push(() => client.quit());
  try {
    const first = await queue.add('ingest', data());
    await waitFor(async () => (await queue.getJob(first.id)).finishedOn, { what: 'first job' });
    // What a Redis restart does to scripts: EVALSHA now answers NOSCRIPT.
    await client.script('FLUSH');
    const second = await queue.add('ingest', data());
    await waitFor(async () => (await queue.getJob(second.id))?.finishedOn, { what: 'job after SCRIPT FLUSH' });
    assert.equal(await (await queue.getJob(first.id)).getState(), 'completed');
    assert.equal(await (await queue.getJob(second.id)).getState(), 'completed', 'the scripts were re-loaded');
    // Drop every other connection, the worker's two included.
    await client.call('CLIENT', 'KILL', 'TYPE', 'normal', 'SKIPME', 'yes');
    await waitFor(() => /Redis connection is down/.test(w.logs), { what: 'worker noticed' });
    const third = await queue.add('ingest', data());
    await waitFor(async () => (await queue.getJob(third.id))?.finishedOn, { what: 'job after reconnect', timeout: 20000 });
    assert.equal(await (await queue.getJob(third.id)).getState(), 'completed');
    assert.ok((w.logs.match(/connected to Redis/g) || []).length >= 4, 'both connections came back');
  } finally {
    assert.equal(await stopWorker(w), 0, w.logs);
  }
});
