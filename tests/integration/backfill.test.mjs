// media-backfill against real Redis, real PostgreSQL and bullmq@6.7.0: 100,000 seeded rows in a
// private schema, overlapping runs and a rerun (every eligible row enqueued exactly once),
// the expiry cut-off, flat memory, backpressure with a slow consumer, resume after SIGINT.
// Exits 77 when Redis, PostgreSQL (DATABASE_URL), psql or bullmq are missing.
import assert from 'node:assert/strict';
import { spawn, execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { test, after, before } from 'node:test';
import { promisify } from 'node:util';
import {
  requireServices, bullmq, connection, queueName, envFor, sleep, waitFor,
} from './lib/harness.mjs';

const execFileP = promisify(execFile);
const ROWS = 100000;
const RSS_LIMIT_KIB = 30 * 1024;
// Sanitizer builds (build-*-asan) use several times the memory: the bound does not apply.
const SANITIZED = (() => {
  try { return readFileSync(process.env.MEDIA_BACKFILL).includes('__asan_init'); } catch {
    return false;
  }
})();

await requireServices();
const { Queue, Worker } = await bullmq();

// ---- PostgreSQL: a private schema, so other tests' "Message" rows are not touched ----
const BASE_DB = process.env.DATABASE_URL || '';
if (!BASE_DB) {
  console.log('# skip: DATABASE_URL is not set (eval "$(scripts/services.sh env)")');
  process.exit(77);
}
const schema = `bf_${randomBytes(4).toString('hex')}`;
function psqlUrl() {
  const u = new URL(BASE_DB);
  u.search = ''; // libpq refuses Prisma's ?schema=
  return u.toString();
}
function dbUrl() {
  const u = new URL(BASE_DB);
  u.searchParams.set('schema', schema);
  return u.toString();
}
async function psql(sql) {
  const { stdout } = await execFileP('psql', [psqlUrl(), '-qAtX', '-v', 'ON_ERROR_STOP=1',
    '-c', sql], { maxBuffer: 64 * 1024 * 1024 });
  return stdout.trim();
}
try {
  await psql('SELECT 1');
} catch (e) {
  console.log(`# skip: PostgreSQL is not reachable with psql: ${String(e.message).split('\n')[0]}`);
  process.exit(77);
}

// The job id scheme documented in media-backfill --help (worker/bfutil.h).
function jobId(mid, pmid) {
  const id = `media-${mid}-${pmid}`;
  if (id.length <= 200 && /^[A-Za-z0-9._-]+$/.test(mid) && /^[A-Za-z0-9._]+$/.test(pmid)) {
    return id;
  }
  const h = createHash('sha256').update(`${Buffer.byteLength(mid)}:`).update(mid).update(pmid);
  return `media_${h.digest('hex')}`;
}

let expected;  // Map jobId -> {messageId, providerMediaId} of the eligible rows
let expiredCount;
let scannedCount;
const cleanups = [];

before(async () => {
  // The Prisma table (scripts/schema.sql) with its own sequence. Of the 100,000 rows:
  // 5% have no media id, 1% an empty one, 4% are stored already, 10% are 30 days old
  // (expired: media ids from webhooks live 7 days), 0.1% have ':' in the media id (hashed
  // job ids); the rest are eligible.
  await psql(`CREATE SCHEMA "${schema}";
    CREATE TABLE "${schema}"."Message" (
      "id" SERIAL NOT NULL, "conversationId" INTEGER, "body" TEXT, "providerMediaId" TEXT,
      "mediaStoredUrl" TEXT, "mediaStoredAt" TIMESTAMP(3), "mediaStorageBackend" TEXT,
      "createdAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
      CONSTRAINT "Message_pkey" PRIMARY KEY ("id"));
    INSERT INTO "${schema}"."Message" ("providerMediaId", "mediaStoredUrl", "createdAt", "body")
    SELECT CASE WHEN g % 20 = 0 THEN NULL
                WHEN g % 100 = 1 THEN ''
                WHEN g % 1000 = 7 THEN 'wamid:' || g
                ELSE (2087129492000000 + g)::text END,
           CASE WHEN g % 25 = 2 THEN 's3://b/media/' || g ELSE NULL END,
           (now() AT TIME ZONE 'UTC') - CASE WHEN g % 10 = 3 THEN interval '30 days'
                                             ELSE (g % 5) * interval '1 day' END,
           'body ' || g
    FROM generate_series(1, ${ROWS}) g;`);
  cleanups.push(() => psql(`DROP SCHEMA "${schema}" CASCADE`));
  const rows = JSON.parse(await psql(`SELECT coalesce(json_agg(json_build_array("id",
      "providerMediaId") ORDER BY "id"), '[]') FROM "${schema}"."Message"
    WHERE "providerMediaId" <> '' AND "mediaStoredUrl" IS NULL
      AND "createdAt" >= (now() AT TIME ZONE 'UTC') - interval '7 days'`));
  expected = new Map(rows.map(([id, pm]) => [jobId(String(id), pm),
    { messageId: id, providerMediaId: pm }]));
  expiredCount = Number(await psql(`SELECT count(*) FROM "${schema}"."Message"
    WHERE "providerMediaId" <> '' AND "mediaStoredUrl" IS NULL
      AND "createdAt" < (now() AT TIME ZONE 'UTC') - interval '7 days'`));
  scannedCount = expected.size + expiredCount;
  assert.ok(expected.size > 70000 && expected.size < 90000, `eligible ${expected.size}`);
  assert.ok(expiredCount > 5000, `expired ${expiredCount}`);
  assert.ok([...expected.keys()].some((k) => k.startsWith('media_')), 'some hashed ids');
});
after(async () => { for (const f of cleanups.reverse()) await f(); });

function newQueue(tag) {
  const name = queueName(tag);
  const queue = new Queue(name, { connection: connection() });
  cleanups.push(async () => { await queue.obliterate({ force: true }); await queue.close(); });
  return { name, queue };
}

function parseSummary(out) {
  const line = out.split('\n').reverse().find((l) => l.startsWith('backfill done '));
  if (!line) return null;
  const f = {};
  for (const kv of line.slice('backfill done '.length).split(' ')) {
    const [k, v] = kv.split('=');
    f[k] = /^[0-9.]+$/.test(v) ? Number(v) : v;
  }
  return f;
}

// Start media-backfill on @queue; .done resolves to {code, signal, out, err, summary, rssKiB}.
function backfill(queue, args = [], { env = {}, measure = false } = {}) {
  const bin = process.env.MEDIA_BACKFILL;
  const useTime = measure && existsSync('/usr/bin/time');
  const child = spawn(useTime ? '/usr/bin/time' : bin, useTime ? ['-v', bin, ...args] : args,
    { env: envFor(queue, { DATABASE_URL: dbUrl(), ...env }), stdio: ['ignore', 'pipe', 'pipe'] });
  child.out = '';
  child.err = '';
  child.stdout.on('data', (d) => { child.out += d; });
  child.stderr.on('data', (d) => {
    child.err += d;
    if (process.env.MI_TEST_VERBOSE) process.stderr.write(d);
  });
  child.done = new Promise((resolve) => child.on('close', (code, signal) => {
    let rssKiB = null;
    const m = /Maximum resident set size \(kbytes\): (\d+)/.exec(child.err);
    if (m) rssKiB = Number(m[1]);
    resolve({ code, signal, out: child.out, err: child.err, summary: parseSummary(child.out),
      rssKiB });
  }));
  return child;
}

async function redisGet(queue, key) {
  const { default: IORedis } = await import('ioredis');
  const r = new IORedis(connection());
  try { return await r.get(`bull:${queue}:${key}`); } finally { r.disconnect(); }
}

async function allJobIds(queue) {
  // No worker runs: every job is prioritized (priority 10).
  const ids = [];
  const counts = await queue.getJobCounts();
  const total = counts.prioritized + counts.waiting + counts.delayed + counts.active;
  for (let start = 0; start < total; start += 10000) {
    const jobs = await queue.getJobs(['prioritized', 'waiting', 'delayed', 'active'], start,
      start + 9999, true);
    for (const j of jobs) ids.push(j.id);
  }
  return { ids, counts };
}

test('usage, configuration errors and --version', async () => {
  const bin = process.env.MEDIA_BACKFILL;
  const help = await execFileP(bin, ['--help']);
  assert.match(help.stdout, /Exit codes:/);
  assert.match(help.stdout, /--wait-lock/);
  assert.match(help.stdout, /MEDIA_BACKFILL_MAX_DEPTH/);
  assert.match((await execFileP(bin, ['--version'])).stdout, /^media-backfill \d/);
  for (const [env, args, re] of [
    [{ MEDIA_BACKFILL_MAX_DEPTH: 'lots' }, [], /MEDIA_BACKFILL_MAX_DEPTH/],
    [{}, ['--batch', '0'], /--batch/],
    [{ DATABASE_URL: '' }, [], /DATABASE_URL is required/],
    [{ DATABASE_URL: 'mysql://x' }, [], /DATABASE_URL/],
    [{}, ['--since', 'yesterday'], /--since/],
    [{}, ['--since', '2024-05-02', '--until', '2024-05-01'], /before --until/],
    [{}, ['--bogus'], /unknown argument/],
  ]) {
    const r = await backfill('unused-queue', args, { env }).done;
    assert.equal(r.code, 2, `${JSON.stringify(args)} ${JSON.stringify(env)}: ${r.err}`);
    assert.match(r.err, re);
    assert.ok(!r.err.includes('media-secret-pw'), 'no password in messages');
  }
});

test('dry run counts and changes nothing', async () => {
  const { name, queue } = newQueue('bf-dry');
  const r = await backfill(name, ['--dry-run']).done;
  assert.equal(r.code, 0, r.err);
  assert.equal(r.summary.status, 'complete');
  assert.equal(r.summary.dry_run, 1);
  assert.equal(r.summary.scanned, scannedCount);
  assert.equal(r.summary.enqueued, expected.size);
  assert.equal(r.summary.expired, expiredCount);
  const c = await queue.getJobCounts();
  assert.equal(c.prioritized + c.waiting, 0);
  assert.equal(await redisGet(name, 'backfill-cursor'), null);
});

test('overlapping runs and a rerun enqueue every eligible row exactly once; memory stays flat',
  async () => {
    const { name, queue } = newQueue('bf-once');
    const t0 = Date.now();
    // Two runs that wait for each other, and one that must give up (exit 3).
    // No consumer runs, so backpressure is off (--max-depth 0) outside the depth test.
    const a = backfill(name, ['--wait-lock', '--max-depth', '0'], { measure: true });
    const b = backfill(name, ['--wait-lock'], { env: { MEDIA_BACKFILL_MAX_DEPTH: '0' } });
    await waitFor(async () => (await redisGet(name, 'backfill-lock')) !== null,
      { what: 'the lock to be taken' });
    const c = await backfill(name, ['--max-depth', '0']).done;
    assert.equal(c.code, 3, c.err);
    assert.match(c.err, /holds the lock .*backfill-lock/);
    assert.match(c.err, /--wait-lock/);
    const [ra, rb] = await Promise.all([a.done, b.done]);
    assert.equal(ra.code, 0, ra.err);
    assert.equal(rb.code, 0, rb.err);
    for (const r of [ra, rb]) {
      assert.equal(r.summary.status, 'complete');
      assert.equal(r.summary.scanned, scannedCount);
      assert.equal(r.summary.expired, expiredCount);
      assert.equal(r.summary.enqueued + r.summary.already_queued, expected.size);
    }
    assert.equal(ra.summary.enqueued + rb.summary.enqueued, expected.size);
    assert.ok(ra.summary.enqueued === 0 || rb.summary.enqueued === 0, 'the runs did not overlap');
    console.log(`# two runs: ${(Date.now() - t0) / 1000} s, ${ra.summary.rate} rows/s, ` +
      `peak RSS ${ra.rssKiB} KiB`);
    if (ra.rssKiB !== null && !SANITIZED) {
      assert.ok(ra.rssKiB < RSS_LIMIT_KIB, `peak RSS ${ra.rssKiB} KiB`);
    }

    // A rerun adds nothing.
    const re = await backfill(name, ['--max-depth', '0']).done;
    assert.equal(re.code, 0, re.err);
    assert.equal(re.summary.enqueued, 0);
    assert.equal(re.summary.already_queued, expected.size);
    assert.equal(await redisGet(name, 'backfill-cursor'), null, 'cursor deleted when complete');
    assert.equal(await redisGet(name, 'backfill-lock'), null, 'lock released');

    // Exactly the eligible rows, each once, with the documented ids, data and options.
    const { ids, counts } = await allJobIds(queue);
    assert.equal(counts.prioritized, expected.size);
    assert.equal(ids.length, expected.size);
    assert.equal(new Set(ids).size, ids.length);
    for (const id of ids) assert.ok(expected.has(id), `unexpected job ${id}`);
    for (const id of [ids[0], ids[ids.length - 1], ids.find((i) => i.startsWith('media_'))]) {
      const job = await queue.getJob(id);
      assert.equal(job.name, 'ingest');
      assert.deepEqual(job.data, expected.get(id));
      assert.equal(typeof job.data.messageId, 'number');
      assert.equal(job.opts.priority, 10);
      assert.equal(job.opts.attempts, 5);
      assert.deepEqual(job.opts.backoff, { type: 'exponential', delay: 30000 });
    }
  });

test('SIGINT stops after the page, keeps the cursor; the next run resumes', async () => {
  const { name, queue } = newQueue('bf-resume');
  // --max-depth 1000 with no consumer: two pages go in, then the run waits for room.
  const a = backfill(name, ['--max-depth', '1000']);
  await waitFor(() => a.err.includes('no room for a page'), { what: 'the run to wait' });
  a.kill('SIGINT');
  const ra = await a.done;
  assert.equal(ra.code, 4, ra.err);
  assert.equal(ra.summary.status, 'interrupted');
  assert.equal(ra.summary.scanned, 1000);
  const cursor = JSON.parse(await redisGet(name, 'backfill-cursor'));
  assert.equal(cursor.scanned, 1000);
  assert.match(cursor.after, /^\d+$/);
  assert.equal(await redisGet(name, 'backfill-lock'), null);

  const rb = await backfill(name, ['--max-depth', '0']).done;
  assert.equal(rb.code, 0, rb.err);
  assert.match(rb.err, /resuming an interrupted backfill.*after_id=/);
  assert.equal(rb.summary.scanned, scannedCount - 1000);
  assert.equal(rb.summary.already_queued, 0, 'resumed after the rows already done');
  assert.equal(ra.summary.enqueued + rb.summary.enqueued, expected.size);
  const c = await queue.getJobCounts();
  assert.equal(c.prioritized, expected.size);
  assert.equal(await redisGet(name, 'backfill-cursor'), null);
});

test('--max-depth 1000 with a slow consumer: pending depth stays within one page of it',
  async () => {
    const { name, queue } = newQueue('bf-depth');
    let processed = 0;
    const worker = new Worker(name, async () => { await sleep(10); processed++; },
      { connection: connection(), concurrency: 10 });
    cleanups.push(() => worker.close());
    const limit = 8000;
    const run = backfill(name, ['--max-depth', '1000', '--limit', String(limit)]);
    let maxDepth = 0;
    let samples = 0;
    let finished = false;
    run.done.then(() => { finished = true; });
    while (!finished) {
      const c = await queue.getJobCounts();
      maxDepth = Math.max(maxDepth, c.waiting + c.prioritized + c.delayed + c.active);
      samples++;
      await sleep(20);
    }
    const r = await run.done;
    assert.equal(r.code, 0, r.err);
    assert.equal(r.summary.status, 'limit');
    assert.equal(r.summary.scanned, limit);
    assert.match(r.err, /no room for a page/, 'the run had to wait');
    console.log(`# depth: max ${maxDepth} over ${samples} samples, ${processed} processed, ` +
      `${r.summary.seconds} s`);
    assert.ok(maxDepth <= 1000 + 500, `pending depth reached ${maxDepth}`);
    // Stopped at --limit: the cursor stays, so the next run continues after those rows.
    const cursor = JSON.parse(await redisGet(name, 'backfill-cursor'));
    assert.equal(cursor.scanned, limit);
    await worker.close();
  });
