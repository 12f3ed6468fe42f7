// Phase 3 end to end: media-backfill feeds running media-ingest-workers (local backend, Graph
// fake). Two overlapping backfills and reruns while the workers drain the queue: every
// eligible row is enqueued once, downloaded once and updated; expired rows are left alone.
// Exits 77 when Redis, PostgreSQL or bullmq are missing.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test, after } from 'node:test';
import {
  requireServices, bullmq, connection, queueName, envFor, startWorker, stopWorker, waitFor,
} from './lib/harness.mjs';
import { requireDatabase, privateSchema, psql, control } from './lib/media.mjs';
import { startGraphFake } from '../fakes/graph-fake.mjs';

await requireServices();
await requireDatabase();
const { Queue } = await bullmq();
const ELIGIBLE = 3000;
const EXPIRED = 200;
const cleanups = [];
after(async () => { for (const f of cleanups.reverse()) await f().catch(() => {}); });

function backfill(queue, args, env) {
  const child = spawn(process.env.MEDIA_BACKFILL, args,
    { env: envFor(queue, env), stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.on('data', (d) => { out += d; });
  child.stderr.on('data', (d) => { err += d; });
  return new Promise((resolve) => child.on('close', (code) => {
    const line = out.split('\n').find((l) => l.startsWith('backfill done ')) || '';
    const summary = Object.fromEntries(line.split(' ').slice(2).map((kv) => kv.split('='))
      .map(([k, v]) => [k, /^[0-9.]+$/.test(v) ? Number(v) : v]));
    resolve({ code, out, err, summary });
  }));
}

test('backfill with workers running: every eligible row stored once, expired rows untouched',
  async () => {
    const tmp = mkdtempSync(join(tmpdir(), 'mi-bf-e2e-'));
    cleanups.push(async () => rmSync(tmp, { recursive: true, force: true }));
    const tokenFile = join(tmp, 'token');
    writeFileSync(tokenFile, 'tok-bf\n');
    const fake = await startGraphFake({ token: 'tok-bf' });
    cleanups.push(() => fake.close());
    const db = await privateSchema('bfe2e');
    cleanups.push(() => db.drop());
    // Small automatic media of the fake ("img-4kb-..." is registered on first sight).
    await psql(`INSERT INTO "${db.schema}"."Message" ("providerMediaId", "createdAt")
      SELECT 'img-4kb-b' || g, (now() AT TIME ZONE 'UTC') - (g % 3) * interval '1 day'
      FROM generate_series(1, ${ELIGIBLE}) g;
      INSERT INTO "${db.schema}"."Message" ("providerMediaId", "createdAt")
      SELECT 'img-4kb-old' || g, (now() AT TIME ZONE 'UTC') - interval '20 days'
      FROM generate_series(1, ${EXPIRED}) g;
      INSERT INTO "${db.schema}"."Message" ("providerMediaId", "mediaStoredUrl")
      SELECT 'img-4kb-done' || g, 'file:///elsewhere/' || g FROM generate_series(1, 50) g;
      INSERT INTO "${db.schema}"."Message" ("body") SELECT 'text ' || g
      FROM generate_series(1, 50) g;`);

    const name = queueName('bf-e2e');
    const queue = new Queue(name, { connection: connection() });
    cleanups.push(async () => { await queue.obliterate({ force: true }); await queue.close(); });
    const env = {
      DATABASE_URL: db.url,
      WHATSAPP_ACCESS_TOKEN_FILE: tokenFile,
      WHATSAPP_GRAPH_URL: `http://127.0.0.1:${fake.port}`,
      MEDIA_STORAGE_BACKEND: 'local',
      MEDIA_LOCAL_DIR: join(tmp, 'store'),
    };
    const workers = [startWorker(name, env, process.env.MEDIA_INGEST_WORKER),
      startWorker(name, env, process.env.MEDIA_INGEST_WORKER)];
    for (const w of workers) cleanups.push(() => stopWorker(w));

    // Two overlapping runs with backpressure, then a rerun while the workers are busy.
    const [a, b] = await Promise.all([
      backfill(name, ['--wait-lock', '--max-depth', '1000', '--batch', '250'], env),
      backfill(name, ['--wait-lock', '--max-depth', '1000', '--batch', '250'], env),
    ]);
    const c = await backfill(name, ['--max-depth', '0'], env);
    for (const r of [a, b, c]) assert.equal(r.code, 0, r.err);
    assert.equal(a.summary.enqueued + b.summary.enqueued + c.summary.enqueued, ELIGIBLE);
    for (const r of [a, b, c]) assert.equal(r.summary.expired, EXPIRED);

    const stored = () => psql(`SELECT count(*) FROM "${db.schema}"."Message"
      WHERE "mediaStorageBackend" = 'local' AND "mediaStoredUrl" LIKE 'file://%'`);
    await waitFor(async () => Number(await stored()) === ELIGIBLE,
      { what: `${ELIGIBLE} rows stored`, timeout: 120000, interval: 250 });
    const counts = await queue.getJobCounts();
    assert.equal(counts.completed, ELIGIBLE);
    assert.equal(counts.failed, 0);
    const stats = await control(fake, 'GET', 'stats');
    const perId = Object.entries(stats.perId).filter(([id]) => id.startsWith('img-4kb-b'));
    assert.equal(perId.length, ELIGIBLE);
    assert.ok(perId.every(([, s]) => s.downloadsOk === 1), 'each media downloaded once');
    assert.equal(Number(await psql(`SELECT count(*) FROM "${db.schema}"."Message"
      WHERE "providerMediaId" LIKE 'img-4kb-old%' AND "mediaStoredUrl" IS NULL`)), EXPIRED);

    // Done: a final run finds only the expired rows.
    const d = await backfill(name, ['--max-depth', '0'], env);
    assert.equal(d.code, 0, d.err);
    assert.equal(d.summary.scanned, EXPIRED);
    assert.equal(d.summary.enqueued, 0);
    for (const w of workers) assert.equal(await stopWorker(w), 0, w.logs.slice(-2000));
  });
