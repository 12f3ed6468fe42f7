// The product end to end into a real S3 (Ceph RGW): objects byte-exact with Content-Type and
// sha256 metadata, rows updated, and after a SIGKILL mid-transfer a restarted worker
// completes every job and leaves no multipart upload open.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { promisify } from 'node:util';
import { test, after, before } from 'node:test';
import {
  requireServices, bullmq, connection, queueName, startWorker, stopWorker, waitFor, sleep,
} from './lib/harness.mjs';
import { requireDatabase, privateSchema, insertMessages, rows, control } from './lib/media.mjs';
import { startGraphFake } from '../fakes/graph-fake.mjs';

const execFileP = promisify(execFile);
const S3 = {
  endpoint: process.env.MI_S3_ENDPOINT, key: process.env.MI_S3_ACCESS_KEY_ID,
  secret: process.env.MI_S3_SECRET_ACCESS_KEY, bucket: process.env.MI_S3_BUCKET,
  region: process.env.MI_S3_REGION || 'us-east-1',
};
if (!S3.endpoint || !S3.key || !S3.secret || !S3.bucket) {
  console.log('# skip: MI_S3_* not set (run scripts/rgw.sh up)');
  process.exit(77);
}
await requireServices();
await requireDatabase();
const { Queue } = await bullmq();
const cleanups = [];
after(async () => { for (const f of cleanups.reverse()) await f().catch(() => {}); });

// Signed S3 calls with curl's SigV4 (a second, independent signer).
async function s3curl(args, { binary = false } = {}) {
  const r = await execFileP('curl', ['-sS', '--fail-with-body', '--aws-sigv4', `aws:amz:${S3.region}:s3`,
    // curl 7.88 neither adds x-amz-content-sha256 nor canonicalises the query (http-apis.md §B6).
    '--user', `${S3.key}:${S3.secret}`, '-H', 'x-amz-content-sha256: UNSIGNED-PAYLOAD', ...args],
  { encoding: binary ? 'buffer' : 'utf8', maxBuffer: 256 * 1024 * 1024 });
  return r.stdout;
}
const objUrl = (key) => `${S3.endpoint}/${S3.bucket}/${key}`;

async function openUploads() {
  const xml = await s3curl([`${S3.endpoint}/${S3.bucket}?prefix=media%2F&uploads=`]);
  return [...xml.matchAll(/<Key>([^<]*)<\/Key>/g)].map((m) => m[1]);
}

// Message ids restart at 1 in each private schema, but a gateway kept running (MI_KEEP_SERVICES)
// still holds the objects of earlier runs under the same keys: those jobs would find their object
// present and upload nothing. Delete the keys first, so that every test really uploads.
async function freshKeys(ids, media) {
  for (let i = 0; i < ids.length; i++) await s3curl(['-X', 'DELETE', objUrl(`media/${ids[i]}/${media[i]}`)]);
}

let fake, db, name, queue;
const env = () => ({
  DATABASE_URL: db.url, WHATSAPP_ACCESS_TOKEN: 'tok-s3', WHATSAPP_GRAPH_URL: `http://127.0.0.1:${fake.port}`,
  MEDIA_STORAGE_BACKEND: 's3', AWS_S3_BUCKET: S3.bucket, AWS_ACCESS_KEY_ID: S3.key,
  AWS_SECRET_ACCESS_KEY: S3.secret, AWS_REGION: S3.region, AWS_ENDPOINT_URL_S3: S3.endpoint,
  MEDIA_INGEST_LOCK_DURATION_MS: '2000', MEDIA_INGEST_STALLED_INTERVAL_MS: '500',
  MEDIA_ORPHAN_UPLOAD_AGE: '1s', MEDIA_BUFFER_BUDGET: '64M',
});

before(async () => {
  fake = await startGraphFake({ token: 'tok-s3' });
  cleanups.push(() => fake.close());
  db = await privateSchema('s3');
  cleanups.push(() => db.drop());
  name = queueName('s3');
  queue = new Queue(name, { connection: connection() });
  cleanups.push(async () => { await queue.obliterate({ force: true }); await queue.close(); });
});

