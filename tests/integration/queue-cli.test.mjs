// media-queue retry-failed, clean and uploads against real services: Redis with bullmq@6.7.0
// from npm (Node workers, QueueEvents, getJob/getJobCounts as the judges), and a Ceph RGW
// bucket of its own for the multipart uploads (curl --aws-sigv4 opens them).
// Each part skips when its service is missing; the file exits 77 when both are.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import http from 'node:http';
import net from 'node:net';
import { promisify } from 'node:util';
import { test, after } from 'node:test';
import {
  REDIS_URL, bullmq, connection, queueName, envFor, waitFor, recordEvents, sleep,
} from './lib/harness.mjs';

const execFileP = promisify(execFile);

async function reachable(host, port) {
  return new Promise((resolve) => {
    const s = net.connect({ host, port });
    s.setTimeout(2000);
    s.on('connect', () => { s.destroy(); resolve(true); });
    s.on('error', () => resolve(false));
    s.on('timeout', () => { s.destroy(); resolve(false); });
  });
}

let redisWhy = '';
if (!REDIS_URL) redisWhy = 'REDIS_URL is not set (run scripts/services.sh up)';
else {
  const u = new URL(REDIS_URL);
  if (!await reachable(u.hostname, Number(u.port || 6379))) redisWhy = `Redis at ${u.host} is not reachable`;
  else {
    try { await import('bullmq'); } catch { redisWhy = 'the bullmq npm package is not installed (npm ci)'; }
  }
}
const S3 = {
  endpoint: process.env.MI_S3_ENDPOINT, key: process.env.MI_S3_ACCESS_KEY_ID,
  secret: process.env.MI_S3_SECRET_ACCESS_KEY, region: process.env.MI_S3_REGION || 'us-east-1',
};
let s3Why = '';
if (!S3.endpoint || !S3.key || !S3.secret) s3Why = 'MI_S3_* not set (run scripts/rgw.sh up)';
else {
  const u = new URL(S3.endpoint);
  if (!await reachable(u.hostname, Number(u.port || 80))) s3Why = `the S3 endpoint ${u.host} is not reachable`;
}
if (process.env.CI === 'true' && (redisWhy || s3Why)) {
  // per-test skips count as passes: in CI, where every service runs, fail instead
  console.log(`# CI: ${redisWhy || s3Why}`);
  process.exit(1);
}
if (redisWhy && s3Why) {
  console.log(`# skip: ${redisWhy}; ${s3Why}`);
  process.exit(77);
}
if (redisWhy) console.log(`# queue tests skipped: ${redisWhy}`);
if (s3Why) console.log(`# uploads tests skipped: ${s3Why}`);

const cleanups = [];
after(async () => { for (const f of cleanups.reverse()) await f().catch(() => {}); });

