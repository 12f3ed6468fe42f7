// Node producer → our worker, and our producer → Node worker (bullmq 6.7.0, real Redis).
import assert from 'node:assert/strict';
import { test, after } from 'node:test';
import {
  requireServices, bullmq, connection, queueName, startWorker, stopWorker, mediaQueue,
  waitFor, recordEvents, sleep,
} from './lib/harness.mjs';

await requireServices();
const { Queue, Worker, QueueEvents } = await bullmq();
const cleanups = [];
after(async () => { for (const f of cleanups.reverse()) await f(); });

test('Node Queue.add → our worker completes; QueueEvents and getJobCounts agree', async () => {
  const name = queueName('basic');
  const queue = new Queue(name, { connection: connection() });
  const events = await recordEvents(QueueEvents, name);
  cleanups.push(async () => { await events.qe.close(); await queue.obliterate({ force: true }); await queue.close(); });

  const jobs = [];
  for (let i = 0; i < 5; i++) {
    jobs.push(await queue.add('ingest', { messageId: 100 + i, providerMediaId: `m${i}` },
      { attempts: 2 }));
  }
  const worker = startWorker(name, { MEDIA_INGEST_CONCURRENCY: '2' });
  try {
    await waitFor(async () => (await queue.getJobCounts()).completed === 5,
      { what: '5 completed jobs' });
    for (const j of jobs) {
      const job = await queue.getJob(j.id);
      assert.equal(await job.getState(), 'completed');
      assert.deepEqual(job.returnvalue, { ok: true, jobId: j.id, worker: 'c' });
      assert.equal(job.attemptsMade, 1);
      assert.ok(job.processedOn >= job.timestamp);
      assert.ok(job.finishedOn >= job.processedOn);
      assert.match(job.processedBy, /^media-ingest-/);
      assert.deepEqual(job.data, { messageId: jobs.indexOf(j) + 100, providerMediaId: `m${jobs.indexOf(j)}` });
    }
    await waitFor(() => events.seen.filter((e) => e.ev === 'completed').length === 5,
      { what: 'QueueEvents completed x5' });
    for (const j of jobs) {
      assert.ok(events.seen.some((e) => e.ev === 'active' && e.jobId === j.id), `active ${j.id}`);
      const done = events.seen.find((e) => e.ev === 'completed' && e.jobId === j.id);
      assert.deepEqual(done.returnvalue, { ok: true, jobId: j.id, worker: 'c' });
    }
    assert.deepEqual(events.errors, []);
    // A worker shows up in Queue.getWorkers() (bull-board's worker list).
    const workers = await queue.getWorkers();
    assert.ok(workers.some((w) => /:w:media-ingest-/.test(w.rawname)),
      JSON.stringify(workers.map((w) => w.rawname)));

    // stats --json equals getJobCounts() in every state, with jobs in several states.
    await queue.add('ingest', { messageId: 1, providerMediaId: 'd' }, { delay: 60000 });
    await queue.add('ingest', { messageId: 2, providerMediaId: 'p' }, { priority: 3, delay: 60000 });
    const stats = JSON.parse(await mediaQueue(name, ['stats', '--json']));
    const counts = await queue.getJobCounts();
    const { paused, ...sevenKeys } = stats;
    assert.deepEqual(sevenKeys, counts);
    assert.deepEqual(Object.keys(sevenKeys), Object.keys(counts));
    assert.equal(paused, false);
  } finally {
    assert.equal(await stopWorker(worker), 0, worker.logs);
  }
});

test('media-queue add → a Node Worker processes it with the expected name, data and opts', async () => {
  const name = queueName('cliadd');
  const queue = new Queue(name, { connection: connection() });
  cleanups.push(async () => { await queue.obliterate({ force: true }); await queue.close(); });
  const got = [];
  const worker = new Worker(name, async (job) => { got.push(job); return { seen: job.id }; },
    { connection: connection() });
  cleanups.push(() => worker.close());

  const id1 = (await mediaQueue(name, ['add', '1234', '2087129492123864'])).trim();
  const id2 = (await mediaQueue(name, ['add', 'abc-9', 'wamid.X', '--job-id', 'media-abc-9',
    '--priority', '7', '--attempts', '2', '--backoff', '1000'])).trim();
  assert.equal(id2, 'media-abc-9');
  // Adding the same custom id again leaves the existing job untouched.
  const again = (await mediaQueue(name, ['add', 'other', 'other', '--job-id', 'media-abc-9'])).trim();
  assert.equal(again, 'media-abc-9');

  await waitFor(() => got.length === 2, { what: 'Node worker got 2 jobs' });
  const j1 = got.find((j) => j.id === id1);
  assert.equal(j1.name, 'ingest');
  assert.deepEqual(j1.data, { messageId: 1234, providerMediaId: '2087129492123864' });
  assert.equal(j1.opts.attempts, 5);
  assert.deepEqual(j1.opts.backoff, { type: 'exponential', delay: 30000 });
  const j2 = got.find((j) => j.id === id2);
  assert.deepEqual(j2.data, { messageId: 'abc-9', providerMediaId: 'wamid.X' });
  assert.equal(j2.opts.priority, 7);
  assert.equal(j2.opts.attempts, 2);
  assert.deepEqual(j2.opts.backoff, { type: 'exponential', delay: 1000 });
  await waitFor(async () => (await queue.getJobCounts()).completed === 2, { what: 'completed' });
  assert.equal(await (await queue.getJob(id2)).getState(), 'completed');

  // Integer and ':' custom ids are refused, as BullMQ refuses them (exit 2).
  await assert.rejects(mediaQueue(name, ['add', '1', 'x', '--job-id', '42']), /integer/);
  await assert.rejects(mediaQueue(name, ['add', '1', 'x', '--job-id', 'a:b']), /':'/);
  await sleep(10);
});