async function settle(ids, media, worker, timeout = 120000) {
  const jobs = [];
  for (let i = 0; i < ids.length; i++) {
    jobs.push(await queue.add('ingest', { messageId: ids[i], providerMediaId: media[i] }, { attempts: 3 }));
  }
  await waitFor(async () => {
    if (worker && worker.exitCode !== null) throw new Error(`worker exited: ${worker.logs.slice(-1500)}`);
    const c = await queue.getJobCounts();
    return c.completed + c.failed >= jobs.length;
  }, { what: 'jobs finished', timeout, interval: 200 });
  return Promise.all(jobs.map((j) => queue.getJob(j.id)));
}

test('images, voice notes, a 16 MB video and a 100 MB document land byte-exact in RGW', async () => {
  const media = ['img-300kb-s1', 'voice-40kb-s2', 'video-16mb-s3', 'doc-100mb-s4', 'doc-5mb-s5'];
  const ids = await insertMessages(db.schema, media);
  await freshKeys(ids, media);
  const w = startWorker(name, env(), process.env.MEDIA_INGEST_WORKER);
  cleanups.push(() => stopWorker(w));
  const jobs = await settle(ids, media, w);
  const byId = new Map((await rows(db.schema)).map((r) => [r.id, r]));
  for (let i = 0; i < media.length; i++) {
    const j = jobs[i];
    assert.equal(await j.getState(), 'completed', j.failedReason);
    const meta = await control(fake, 'GET', `media/${media[i]}`);
    const key = `media/${ids[i]}/${media[i]}`;
    assert.equal(j.returnvalue.storedUrl, `s3://${S3.bucket}/${key}`);
    assert.equal(j.returnvalue.sha256, meta.sha256);
    const body = await s3curl([objUrl(key)], { binary: true });
    assert.equal(body.length, meta.size);
    assert.equal(createHash('sha256').update(body).digest('hex'), meta.sha256, media[i]);
    const head = await s3curl(['-I', objUrl(key)]);
    assert.match(head, new RegExp(`content-type: ${meta.mime.replace(/[;]/g, '.')}`, 'i'));
    assert.match(head, new RegExp(`x-amz-meta-sha256: ${meta.sha256}`, 'i'));
    const row = byId.get(ids[i]);
    assert.equal(row.mediaStoredUrl, `s3://${S3.bucket}/${key}`);
    assert.equal(row.mediaStorageBackend, 's3');
  }
  assert.deepEqual(await openUploads(), []);
  assert.equal(await stopWorker(w), 0);
});

test('SIGKILL mid-transfer, restart: every job completes, no upload left open', async () => {
  // slowdoc-k1 comes without file_size: a multipart upload; slowdoc-k2's announced size makes
  // it one streamed PutObject. Both are cut by the kill.
  await control(fake, 'POST', 'media', [
    { id: 'slowdoc-k1', size: 24 * 1024 * 1024, mime: 'application/pdf', fileSizeAs: 'absent', faults: [{ on: 'download', bytesPerSec: 4 * 1024 * 1024, times: 1 }] },
    { id: 'slowdoc-k2', size: 20 * 1024 * 1024, mime: 'application/pdf', faults: [{ on: 'download', bytesPerSec: 4 * 1024 * 1024, times: 1 }] },
  ]);
  const media = ['slowdoc-k1', 'slowdoc-k2', 'img-50kb-k3'];
  const ids = await insertMessages(db.schema, media);
  await freshKeys(ids, media);
  const w1 = startWorker(name, env(), process.env.MEDIA_INGEST_WORKER);
  cleanups.push(() => stopWorker(w1));  // when the test fails before the kill
  const jobs = [];
  for (let i = 0; i < ids.length; i++) {
    jobs.push(await queue.add('ingest', { messageId: ids[i], providerMediaId: media[i] }, { attempts: 3 }));
  }
  // Kill once at least one multipart upload is open.
  await waitFor(async () => (await openUploads()).length > 0, { what: 'an open upload', timeout: 20000, interval: 100 });
  w1.kill('SIGKILL');
  await w1.exited;
  await sleep(1200);
  const w2 = startWorker(name, env(), process.env.MEDIA_INGEST_WORKER);
  cleanups.push(() => stopWorker(w2));
  await waitFor(async () => (await queue.getJobCounts()).completed >= 8, { what: 'all completed', timeout: 60000, interval: 200 });
  for (let i = 0; i < ids.length; i++) {
    const j = await queue.getJob(jobs[i].id);
    assert.equal(await j.getState(), 'completed', j.failedReason);
    const meta = await control(fake, 'GET', `media/${media[i]}`);
    const body = await s3curl([objUrl(`media/${ids[i]}/${media[i]}`)], { binary: true });
    assert.equal(createHash('sha256').update(body).digest('hex'), meta.sha256, media[i]);
  }
  await waitFor(async () => (await openUploads()).length === 0, { what: 'no open uploads', timeout: 10000 });
  assert.equal(await stopWorker(w2), 0);
});