// media-queue with the queue's environment; never throws, returns {code, stdout, stderr}.
async function mq(queue, args, extra = {}) {
  try {
    const r = await execFileP(process.env.MEDIA_QUEUE, args, { env: envFor(queue, extra) });
    return { code: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (e) {
    if (typeof e.code !== 'number') throw e;
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

async function redis() {
  const { default: IORedis } = await import('ioredis');
  const r = new IORedis(connection());
  cleanups.push(async () => r.disconnect());
  return r;
}

async function newQueue(tag) {
  const { Queue } = await bullmq();
  const name = queueName(tag);
  const queue = new Queue(name, { connection: connection() });
  cleanups.push(async () => { await queue.obliterate({ force: true }); await queue.close(); });
  return { name, queue };
}

async function nodeWorker(name, processor, opts = {}) {
  const { Worker } = await bullmq();
  const w = new Worker(name, processor, { connection: connection(), ...opts });
  cleanups.push(() => w.close());
  return w;
}

const data = (i) => ({ messageId: i, providerMediaId: `m${i}` });

test('retry-failed: paused queue gets no marker; jobs keep their priority; Node completes them',
  { skip: redisWhy || false }, async () => {
    const { QueueEvents } = await bullmq();
    const { name, queue } = await newQueue('retry');
    const r = await redis();
    const events = await recordEvents(QueueEvents, name);
    cleanups.push(() => events.qe.close());

    let healthy = false;
    const runs = new Map();
    const worker = await nodeWorker(name, async (job) => {
      runs.set(job.id, (runs.get(job.id) || 0) + 1);
      if (!healthy) {
        await job.log(`attempt ${job.attemptsMade + 1} failed`);
        throw new Error(`Graph API said no to ${job.id}`);
      }
      return { ok: job.id };
    });
    // Finished in this order (finishedOn ascending), so --limit 2 takes a then b.
    const a = await queue.add('ingest', data(1), { attempts: 2 });
    await waitFor(async () => (await queue.getJobCounts()).failed === 1, { what: 'a failed' });
    const b = await queue.add('ingest', data(2), { attempts: 2 });
    await waitFor(async () => (await queue.getJobCounts()).failed === 2, { what: 'b failed' });
    const c = await queue.add('ingest', data(3), { attempts: 2 });
    const p = await queue.add('ingest', data(4), { attempts: 1, priority: 5 });
    await waitFor(async () => (await queue.getJobCounts()).failed === 4, { what: '4 failed' });
    await worker.close();
    assert.equal((await queue.getJob(a.id)).attemptsMade, 2);
    assert.equal((await queue.getJob(p.id)).attemptsMade, 1);

    assert.equal((await mq(name, ['pause'])).code, 0);
    const r1 = await mq(name, ['retry-failed', '--limit', '2']);
    assert.equal(r1.code, 0, r1.stderr);
    assert.match(r1.stdout, /^2 failed jobs moved to wait \(the queue is paused/);
    assert.equal(await r.zcard(`bull:${name}:marker`), 0, 'no marker while paused');
    let counts = await queue.getJobCounts();
    assert.equal(counts.failed, 2);
    assert.equal(counts.waiting, 2);
    assert.deepEqual((await queue.getWaiting()).map((j) => j.id).sort(), [a.id, b.id].sort());
    for (const id of [a.id, b.id]) {
      const j = await queue.getJob(id);
      assert.equal(await j.getState(), 'waiting');
      // Node's retry clears these three; attemptsMade keeps counting; stacktrace stays.
      assert.equal(j.failedReason, undefined);
      assert.equal(j.finishedOn, undefined);
      assert.equal(j.processedOn, undefined);
      assert.equal(j.attemptsMade, 2);
      assert.equal(j.stacktrace.length, 2);
      assert.equal((await queue.getJobLogs(id)).count, 2);
    }
    await waitFor(() => events.seen.filter((e) => e.ev === 'waiting' && e.prev === 'failed').length === 2,
      { what: 'QueueEvents waiting (prev failed) x2' });

    const r2 = await mq(name, ['retry-failed']);
    assert.equal(r2.code, 0, r2.stderr);
    assert.match(r2.stdout, /^2 failed jobs moved to wait/);
    counts = await queue.getJobCounts();
    assert.deepEqual([counts.failed, counts.waiting, counts.prioritized], [0, 3, 1]);
    assert.equal(await (await queue.getJob(p.id)).getState(), 'prioritized');
    assert.equal(await r.zcard(`bull:${name}:marker`), 0, 'still no marker while paused');
    assert.match((await mq(name, ['retry-failed'])).stdout, /^0 failed jobs moved to wait/);

    // Resume: a Node worker runs them again and completes them.
    assert.equal((await mq(name, ['resume'])).code, 0);
    healthy = true;
    const completedOrder = [];
    const w2 = await nodeWorker(name, async (job) => {
      completedOrder.push(job.id);
      return { ok: job.id };
    });
    await waitFor(async () => (await queue.getJobCounts()).completed === 4, { what: '4 completed' });
    await w2.close();
    for (const [id, made] of [[a.id, 3], [b.id, 3], [c.id, 3], [p.id, 2]]) {
      const j = await queue.getJob(id);
      assert.equal(await j.getState(), 'completed');
      assert.deepEqual(j.returnvalue, { ok: id });
      assert.equal(j.attemptsMade, made, `attemptsMade of ${id}`);
    }
    // Plain jobs before the prioritized one, as for any wait list.
    assert.equal(completedOrder[3], p.id);
    await waitFor(() => events.seen.filter((e) => e.ev === 'completed').length === 4,
      { what: 'QueueEvents completed x4' });
    for (const id of [a.id, b.id, c.id, p.id]) {
      assert.ok(events.seen.some((e) => e.ev === 'waiting' && e.jobId === id && e.prev === 'failed'),
        `waiting prev failed for ${id}`);
    }
    assert.deepEqual(events.errors, []);
  });

test('retry-failed: one more attempt as in Node, or all attempts again with --reset-attempts',
  { skip: redisWhy || false }, async () => {
    const { name, queue } = await newQueue('attempts');
    let mode = 'fail';
    let runs = 0;
    await nodeWorker(name, async () => {
      runs++;
      if (mode === 'fail') throw new Error('still broken');
      return 'done';
    });
    const job = await queue.add('ingest', data(7), { attempts: 2 });
    const failedWith = async (made) => {
      await waitFor(async () => {
        const j = await queue.getJob(job.id);
        return (await j.getState()) === 'failed' && j.attemptsMade === made;
      }, { what: `failed with attemptsMade ${made}` });
    };
    await failedWith(2);
    assert.equal(runs, 2);

    // Like Node's retryJobs: attemptsMade 2 of 2 → exactly one more run, then failed again.
    assert.match((await mq(name, ['retry-failed'])).stdout, /^1 failed job moved to wait\n/);
    await failedWith(3);
    await sleep(300);
    assert.equal(runs, 3);

    // --reset-attempts: the job gets both attempts again.
    assert.match((await mq(name, ['retry-failed', '--reset-attempts'])).stdout, /^1 failed job moved/);
    await failedWith(2);
    await sleep(300);
    assert.equal(runs, 5);
    const j = await queue.getJob(job.id);
    assert.equal(j.attemptsStarted, 2);

    mode = 'ok';
    assert.equal((await mq(name, ['retry-failed'])).code, 0);
    await waitFor(async () => (await queue.getJob(job.id)).finishedOn
      && (await (await queue.getJob(job.id)).getState()) === 'completed', { what: 'completed' });
    const done = await queue.getJob(job.id);
    assert.equal(done.attemptsMade, 3);
    assert.equal(done.returnvalue, 'done');
    assert.equal(runs, 6);
  });

test('clean completed|failed --older-than removes exactly the old jobs with their keys',
  { skip: redisWhy || false }, async () => {
    const { QueueEvents } = await bullmq();
    const { name, queue } = await newQueue('clean');
    const r = await redis();
    const events = await recordEvents(QueueEvents, name);
    cleanups.push(() => events.qe.close());
    const cleaned = [];
    events.qe.on('cleaned', (args) => cleaned.push(args));

    await nodeWorker(name, async (job) => {
      await job.log(`working on ${job.id}`);
      if (job.data.fail) throw new Error('no');
      return { ok: true };
    });
    const add = async (n, fail) => {
      const jobs = [];
      for (let i = 0; i < n; i++) {
        jobs.push(await queue.add('ingest', { ...data(i), fail }, { attempts: 1 }));
      }
      return jobs;
    };
    const oldDone = await add(6, false);
    const oldFailed = await add(4, true);
    await waitFor(async () => {
      const k = await queue.getJobCounts();
      return k.completed === 6 && k.failed === 4;
    }, { what: 'old jobs finished' });
    await sleep(3000);
    const newDone = await add(3, false);
    const newFailed = await add(2, true);
    await waitFor(async () => {
      const k = await queue.getJobCounts();
      return k.completed === 9 && k.failed === 6;
    }, { what: 'new jobs finished' });

    const r1 = await mq(name, ['clean', 'completed', '--older-than', '2s']);
    assert.equal(r1.code, 0, r1.stderr);
    assert.equal(r1.stdout, '6 completed jobs removed (finished more than 2s ago)\n');
    for (const j of oldDone) {
      assert.equal(await queue.getJob(j.id), undefined);
      assert.equal(await r.exists(`bull:${name}:${j.id}`, `bull:${name}:${j.id}:logs`), 0);
    }
    for (const j of newDone) {
      assert.equal(await (await queue.getJob(j.id)).getState(), 'completed');
      assert.equal((await queue.getJobLogs(j.id)).count, 1);
    }

    // Oldest first, as Node's clean: by finishedOn, then by id for jobs of the same ms.
    const oldest = await r.zrange(`bull:${name}:failed`, 0, 3);
    assert.deepEqual([...oldest].sort(), oldFailed.map((j) => j.id).sort());
    const r2 = await mq(name, ['clean', 'failed', '--older-than', '2s', '--limit', '3']);
    assert.equal(r2.stdout, '3 failed jobs removed (finished more than 2s ago)\n');
    for (const id of oldest.slice(0, 3)) assert.equal(await queue.getJob(id), undefined);
    assert.equal(await (await queue.getJob(oldest[3])).getState(), 'failed');
    const r3 = await mq(name, ['clean', 'failed', '--older-than', '2s']);
    assert.equal(r3.stdout, '1 failed job removed (finished more than 2s ago)\n');
    assert.equal(await queue.getJob(oldest[3]), undefined);
    for (const j of newFailed) assert.equal(await (await queue.getJob(j.id)).getState(), 'failed');

    const counts = await queue.getJobCounts();
    assert.equal(counts.completed, 3);
    assert.equal(counts.failed, 2);
    const stats = JSON.parse((await mq(name, ['stats', '--json'])).stdout);
    delete stats.paused;
    assert.deepEqual(stats, counts);
    await waitFor(() => cleaned.length === 3, { what: 'QueueEvents cleaned x3' });
    assert.deepEqual(cleaned.map((e) => Number(e.count)), [6, 3, 1]);

    // Usage errors exit 2 and touch nothing.
    const bad = await mq(name, ['clean', 'completed']);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /--older-than/);
    assert.equal((await queue.getJobCounts()).completed, 3);
  });

test('retry-failed and clean on a large failed set work in batches', { skip: redisWhy || false },
  async () => {
    const { name, queue } = await newQueue('bulk');
    // 2,500 failed jobs written the way Node's finish leaves them (no worker needed).
    const r = await redis();
    const now = Date.now() - 60000;
    const jobs = await queue.addBulk(Array.from({ length: 2500 }, (_, i) => ({
      name: 'ingest', data: data(i), opts: { attempts: 1 },
    })));
    const pipe = r.pipeline();
    jobs.forEach((j, i) => {
      pipe.lrem(`bull:${name}:wait`, 1, j.id);
      pipe.hset(`bull:${name}:${j.id}`, 'failedReason', 'boom', 'finishedOn', now + i, 'atm', 1,
        'processedOn', now + i);
      pipe.zadd(`bull:${name}:failed`, now + i, j.id);
    });
    await pipe.exec();
    const r1 = await mq(name, ['retry-failed', '--limit', '2100']);
    assert.equal(r1.stdout, '2100 failed jobs moved to wait\n');
    let counts = await queue.getJobCounts();
    assert.deepEqual([counts.waiting, counts.failed], [2100, 400]);
    const r2 = await mq(name, ['clean', 'failed', '--older-than', '1s']);
    assert.equal(r2.stdout, '400 failed jobs removed (finished more than 1s ago)\n');
    counts = await queue.getJobCounts();
    assert.deepEqual([counts.waiting, counts.failed], [2100, 0]);
  });

// The same failed jobs in two queues: Node's retryJobs/clean on one, media-queue on the other,
// then the Redis state is compared key for key and field for field.
test('retry-failed and clean leave the same Redis state as Node retryJobs and clean',
  { skip: redisWhy || false }, async () => {
    const r = await redis();
    const make = async (tag) => {
      const q = await newQueue(tag);
      const w = await nodeWorker(q.name, async (job) => {
        await job.log('tried');
        throw new Error(`failed ${job.id}`);
      });
      for (let i = 0; i < 4; i++) await q.queue.add('ingest', data(i), { attempts: 1 });
      await waitFor(async () => (await q.queue.getJobCounts()).failed === 4, { what: '4 failed' });
      await w.close();
      return q;
    };
    const node = await make('diff-node');
    const ours = await make('diff-ours');
    // State of a queue with volatile values (clocks, stack frames) replaced by their presence.
    const snapshot = async (name) => {
      const keys = (await r.keys(`bull:${name}:*`)).map((k) => k.slice(`bull:${name}:`.length))
        .filter((k) => /^\d+(:logs)?$/.test(k) || ['wait', 'failed', 'marker'].includes(k)).sort();
      const jobs = {};
      for (const k of keys.filter((x) => /^\d+$/.test(x))) {
        const h = await r.hgetall(`bull:${name}:${k}`);
        for (const f of ['timestamp', 'processedOn', 'finishedOn', 'stacktrace']) {
          if (f in h) h[f] = 'present';
        }
        jobs[k] = h;
      }
      return { keys, jobs, wait: await r.lrange(`bull:${name}:wait`, 0, -1),
        failed: await r.zrange(`bull:${name}:failed`, 0, -1) };
    };
    const lastEvents = async (name, n) => (await r.xrevrange(`bull:${name}:events`, '+', '-', 'COUNT', n))
      .map(([, f]) => f.join(' ')).reverse();

    await node.queue.retryJobs({ state: 'failed', count: 3 });
    assert.equal((await mq(ours.name, ['retry-failed', '--limit', '3'])).code, 0);
    // Node's retryJobs loops until the set is empty; so do we without --limit.
    assert.equal((await mq(ours.name, ['retry-failed'])).code, 0);
    const s1 = await snapshot(node.name);
    assert.deepEqual(await snapshot(ours.name), s1);
    assert.equal(s1.wait.length, 4);
    assert.deepEqual(await lastEvents(ours.name, 4), await lastEvents(node.name, 4));

    // Fail them again, then clean: same remaining keys.
    for (const q of [node, ours]) {
      const w = await nodeWorker(q.name, async () => { throw new Error('again'); });
      await waitFor(async () => (await q.queue.getJobCounts()).failed === 4, { what: 'failed again' });
      await w.close();
    }
    await sleep(1100);
    await node.queue.clean(1000, 0, 'failed');
    assert.equal((await mq(ours.name, ['clean', 'failed', '--older-than', '1s'])).code, 0);
    const s2 = await snapshot(node.name);
    assert.deepEqual(await snapshot(ours.name), s2);
    assert.deepEqual(s2.keys.filter((k) => /^\d/.test(k)), []);
    assert.deepEqual(await lastEvents(ours.name, 1), await lastEvents(node.name, 1));
  });

// ---- uploads (S3 / RGW) ----

async function s3curl(args) {
  const r = await execFileP('curl', ['-sS', '--fail-with-body', '--aws-sigv4', `aws:amz:${S3.region}:s3`,
    '--user', `${S3.key}:${S3.secret}`, '-H', 'x-amz-content-sha256: UNSIGNED-PAYLOAD', ...args]);
  return r.stdout;
}

function s3Env(bucket, endpoint = S3.endpoint) {
  return {
    MEDIA_STORAGE_BACKEND: 's3', AWS_S3_BUCKET: bucket, AWS_ACCESS_KEY_ID: S3.key,
    AWS_SECRET_ACCESS_KEY: S3.secret, AWS_REGION: S3.region, AWS_ENDPOINT_URL_S3: endpoint,
  };
}

test('uploads list / abort --older-than against RGW', { skip: s3Why || false }, async () => {
  // A bucket of our own: other suites' workers sweep the shared bucket's uploads.
  const bucket = `mi-cli-${randomBytes(4).toString('hex')}`;
  const base = `${S3.endpoint}/${bucket}`;
  await s3curl(['-X', 'PUT', base]);
  const open = async (key) => {
    const xml = await s3curl(['-X', 'POST', `${base}/${key}?uploads=`]);
    return /<UploadId>([^<]+)<\/UploadId>/.exec(xml)[1];
  };
  const listed = async () => {
    const xml = await s3curl([`${base}?uploads=`]);
    return [...xml.matchAll(/<Key>([^<]*)<\/Key>\s*<UploadId>([^<]*)<\/UploadId>/g)]
      .map((m) => `${m[1]} ${m[2]}`).sort();
  };
  cleanups.push(async () => {
    const xml = await s3curl([`${base}?uploads=`]);
    for (const m of xml.matchAll(/<Key>([^<]*)<\/Key>\s*<UploadId>([^<]*)<\/UploadId>/g)) {
      await s3curl(['-X', 'DELETE', `${base}/${m[1]}?uploadId=${encodeURIComponent(m[2])}`]);
    }
    await s3curl(['-X', 'DELETE', base]);
  });

  const oldId = await open('media/101/old-doc');
  const outside = await open('other/keep-me');
  // Margins: S3 reports whole seconds, and the runs below take a while under a sanitizer.
  await sleep(4200);
  const newId = await open('media/102/new-img');
  const env = s3Env(bucket);

  const l1 = await mq('unused', ['uploads', 'list'], env);
  assert.equal(l1.code, 0, l1.stderr);
  const rows = l1.stdout.trim().split('\n');
  assert.equal(rows.pop(), '2 open multipart uploads under media/');
  const parsed = rows.map((l) => l.split('\t')).sort((x, y) => x[0].localeCompare(y[0]));
  assert.deepEqual(parsed.map((f) => [f[0], f[1]]),
    [['media/101/old-doc', oldId], ['media/102/new-img', newId]]);
  assert.match(parsed[0][2], /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$/);
  assert.match(parsed[0][3], /^([4-9]|\d\d)s$/);
  assert.match(parsed[1][3], /^[0-2]s$/);

  const l2 = await mq('unused', ['uploads', 'list', '--older-than', '3s'], env);
  assert.equal(l2.code, 0, l2.stderr);
  const [row2, summary2, end2] = l2.stdout.split('\n');
  const f2 = row2.split('\t');
  assert.deepEqual(f2.slice(0, 3), ['media/101/old-doc', oldId, parsed[0][2]], l2.stdout);
  // the age went on counting since the first listing: 4s then, maybe 5s now
  assert.match(f2[3], /^([4-9]|\d\d)s$/);
  assert.equal(f2.length, 4, l2.stdout);
  assert.equal(summary2, '1 of 2 open multipart uploads under media/ older than 3s');
  assert.equal(end2, '', l2.stdout);

  const ab = await mq('unused', ['uploads', 'abort', '--older-than', '3s'], env);
  assert.equal(ab.code, 0, ab.stderr);
  assert.match(ab.stdout, new RegExp(`^aborted\\tmedia/101/old-doc\\t${oldId.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}\\t`));
  assert.match(ab.stdout, /\naborted 1, failed 0: 1 of 2 open multipart uploads under media\/ older than 3s\n$/);
  assert.deepEqual(await listed(), [`media/102/new-img ${newId}`, `other/keep-me ${outside}`].sort());

  // Nothing old left: a second run aborts nothing and succeeds.
  const again = await mq('unused', ['uploads', 'abort', '--older-than', '3s'], env);
  assert.equal(again.code, 0);
  assert.equal(again.stdout, 'aborted 0, failed 0: 0 of 1 open multipart uploads under media/ older than 3s\n');

  // Wrong credentials: the listing fails, exit 1 with S3's reason.
  const denied = await mq('unused', ['uploads', 'list'], { ...env, AWS_SECRET_ACCESS_KEY: 'wrong' });
  assert.equal(denied.code, 1);
  assert.match(denied.stderr, /listing multipart uploads failed/);
});

test('uploads: local backend and incomplete settings exit 2', async () => {
  const local = await mq('unused', ['uploads', 'list'], { MEDIA_STORAGE_BACKEND: 'local' });
  assert.equal(local.code, 2);
  assert.match(local.stderr, /MEDIA_STORAGE_BACKEND is local, which has no multipart uploads/);
  const partial = await mq('unused', ['uploads', 'abort', '--older-than', '1h'],
    { MEDIA_STORAGE_BACKEND: 's3', AWS_S3_BUCKET: '', AWS_ACCESS_KEY_ID: '', AWS_SECRET_ACCESS_KEY: '' });
  assert.equal(partial.code, 2);
  assert.match(partial.stderr, /AWS_S3_BUCKET/);
  const noAge = await mq('unused', ['uploads', 'abort'], { MEDIA_STORAGE_BACKEND: 'local' });
  assert.equal(noAge.code, 2);
  assert.match(noAge.stderr, /--older-than/);
});

test('uploads abort: an abort the store refuses makes exit 1 and names the upload', async () => {
  // A stand-in S3 that lists one old upload and refuses to abort it (403, not retried).
  const server = http.createServer((req, res) => {
    if (req.method === 'GET' && req.url.includes('uploads')) {
      res.setHeader('content-type', 'application/xml');
      res.end('<?xml version="1.0" encoding="UTF-8"?><ListMultipartUploadsResult>'
        + '<Bucket>b</Bucket><IsTruncated>false</IsTruncated>'
        + '<Upload><Key>media/9/stuck</Key><UploadId>id+/=9</UploadId>'
        + '<Initiated>2020-01-01T00:00:00.000Z</Initiated></Upload>'
        + '<Upload><Key>media/9/young</Key><UploadId>young-1</UploadId>'
        + `<Initiated>${new Date().toISOString()}</Initiated></Upload>`
        + '</ListMultipartUploadsResult>');
      return;
    }
    res.statusCode = 403;
    res.setHeader('content-type', 'application/xml');
    res.end('<?xml version="1.0" encoding="UTF-8"?><Error><Code>AccessDenied</Code>'
      + '<Message>Access Denied</Message></Error>');
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  cleanups.push(async () => server.close());
  const env = {
    MEDIA_STORAGE_BACKEND: 's3', AWS_S3_BUCKET: 'b', AWS_ACCESS_KEY_ID: 'k',
    AWS_SECRET_ACCESS_KEY: 's', AWS_ENDPOINT_URL_S3: `http://127.0.0.1:${server.address().port}`,
  };
  const r = await mq('unused', ['uploads', 'abort', '--older-than', '1h'], env);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /aborting media\/9\/stuck \(upload id id\+\/=9\) failed: .*AccessDenied/);
  assert.equal(r.stdout, 'aborted 0, failed 1: 1 of 2 open multipart uploads under media/ older than 1h\n');
});
