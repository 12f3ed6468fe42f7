// The product end to end, local storage backend: Node Queue.add → media-ingest-worker →
// Graph fake → files under MEDIA_LOCAL_DIR → "Message" row → BullMQ completed.
import assert from 'node:assert/strict';
import { mkdtempSync, mkdirSync, readdirSync, writeFileSync, statSync, existsSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawn } from 'node:child_process';
import { test, after, before } from 'node:test';
import {
  requireServices, bullmq, connection, queueName, startWorker, stopWorker, waitFor, sleep,
} from './lib/harness.mjs';
import {
  requireDatabase, privateSchema, insertMessages, rows, sha256File, control, psql,
} from './lib/media.mjs';
import { startGraphFake } from '../fakes/graph-fake.mjs';

await requireServices();
await requireDatabase();
const { Queue } = await bullmq();
const WORKER = process.env.MEDIA_INGEST_WORKER;
const cleanups = [];
after(async () => { for (const f of cleanups.reverse()) await f().catch(() => {}); });

const tmp = mkdtempSync(join(tmpdir(), 'mi-e2e-'));
cleanups.push(async () => rmSync(tmp, { recursive: true, force: true }));  // runs last
const root = join(tmp, 'store', 'root');
const tokenFile = join(tmp, 'token');
mkdirSync(join(tmp, 'store'));
let fake, db, name, queue, worker;

function workerEnv(extra = {}) {
  return {
    DATABASE_URL: db.url,
    WHATSAPP_ACCESS_TOKEN_FILE: tokenFile,
    WHATSAPP_GRAPH_URL: `http://127.0.0.1:${fake.port}`,
    MEDIA_STORAGE_BACKEND: 'local',
    MEDIA_LOCAL_DIR: root,
    MEDIA_MAX_BYTES: String(110 * 1024 * 1024),
    MEDIA_INGEST_CONCURRENCY: '16',
    METRICS_ADDR: `127.0.0.1:${METRICS_PORT}`,
    ...extra,
  };
}

// Below the ephemeral range (32768-60999), so a client socket cannot be holding it.
const METRICS_PORT = 29465 + (process.pid % 500);
const jobOpts = { attempts: 3, backoff: { type: 'fixed', delay: 200 } };

async function enqueue(pairs, opts = jobOpts) {
  const jobs = [];
  for (const [messageId, providerMediaId] of pairs) {
    jobs.push(await queue.add('ingest', { messageId, providerMediaId }, opts));
  }
  return jobs;
}

async function settle(jobs, timeout = 60000) {
  await waitFor(async () => {
    if (worker.exitCode !== null || worker.signalCode !== null) {
      throw new Error(`the worker exited: ${worker.logs.slice(-1500)}`);
    }
    for (const j of jobs) {
      const s = await (await queue.getJob(j.id)).getState();
      if (s !== 'completed' && s !== 'failed') return false;
    }
    return true;
  }, { what: `${jobs.length} jobs finished`, timeout, interval: 100 });
  return Promise.all(jobs.map((j) => queue.getJob(j.id)));
}

before(async () => {
  fake = await startGraphFake({ token: 'tok-e2e' });
  cleanups.push(() => fake.close());
  db = await privateSchema('e2e');
  cleanups.push(() => db.drop());
  writeFileSync(tokenFile, 'tok-e2e\n');
  name = queueName('media');
  queue = new Queue(name, { connection: connection() });
  cleanups.push(async () => { await queue.obliterate({ force: true }); await queue.close(); });
  worker = startWorker(name, workerEnv(), WORKER);
  cleanups.push(() => stopWorker(worker));
});

test('mixed media: every job completed, every file byte-exact, every row updated', async () => {
  const media = [];
  for (let i = 0; i < 30; i++) media.push(`img-${100 + i}kb-a${i}`);
  for (let i = 0; i < 20; i++) media.push(`voice-${20 + i}kb-a${i}`);
  for (let i = 0; i < 4; i++) media.push(`video-16mb-a${i}`);
  for (let i = 0; i < 2; i++) media.push(`doc-100mb-a${i}`);
  const ids = await insertMessages(db.schema, media);
  const jobs = await settle(await enqueue(ids.map((id, i) => [id, media[i]])), 180000);
  const byId = new Map((await rows(db.schema)).map((r) => [r.id, r]));
  for (let i = 0; i < jobs.length; i++) {
    const j = jobs[i];
    assert.equal(await j.getState(), 'completed', `${media[i]}: ${j.failedReason}`);
    const meta = await control(fake, 'GET', `media/${media[i]}`);
    const path = join(root, 'media', String(ids[i]), media[i]);
    assert.deepEqual(j.returnvalue, {
      storedUrl: `file://${path}`, bytes: meta.size, sha256: meta.sha256, mimeType: meta.mime,
    });
    assert.equal(statSync(path).size, meta.size);
    assert.equal(await sha256File(path), meta.sha256, media[i]);
    const row = byId.get(ids[i]);
    assert.equal(row.mediaStoredUrl, `file://${path}`);
    assert.equal(row.mediaStorageBackend, 'local');
    assert.ok(row.mediaStoredAt, 'mediaStoredAt set');
  }
  // No temporary files are left behind.
  for (const id of ids) {
    const left = readdirSync(join(root, 'media', String(id))).filter((f) => f.startsWith('.'));
    assert.deepEqual(left, []);
  }
  const stats = await control(fake, 'GET', 'stats');
  assert.equal(stats.noUserAgent, 0, 'every request carried a User-Agent');
});