test('1,000 mixed jobs (images, voice notes, 16 MB videos, 100 MB documents): all byte-exact in RGW', async () => {
  const n = Number(process.env.MI_E2E_JOBS || 1000);
  const media = [];
  for (let i = 0; i < n; i++) {
    if (i % 100 === 0) media.push(`doc-100mb-m${i}`);
    else if (i % 25 === 1) media.push(`video-16mb-m${i}`);
    else if (i % 6 === 2) media.push(`voice-${20 + (i % 80)}kb-m${i}`);
    else media.push(`img-${30 + (i % 170)}kb-m${i}`);
  }
  const ids = await insertMessages(db.schema, media);
  const bulk = ids.map((id, i) => ({ name: 'ingest', data: { messageId: id, providerMediaId: media[i] }, opts: { attempts: 3 } }));
  const before = (await queue.getJobCounts()).completed;
  const jobs = [];
  for (let i = 0; i < bulk.length; i += 250) jobs.push(...await queue.addBulk(bulk.slice(i, i + 250)));
  const w = startWorker(name, { ...env(), MEDIA_BUFFER_BUDGET: '256M', MEDIA_INGEST_CONCURRENCY: '16' },
    process.env.MEDIA_INGEST_WORKER);
  cleanups.push(() => stopWorker(w));
  await waitFor(async () => {
    if (w.exitCode !== null) throw new Error(`worker exited: ${w.logs.slice(-1500)}`);
    const c = await queue.getJobCounts();
    return c.completed + c.failed >= before + n;
  }, { what: `${n} jobs finished`, timeout: 600000, interval: 500 });
  assert.equal(await stopWorker(w), 0);
  assert.equal((await queue.getJobCounts()).failed, 0, 'no job failed');
  const byId = new Map((await rows(db.schema)).map((r) => [r.id, r]));
  const shaOf = new Map();
  for (let i = 0; i < n; i++) {
    const key = `media/${ids[i]}/${media[i]}`;
    const job = await queue.getJob(jobs[i].id);
    assert.equal(await job.getState(), 'completed', job.failedReason);
    let meta = shaOf.get(media[i]);
    if (!meta) {
      meta = await control(fake, 'GET', `media/${media[i]}`);
      shaOf.set(media[i], meta);
    }
    const body = await s3curl([objUrl(key)], { binary: true });
    assert.equal(createHash('sha256').update(body).digest('hex'), meta.sha256, media[i]);
    assert.equal(job.returnvalue.mimeType, meta.mime);
    assert.equal(byId.get(ids[i]).mediaStoredUrl, `s3://${S3.bucket}/${key}`);
    if (media[i].startsWith('doc-') || media[i].startsWith('video-')) {
      const head = await s3curl(['-I', objUrl(key)]);
      assert.match(head, new RegExp(`content-type: ${meta.mime}`, 'i'));
    }
    // Free the gateway's memory (memstore) as we go.
    await s3curl(['-X', 'DELETE', objUrl(key)]);
  }
  assert.deepEqual(await openUploads(), []);
});

