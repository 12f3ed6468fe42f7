// Retries: attempts 3 with exponential backoff 200 ms, through our worker.
import assert from 'node:assert/strict';
import { test, after } from 'node:test';
import {
  requireServices, bullmq, connection, queueName, startWorker, stopWorker, waitFor, recordEvents,
} from './lib/harness.mjs';

await requireServices();
const { Queue, QueueEvents } = await bullmq();
const cleanups = [];
after(async () => { for (const f of cleanups.reverse()) await f(); });

test('attempts 3, exponential 200 ms: delayed at the right due times, then failed', async () => {
  const name = queueName('retry');
  const queue = new Queue(name, { connection: connection() });
  const events = await recordEvents(QueueEvents, name);
  cleanups.push(async () => { await events.qe.close(); await queue.obliterate({ force: true }); await queue.close(); });
  const worker = startWorker(name);
  try {
    const job = await queue.add('ingest', { messageId: 1, providerMediaId: 'x', test: { fail: 'boom: graph said no' } },
      { attempts: 3, backoff: { type: 'exponential', delay: 200 } });
    await waitFor(async () => (await queue.getJobCounts()).failed === 1, { what: 'failed', timeout: 10000 });
    const j = await queue.getJob(job.id);
    assert.equal(await j.getState(), 'failed');
    assert.equal(j.failedReason, 'boom: graph said no');
    assert.equal(j.attemptsMade, 3);
    assert.equal(j.stacktrace.length, 3);
    await waitFor(() => events.seen.some((e) => e.ev === 'retries-exhausted'), { what: 'retries-exhausted' });
    const failed = events.seen.filter((e) => e.ev === 'failed');
    assert.equal(failed.length, 1, 'exactly one QueueEvents failed');
    assert.equal(failed[0].failedReason, 'boom: graph said no');
    const delayed = events.seen.filter((e) => e.ev === 'delayed' && e.jobId === job.id);
    assert.equal(delayed.length, 2, 'two delayed retries');
    const actives = events.seen.filter((e) => e.ev === 'active' && e.jobId === job.id);
    assert.equal(actives.length, 3);
    // Due times: 200 ms then 400 ms after each failure; each retry starts after its due time.
    const gaps = delayed.map((d, i) => Number(d.delay) - actives[i].at);
    assert.ok(gaps[0] >= 150 && gaps[0] <= 450, `first backoff ${gaps[0]} ms`);
    assert.ok(gaps[1] >= 350 && gaps[1] <= 650, `second backoff ${gaps[1]} ms`);
    for (let i = 0; i < 2; i++) {
      assert.ok(actives[i + 1].at >= Number(delayed[i].delay) - 20, 'retry not before its due time');
    }
  } finally {
    assert.equal(await stopWorker(worker), 0, worker.logs);
  }
});

test('failAttempts 1 with attempts 2 and no backoff: retried at once, then completed', async () => {
  const name = queueName('retry2');
  const queue = new Queue(name, { connection: connection() });
  cleanups.push(async () => { await queue.obliterate({ force: true }); await queue.close(); });
  const worker = startWorker(name);
  try {
    const job = await queue.add('ingest', { messageId: 1, providerMediaId: 'x', test: { failAttempts: 1 } },
      { attempts: 2 });
    await waitFor(async () => (await queue.getJobCounts()).completed === 1, { what: 'completed' });
    const j = await queue.getJob(job.id);
    assert.equal(j.attemptsMade, 2);
    assert.equal(j.failedReason, 'test failure on attempt 1');  // kept, as BullMQ keeps it
  } finally {
    assert.equal(await stopWorker(worker), 0, worker.logs);
  }
});

test('a permanent failure fails at once, whatever attempts remain', async () => {
  const name = queueName('perm');
  const queue = new Queue(name, { connection: connection() });
  cleanups.push(async () => { await queue.obliterate({ force: true }); await queue.close(); });
  const worker = startWorker(name);
  try {
    const job = await queue.add('ingest', { messageId: 1, providerMediaId: 'x', test: { fail: 'media expired', permanent: true } },
      { attempts: 5, backoff: 1000 });
    await waitFor(async () => (await queue.getJobCounts()).failed === 1, { what: 'failed' });
    const j = await queue.getJob(job.id);
    assert.equal(j.attemptsMade, 1);
    assert.equal(j.failedReason, 'media expired');
  } finally {
    assert.equal(await stopWorker(worker), 0, worker.logs);
  }
});
