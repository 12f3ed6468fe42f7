// SIGKILL mid-job: the stalled checker (ours, or a Node worker's) brings the job back.
import assert from 'node:assert/strict';
import { test, after } from 'node:test';
import {
  requireServices, bullmq, connection, queueName, startWorker, stopWorker, waitFor, recordEvents,
} from './lib/harness.mjs';

await requireServices();
const { Queue, Worker, QueueEvents } = await bullmq();
const cleanups = [];
after(async () => { for (const f of cleanups.reverse()) await f(); });

const fast = { MEDIA_INGEST_LOCK_DURATION_MS: '1500', MEDIA_INGEST_STALLED_INTERVAL_MS: '500' };

async function killWhenActive(queue, worker, id) {
  try {
    await waitFor(async () => (await (await queue.getJob(id)).getState()) === 'active', { what: 'active' });
  } finally {
    worker.kill('SIGKILL');  // also when it never got there: a live child would keep this file running
    await worker.exited;
  }
}

test('our stalled checker re-queues a killed worker\'s job and it completes', async () => {
  const name = queueName('stall');
  const queue = new Queue(name, { connection: connection() });
  const events = await recordEvents(QueueEvents, name);
  cleanups.push(async () => { await events.qe.close(); await queue.obliterate({ force: true }); await queue.close(); });
  const job = await queue.add('ingest', { messageId: 1, providerMediaId: 'x', test: { sleepMs: 30000, sleepStarts: 1 } });
  const w1 = startWorker(name, fast);
  await killWhenActive(queue, w1, job.id);
  const w2 = startWorker(name, fast);
  try {
    await waitFor(async () => (await queue.getJobCounts()).completed === 1, { what: 'completed', timeout: 15000 });
    const j = await queue.getJob(job.id);
    assert.equal(j.stalledCounter, 1);
    assert.equal(j.attemptsMade, 1, 'a stall does not count as an attempt');
    assert.ok(events.seen.some((e) => e.ev === 'stalled' && e.jobId === job.id));
  } finally {
    assert.equal(await stopWorker(w2), 0, w2.logs);
  }
});

test('a Node worker\'s stalled checker recovers a job our killed worker held', async () => {
  const name = queueName('stallnode');
  const queue = new Queue(name, { connection: connection() });
  cleanups.push(async () => { await queue.obliterate({ force: true }); await queue.close(); });
  const job = await queue.add('ingest', { messageId: 1, providerMediaId: 'x', test: { sleepMs: 30000 } });
  const w1 = startWorker(name, fast);
  await killWhenActive(queue, w1, job.id);
  const done = [];
  const nw = new Worker(name, async (j) => { done.push(j.id); return 'node'; },
    { connection: connection(), stalledInterval: 500, lockDuration: 1500 });
  cleanups.push(() => nw.close());
  await waitFor(async () => (await queue.getJobCounts()).completed === 1, { what: 'completed', timeout: 15000 });
  assert.deepEqual(done, [job.id]);
  assert.equal((await queue.getJob(job.id)).returnvalue, 'node');
});

test('past maxStalledCount the job fails as BullMQ fails it', async () => {
  const name = queueName('stallmax');
  const queue = new Queue(name, { connection: connection() });
  const events = await recordEvents(QueueEvents, name);
  cleanups.push(async () => { await events.qe.close(); await queue.obliterate({ force: true }); await queue.close(); });
  const job = await queue.add('ingest', { messageId: 1, providerMediaId: 'x', test: { sleepMs: 30000 } }, { attempts: 5 });
  const w1 = startWorker(name, fast);
  await killWhenActive(queue, w1, job.id);
  const w2 = startWorker(name, fast);
  // w2 re-queues it (stc 1) and runs it again; kill it while it runs.
  await waitFor(async () => (await queue.getJob(job.id)).stalledCounter === 1, { what: 'first stall', timeout: 15000 });
  await killWhenActive(queue, w2, job.id);
  const w3 = startWorker(name, fast);
  try {
    await waitFor(async () => (await queue.getJobCounts()).failed === 1, { what: 'failed', timeout: 15000 });
    const j = await queue.getJob(job.id);
    assert.equal(j.failedReason, 'job stalled more than allowable limit');
    assert.equal(j.stalledCounter, 2);
    assert.ok(events.seen.some((e) => e.ev === 'failed' && e.jobId === job.id));
  } finally {
    assert.equal(await stopWorker(w3), 0, w3.logs);
  }
});