test('a corrupted download of a small image is refused by RGW itself, retried, then stored byte-exact', async () => {
  // Small announced bodies are signed with Graph's sha256 and not hashed again by the worker
  // once RGW has shown (by the worker's startup probe) that it refuses a mismatch.
  await control(fake, 'POST', 'media', [
    { id: 'corrupt-s7', size: 90000, mime: 'image/jpeg', faults: [{ on: 'download', corrupt: true, times: 1 }] },
  ]);
  const media = ['img-20kb-s6', 'corrupt-s7'];
  const ids = await insertMessages(db.schema, media);
  await freshKeys(ids, media);
  const w = startWorker(name, env(), process.env.MEDIA_INGEST_WORKER);
  cleanups.push(() => stopWorker(w));
  const run = async (i) => {
    const added = await queue.add('ingest', { messageId: ids[i], providerMediaId: media[i] }, { attempts: 3 });
    await waitFor(async () => ['completed', 'failed'].includes(await queue.getJobState(added.id)),
      { what: `${media[i]} finished`, timeout: 30000, interval: 100 });
    const job = await queue.getJob(added.id);
    assert.equal(await job.getState(), 'completed', job.failedReason);
    return job;
  };
  await run(0);
  // The worker claims nothing before the store has answered its probe (2 s at most): the
  // verdict comes before the first job's first line.
  const verdictAt = w.logs.search(/the store refuses a body that differs from its signed sha256/);
  const firstJobAt = w.logs.search(/job=/);
  assert.ok(verdictAt >= 0 && firstJobAt > verdictAt, `verdict at ${verdictAt}, first job line at ${firstJobAt}`);
  const j = await run(1);
  assert.equal(j.attemptsMade, 1, 'retried inside the job');
  assert.match(w.logs, /the store found that the body's sha256 differs .*XAmzContentSHA256Mismatch/);
  const per = (await control(fake, 'GET', 'stats')).perId;
  assert.equal(per['corrupt-s7'].downloads, 2);
  const meta = await control(fake, 'GET', 'media/corrupt-s7');
  const body = await s3curl([objUrl(`media/${ids[1]}/corrupt-s7`)], { binary: true });
  assert.equal(createHash('sha256').update(body).digest('hex'), meta.sha256);
  assert.equal(await stopWorker(w), 0);
});

for (const hash of ['auto', 'unsigned']) test(`MEDIA_S3_PAYLOAD_HASH=${hash}: a 16 MB video and a 100 MB document go as one streamed PutObject each, signed with Graph's sha256; a corrupted one is refused by RGW itself, then stored byte-exact`, async () => {
  // RGW checks a signed body's sha256, so an announced body above MEDIA_PART_SIZE is one
  // PutObject read while it downloads, signed with Graph's sha256 and not hashed here (even
  // where parts could go unsigned); its last byte waits until the worker has checked the size.
  await control(fake, 'POST', 'media', [
    { id: `corrupt-s10${hash}`, size: 12 * 1024 * 1024 + 3, mime: 'video/mp4',
      faults: [{ on: 'download', corrupt: true, times: 1 }] },
  ]);
  const media = [`video-16mb-s8${hash}`, `doc-100mb-s9${hash}`, `corrupt-s10${hash}`];
  const ids = await insertMessages(db.schema, media);
  await freshKeys(ids, media);
  const w = startWorker(name, { ...env(), MEDIA_S3_PAYLOAD_HASH: hash }, process.env.MEDIA_INGEST_WORKER);
  cleanups.push(() => stopWorker(w));
  const added = await Promise.all(media.map((m, i) =>
    queue.add('ingest', { messageId: ids[i], providerMediaId: m }, { attempts: 3 })));
  await waitFor(async () => {
    const st = await Promise.all(added.map((j) => queue.getJobState(j.id)));
    return st.every((x) => x === 'completed' || x === 'failed');
  }, { what: 'the three jobs finished', timeout: 120000, interval: 200 });
  const jobs = await Promise.all(added.map((j) => queue.getJob(j.id)));
  for (let i = 0; i < media.length; i++) {
    const j = jobs[i];
    assert.equal(await j.getState(), 'completed', j.failedReason);
    const meta = await control(fake, 'GET', `media/${media[i]}`);
    const key = `media/${ids[i]}/${media[i]}`;
    const body = await s3curl([objUrl(key)], { binary: true });
    assert.equal(createHash('sha256').update(body).digest('hex'), meta.sha256, media[i]);
    const head = await s3curl(['-I', objUrl(key)]);
    assert.match(head, new RegExp(`x-amz-meta-sha256: ${meta.sha256}`, 'i'));
    // a multipart object's ETag ends in -<parts>; a PutObject's is the body's MD5
    assert.match(head, new RegExp(`etag: "${createHash('md5').update(body).digest('hex')}"`, 'i'), media[i]);
    await s3curl(['-X', 'DELETE', objUrl(key)]);
  }
  assert.equal(jobs[2].attemptsMade, 1, 'retried inside the job');
  assert.match(w.logs, /the store found that the body's sha256 differs .*XAmzContentSHA256Mismatch/);
  assert.doesNotMatch(w.logs, /storage: sha256 of the body/);
  assert.equal((await control(fake, 'GET', 'stats')).perId[`corrupt-s10${hash}`].downloads, 2);
  assert.deepEqual(await openUploads(), []);
  assert.equal(await stopWorker(w), 0);
});