test('/metrics (Prometheus text, promtool-clean), /healthz and /readyz of the running worker', async () => {
  const base = `http://127.0.0.1:${METRICS_PORT}`;
  assert.equal((await fetch(`${base}/healthz`)).status, 200);
  const ready = await fetch(`${base}/readyz`);
  assert.equal(ready.status, 200, await ready.text());
  assert.equal((await fetch(`${base}/nope`)).status, 404);
  const text = await (await fetch(`${base}/metrics`)).text();
  const val = (re) => Number((text.match(re) || [])[1]);
  assert.ok(val(/^media_ingest_jobs_total\{outcome="completed",class="none"\} (\d+)/m) >= 56, 'completed jobs counted');
  assert.ok(val(/^media_ingest_bytes_total (\d+)/m) > 200 * 1024 * 1024, 'bytes counted');
  assert.match(text, /^media_ingest_phase_duration_seconds_count\{phase="download"\} \d+/m);
  assert.match(text, /^media_ingest_jobs_in_flight 0/m);
  assert.match(text, /^process_resident_memory_bytes \d+/m);
  assert.ok(!text.includes('tok-e2e') && !text.includes('media-secret-pw'), 'no secrets in /metrics');
  const promtool = await new Promise((resolve) => {
    const p = spawn('promtool', ['check', 'metrics'], { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    p.stdout.on('data', (d) => { out += d; });
    p.stderr.on('data', (d) => { out += d; });
    p.on('error', () => resolve(null));
    p.on('exit', (code) => resolve({ code, out }));
    p.stdin.end(text);
  });
  if (promtool) assert.equal(promtool.code, 0, promtool.out);
  else console.log('# promtool not installed: exposition format not checked by promtool');
});

test('a duplicate job and a rerun after success download nothing again', async () => {
  const [id] = await insertMessages(db.schema, ['img-64kb-dup']);
  await settle(await enqueue([[id, 'img-64kb-dup']]));
  const dup = await settle(await enqueue([[id, 'img-64kb-dup'], [String(id), 'img-64kb-dup']]));
  for (const j of dup) {
    assert.equal(await j.getState(), 'completed');
    assert.equal(j.returnvalue.skipped, 'already stored');
  }
  // The row forgot where the media is, but the object is there with the same sha256:
  // only the row is updated.
  await psql(`UPDATE "${db.schema}"."Message" SET "mediaStoredUrl" = NULL WHERE "id" = ${id}`);
  const [again] = await settle(await enqueue([[id, 'img-64kb-dup']]));
  assert.equal(await again.getState(), 'completed');
  assert.match(again.returnvalue.storedUrl, /^file:\/\//);
  const s = await control(fake, 'GET', 'stats');
  assert.equal(s.perId['img-64kb-dup'].downloads, 1, 'downloaded once');
  const row = (await rows(db.schema)).find((r) => r.id === id);
  assert.ok(row.mediaStoredUrl);
});

test('hostile job data fails with a reason; good jobs beside it complete; nothing escapes the root', async () => {
  const [good] = await insertMessages(db.schema, ['img-10kb-good']);
  const bad = [
    { messageId: { x: 1 }, providerMediaId: 'img-1' },
    { messageId: 1, providerMediaId: 42 },
    { messageId: '../../etc', providerMediaId: 'img-1' },
    { messageId: good, providerMediaId: '../../../escape' },
    { messageId: '/abs', providerMediaId: 'img-1' },
    { messageId: 'a\u0000b', providerMediaId: 'img-1' },
    { messageId: good, providerMediaId: 'img\nx' },
    { messageId: 'x'.repeat(10240), providerMediaId: 'img-1' },
    { messageId: good, providerMediaId: 'y'.repeat(10240) },
    { messageId: 987654, providerMediaId: 'img-10kb-nobody' },
    { messageId: '%2e%2e', providerMediaId: 'img-1' },
    {},
  ];
  const jobs = [];
  for (const d of bad) jobs.push(await queue.add('ingest', d, jobOpts));
  jobs.push(...await enqueue([[good, 'img-10kb-good']]));
  const done = await settle(jobs);
  for (let i = 0; i < bad.length; i++) {
    assert.equal(await done[i].getState(), 'failed', JSON.stringify(bad[i]).slice(0, 80));
    assert.ok(done[i].failedReason.length > 10, done[i].failedReason);
    assert.equal(done[i].attemptsMade, 1, 'bad data is not retried');
  }
  assert.match(done[9].failedReason, /no Message row/);
  assert.equal(await done.at(-1).getState(), 'completed');
  // The storage root's parent holds only the root; the root only media/.
  assert.deepEqual(readdirSync(join(tmp, 'store')), ['root']);
  assert.deepEqual(readdirSync(root), ['media']);
  assert.ok(!existsSync(join(tmp, 'escape')));
});

test('error classes: permanent, transient, rate limit, oversize', async () => {
  await control(fake, 'POST', 'media', [
    { id: 'perm-1', size: 1000, mime: 'image/jpeg' },
    { id: 'flaky-1', size: 5000, mime: 'image/png', faults: [{ on: 'download', status: 503, times: 1 }] },
    { id: 'cut-1', size: 300000, mime: 'image/png', faults: [{ on: 'download', cutAfter: 1000, times: 1 }] },
    { id: 'slowdown-1', size: 2000, mime: 'image/png', faults: [{ on: 'lookup', graphError: { code: 4 }, times: 1 }] },
    { id: 'corrupt-1', size: 4000, mime: 'image/png', faults: [{ on: 'download', corrupt: true, times: 1 }] },
  ]);
  await control(fake, 'DELETE', 'media/perm-1');
  const media = ['perm-1', 'flaky-1', 'cut-1', 'slowdown-1', 'corrupt-1', 'doc-120mb-big'];
  const ids = await insertMessages(db.schema, media);
  const jobs = await settle(await enqueue(ids.map((id, i) => [id, media[i]])), 60000);
  const [perm, flaky, cut, slow, corrupt, big] = jobs;
  assert.equal(await perm.getState(), 'failed');
  assert.match(perm.failedReason, /code 100/);
  assert.equal(perm.attemptsMade, 1);
  for (const j of [flaky, cut, corrupt]) {
    assert.equal(await j.getState(), 'completed', j.failedReason);
    assert.equal(j.attemptsMade, 1, 'retried inside the job, no BullMQ attempt used');
  }
  assert.equal(await slow.getState(), 'completed', slow.failedReason);
  assert.equal(slow.attemptsMade, 1, 'a rate-limited job is given back, not failed');
  // ...and the faults really happened: one failed try, then a good one
  const per = (await control(fake, 'GET', 'stats')).perId;
  for (const id of ['flaky-1', 'cut-1', 'corrupt-1']) {
    assert.ok(per[id].downloads >= 2, `${id}: ${per[id].downloads} downloads`);
    assert.equal(per[id].downloadsOk >= 1, true, `${id}: no good download`);
  }
  assert.ok(per['slowdown-1'].lookups >= 2, `slowdown-1: ${per['slowdown-1'].lookups} lookups`);
  assert.equal(await big.getState(), 'failed');
  assert.match(big.failedReason, /MEDIA_MAX_BYTES/);
  assert.equal(big.attemptsMade, 1);
});

test('a bad token stops claims without burning jobs; fixing the token file resumes', async () => {
  writeFileSync(tokenFile, 'wrong-token\n');
  await sleep(2500); // the worker re-reads the file every 2 s
  const media = ['img-20kb-tok1', 'img-20kb-tok2', 'img-20kb-tok3'];
  const ids = await insertMessages(db.schema, media);
  const jobs = await enqueue(ids.map((id, i) => [id, media[i]]));
  await sleep(3000);
  for (const j of jobs) {
    const job = await queue.getJob(j.id);
    assert.notEqual(await job.getState(), 'failed');
    assert.equal(job.attemptsMade, 0, 'no attempt burned while the token is bad');
  }
  const notReady = await fetch(`http://127.0.0.1:${METRICS_PORT}/readyz`);
  assert.equal(notReady.status, 503);
  assert.match(await notReady.text(), /token/);
  writeFileSync(tokenFile, 'tok-e2e\n');
  const done = await settle(jobs, 20000);
  for (const j of done) assert.equal(await j.getState(), 'completed', j.failedReason);
  assert.match(worker.logs, /refuses our token/);
  assert.match(worker.logs, /token file changed/);
  assert.ok(!worker.logs.includes('tok-e2e') && !worker.logs.includes('wrong-token'), 'no token in logs');
  assert.ok(!worker.logs.includes('media-secret-pw'), 'no database password in logs');
});

test('SIGTERM mid-run: in-flight jobs finish, exit 0', async () => {
  await control(fake, 'POST', 'media', [
    { id: 'slow-1', size: 400000, mime: 'video/mp4', faults: [{ on: 'download', bytesPerSec: 200000 }] },
  ]);
  const [id] = await insertMessages(db.schema, ['slow-1']);
  const [job] = await enqueue([[id, 'slow-1']]);
  await waitFor(async () => (await queue.getJob(job.id)).processedOn, { what: 'started' });
  await sleep(300);
  assert.equal(await stopWorker(worker, 'SIGTERM'), 0, worker.logs.slice(-2000));
  assert.equal(await (await queue.getJob(job.id)).getState(), 'completed');
});
