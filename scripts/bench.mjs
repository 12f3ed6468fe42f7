// bench.mjs - the node side of scripts/bench (a benchmark, not a test). Run it through
// scripts/bench, which parses the options, builds, starts the services and passes BENCH_*.
//
// 1. a private Postgres schema with N "Message" rows, a fresh BullMQ queue with N jobs
//    (addBulk, before the worker starts: enqueueing is not measured), the Graph fake
// 2. the Graph fake asked for every media's sha256 (untimed: the real Graph API stores it,
//    the fake computes it on first sight), then
//    media-ingest-worker (the real one) started, sampled from /proc every 50 ms (utime+stime,
//    VmHWM), stopped with SIGTERM once every job is completed or failed
// 3. plain curl (before the worker with --curl-first; one run's objects are freed before the
//    other's): the same media URLs (looked up beforehand, untimed) downloaded with the
//    bearer token into the same storage, C transfers at a time: local → one
//    `curl --parallel` into files (then fsync of each file, timed apart); s3 → per object
//    `curl URL | curl -T - --aws-sigv4 …` under `xargs -P C`
// 4. the figures; then the queue is obliterated, the schema dropped and what was stored
//    removed (unless BENCH_KEEP=1)
import { spawn, execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';

const execFileP = promisify(execFile);
const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const E = process.env;
const cfg = {
  jobs: Number(E.BENCH_JOBS || 200),
  mix: E.BENCH_MIX || 'small',
  size: E.BENCH_SIZE || '',
  concurrency: Number(E.BENCH_CONCURRENCY || 16),
  budget: E.BENCH_BUDGET || '',
  storage: E.BENCH_STORAGE || 'local',
  keep: E.BENCH_KEEP === '1',
  curl: E.BENCH_CURL !== '0',
  curlFirst: E.BENCH_CURL_FIRST === '1',
  timeoutS: Number(E.BENCH_TIMEOUT || 300),
  dir: E.BENCH_DIR,
  worker: E.BENCH_WORKER,
  redisUrl: E.REDIS_URL,
  databaseUrl: E.DATABASE_URL,
  logLevel: E.LOG_LEVEL || 'info',
};
const TOKEN = `bench-${randomBytes(6).toString('hex')}`;
const RUN = randomBytes(3).toString('hex');
const KIB = 1024;
const MIB = 1024 * 1024;
const CLK_TCK = Number((await execFileP('getconf', ['CLK_TCK'])).stdout.trim()) || 100;

const say = (s) => process.stderr.write(`bench: ${s}\n`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// --- the job mix -------------------------------------------------------------------------
const MIXES = {
  small: ['img-200kb', 'voice-40kb'],
  large: ['doc-100mb'],
  // per 20 jobs: 10 images, 7 voice notes, 2 16 MB videos, 1 100 MB document
  mixed: [...Array(10).fill('img-200kb'), ...Array(7).fill('voice-40kb'),
    'video-16mb', 'video-16mb', 'doc-100mb'],
};
const SPEC_RE = /^(img|image|sticker|audio|voice|video|doc)-(\d+)(b|k|kb|m|mb)$/i;
function sizeOf(spec) {
  const m = SPEC_RE.exec(spec);
  const u = m[3].toLowerCase();
  return Number(m[2]) * (u.startsWith('m') ? MIB : u.startsWith('k') ? KIB : 1);
}
const pattern = cfg.size ? [cfg.size] : MIXES[cfg.mix];
if (!pattern || !pattern.every((s) => SPEC_RE.test(s))) {
  say(`unknown mix or size '${cfg.size || cfg.mix}'`);
  process.exit(2);
}
// interleave so that every stretch of the queue has the mix
const media = Array.from({ length: cfg.jobs }, (_, i) => `${pattern[i % pattern.length]}-b${RUN}-${i}`);
const expectedBytes = media.reduce((a, m) => a + sizeOf(m.replace(/-b[0-9a-f]+-\d+$/, '')), 0);

// --- S3 via curl's SigV4 -------------------------------------------------------------------
const S3 = {
  endpoint: E.MI_S3_ENDPOINT, key: E.MI_S3_ACCESS_KEY_ID, secret: E.MI_S3_SECRET_ACCESS_KEY,
  bucket: E.MI_S3_BUCKET, region: E.MI_S3_REGION || 'us-east-1',
};
const sigv4 = () => ['--aws-sigv4', `aws:amz:${S3.region}:s3`, '--user', `${S3.key}:${S3.secret}`,
  '-H', 'x-amz-content-sha256: UNSIGNED-PAYLOAD'];

// --- /proc sampling ----------------------------------------------------------------------
function procSample(pid) {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
    const kb = (k) => Number((new RegExp(`^${k}:\\s+(\\d+)`, 'm').exec(status) || [])[1] || 0);
    if (!kb('VmHWM')) return null;   // a zombie (exited, not yet reaped): no figures left
    // fields after the command: state=0 … utime=11 stime=12
    return { cpu: (Number(f[11]) + Number(f[12])) / CLK_TCK, user: Number(f[11]) / CLK_TCK,
      sys: Number(f[12]) / CLK_TCK, hwmKb: kb('VmHWM'), rssKb: kb('VmRSS') };
  } catch {
    return null;
  }
}

// --- helpers -----------------------------------------------------------------------------
// SQL on psql's standard input (an argument is limited to 128 KiB)
async function psql(sql) {
  const child = spawn('psql', [cfg.databaseUrl.split('?')[0], '-qAtX', '-v', 'ON_ERROR_STOP=1'],
    { stdio: ['pipe', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.on('data', (d) => { out += d; });
  child.stderr.on('data', (d) => { err += d; });
  child.stdin.end(sql);
  const [code] = await once(child, 'close');
  if (code !== 0) throw new Error(`psql: ${err.trim()}`);
  return out.trim();
}

// Run a shell command; its CPU is what bash's `times` says of its children (every process it
// waited for, curl included). With /usr/bin/time, also the largest child's peak RSS. After a
// minute, watch(kill) runs every 20 s: it may kill the command's processes and throw.
async function timedShell(script, env = {}, watch = null) {
  const tmp = path.join(cfg.dir, `times-${randomBytes(3).toString('hex')}`);
  const haveTime = fs.existsSync('/usr/bin/time');
  const wrapped = haveTime
    ? `/usr/bin/time -f '%M' -o '${tmp}.rss' bash -c "$BENCH_SCRIPT"; rc=$?; times >'${tmp}'; exit $rc`
    : `bash -c "$BENCH_SCRIPT"; rc=$?; times >'${tmp}'; exit $rc`;
  const t0 = process.hrtime.bigint();
  const child = spawn('bash', ['-c', wrapped], {
    env: { ...process.env, ...env, BENCH_SCRIPT: script }, stdio: ['ignore', 'inherit', 'pipe'],
    detached: true,   // its own process group: the watchdog and SIGINT stop every process
  });
  const killAll = () => { try { process.kill(-child.pid, 'SIGKILL'); } catch { /* gone */ } };
  cleanups.push(killAll);
  let watchErr = null;
  let watcher = null;
  const startWatch = setTimeout(() => {
    watcher = setInterval(() => {
      if (watch && !watchErr) watch(killAll).catch((e) => { watchErr = e; });
    }, 20000);
  }, 60000);
  let errText = '';
  child.stderr.on('data', (d) => { if (errText.length < 4000) errText += d; });
  const [code] = await once(child, 'exit');
  clearTimeout(startWatch);
  clearInterval(watcher);
  cleanups.splice(cleanups.indexOf(killAll), 1);
  if (watchErr) throw watchErr;
  const wall = Number(process.hrtime.bigint() - t0) / 1e9;
  const lines = fs.readFileSync(tmp, 'utf8').trim().split('\n');
  const secs = (s) => { const m = /(\d+)m([\d.]+)s/.exec(s); return m ? Number(m[1]) * 60 + Number(m[2]) : 0; };
  const [u, s] = lines[1].split(/\s+/);
  let rssKb = null;
  if (haveTime) {
    rssKb = Number(fs.readFileSync(`${tmp}.rss`, 'utf8').trim().split('\n').pop()) || null;
    fs.rmSync(`${tmp}.rss`, { force: true });
  }
  fs.rmSync(tmp, { force: true });
  return { code, wall, cpu: secs(u) + secs(s), user: secs(u), sys: secs(s), rssKb, err: errText };
}

// Wait until the machine is quiet (under 15% busy for two 500 ms windows in a row, at most
// 60 s), so that one timed run does not share the CPU with work left by another, most often
// RGW's garbage collector freeing the objects of the previous run.
function cpuTimes() {
  const v = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1, 9).map(Number);
  return { total: v.reduce((a, b) => a + b, 0), idle: v[3] + v[4] };
}
async function settle(what) {
  const t0 = Date.now();
  let quiet = 0;
  while (quiet < 2 && Date.now() - t0 < 60000) {
    const a = cpuTimes();
    await sleep(500);
    const b = cpuTimes();
    const busy = 1 - (b.idle - a.idle) / Math.max(1, b.total - a.total);
    quiet = busy < 0.15 ? quiet + 1 : 0;
  }
  const waited = (Date.now() - t0) / 1000;
  if (waited > 1.5) say(`waited ${waited.toFixed(1)} s for the machine to go quiet before ${what}`);
}

async function pool(items, n, fn) {
  let next = 0;
  const run = async () => { while (next < items.length) { const i = next++; await fn(items[i], i); } };
  await Promise.all(Array.from({ length: Math.min(n, items.length) }, run));
}

// --- the run -----------------------------------------------------------------------------
const cleanups = [];
async function cleanup() {
  for (const f of cleanups.reverse()) {
    try { await f(); } catch (e) { say(`cleanup: ${e.message}`); }
  }
}
let stopping = false;
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => {
    if (stopping) return;
    stopping = true;
    say(`${sig}: cleaning up`);
    cleanup().finally(() => process.exit(130));
  });
}

async function main() {
  const { Queue } = await import('bullmq');
  await rgwCheckFull('before the run');
  const storeRoot = path.join(cfg.dir, 'store');
  const curlRoot = path.join(cfg.dir, 'curl');
  fs.mkdirSync(storeRoot, { recursive: true });

  // the Graph fake, as its own process (its CPU is measured apart)
  const fake = spawn(process.execPath, [path.join(REPO, 'tests/fakes/graph-fake.mjs'), '--port', '0',
    '--token', TOKEN, '--url-lifetime', '3600'], { stdio: ['pipe', 'pipe', 'inherit'] });
  cleanups.push(async () => {
    if (fake.exitCode === null && fake.signalCode === null) { fake.kill('SIGTERM'); await once(fake, 'exit'); }
  });
  const port = await new Promise((resolve, reject) => {
    let buf = '';
    fake.stdout.on('data', (d) => {
      buf += d;
      const m = /"port":(\d+),"ready":true/.exec(buf);
      if (m) resolve(Number(m[1]));
    });
    fake.on('exit', () => reject(new Error('the Graph fake exited at start')));
  });
  const graph = `http://127.0.0.1:${port}`;

  // private schema with the app's table, N rows
  const schema = `mi_bench_${RUN}`;
  await psql(`CREATE SCHEMA "${schema}";
    CREATE TABLE "${schema}"."Message" ("id" SERIAL PRIMARY KEY, "conversationId" INTEGER,
      "body" TEXT, "providerMediaId" TEXT, "mediaStoredUrl" TEXT, "mediaStoredAt" TIMESTAMP(3),
      "mediaStorageBackend" TEXT, "createdAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP)`);
  cleanups.push(() => psql(`DROP SCHEMA "${schema}" CASCADE`));
  const ids = [];
  for (let i = 0; i < media.length; i += 5000) {
    const values = media.slice(i, i + 5000).map((m) => `('${m}')`).join(',');
    const out = await psql(`INSERT INTO "${schema}"."Message" ("providerMediaId") VALUES ${values} RETURNING "id"`);
    ids.push(...out.split('\n').map(Number));
  }

  // fresh queue, every job enqueued before the worker starts
  const u = new URL(cfg.redisUrl);
  const connection = { host: u.hostname, port: Number(u.port || 6379),
    db: Number(u.pathname.slice(1) || 0), password: u.password || undefined, maxRetriesPerRequest: null };
  const qname = `bench-${RUN}`;
  const queue = new Queue(qname, { connection });
  cleanups.push(async () => { await queue.obliterate({ force: true }); await queue.close(); });
  for (let i = 0; i < media.length; i += 1000) {
    await queue.addBulk(media.slice(i, i + 1000).map((m, k) => ({
      name: 'ingest', data: { messageId: ids[i + k], providerMediaId: m }, opts: { attempts: 1 },
    })));
  }

  const storageEnv = cfg.storage === 's3' ? {
    MEDIA_STORAGE_BACKEND: 's3', AWS_S3_BUCKET: S3.bucket, AWS_ACCESS_KEY_ID: S3.key,
    AWS_SECRET_ACCESS_KEY: S3.secret, AWS_REGION: S3.region, AWS_ENDPOINT_URL_S3: S3.endpoint,
  } : { MEDIA_STORAGE_BACKEND: 'local', MEDIA_LOCAL_DIR: storeRoot };
  let workerObjects = cfg.storage === 's3' && !cfg.keep ? ids.map((id, i) => `media/${id}/${media[i]}`) : [];
  cleanups.push(() => s3Free(workerObjects, expectedBytes));
  if (cfg.storage === 's3') cleanups.push(s3AbortUploads);
  say(`${cfg.jobs} jobs enqueued on ${qname} (${(expectedBytes / 1e6).toFixed(1)} MB)`);

  let timedOut = false;
  const logPath = path.join(cfg.dir, 'worker.log');
  // --- worker run ---
  const runWorker = async () => {
    const logFd = fs.openSync(logPath, 'w');
    const env = {
      ...process.env, MEDIA_INGEST_QUEUE_URL: cfg.redisUrl, MEDIA_INGEST_QUEUE: qname,
      DATABASE_URL: `${cfg.databaseUrl.split('?')[0]}?schema=${schema}`,
      WHATSAPP_ACCESS_TOKEN: TOKEN, WHATSAPP_GRAPH_URL: graph,
      MEDIA_INGEST_CONCURRENCY: String(cfg.concurrency), METRICS_ADDR: '', LOG_LEVEL: cfg.logLevel,
      ...storageEnv,
    };
    if (cfg.budget) env.MEDIA_BUFFER_BUDGET = cfg.budget;
    // The real Graph API has each media's sha256 at hand; the fake computes it the first time
    // a media is looked up (100 MB of generated bytes for a large seed: 0.17 s, while every
    // job of the run waits for it). Have it computed now, untimed, as the curl run's lookups
    // are: neither timed run pays for the fake's hashing.
    await pool(media, 16, async (m) => {
      const r = await fetch(`${graph}/__control/media/${encodeURIComponent(m)}`);
      if (!r.ok) throw new Error(`warming the Graph fake up for ${m}: HTTP ${r.status}`);
      await r.arrayBuffer();
    });
    await settle('the worker run');
    say('starting the worker');
    const fake0 = procSample(fake.pid);
    const t0 = process.hrtime.bigint();
    const w = spawn(cfg.worker, [], { env, stdio: ['ignore', logFd, logFd] });
    fs.closeSync(logFd);
    const wExit = once(w, 'exit');
    cleanups.push(async () => {
      if (w.exitCode === null && w.signalCode === null) { w.kill('SIGKILL'); await wExit; }
    });
    let last = procSample(w.pid) || { cpu: 0, user: 0, sys: 0, hwmKb: 0, rssKb: 0 };
    let maxRss = 0;
    const sampler = setInterval(() => {
      const s = procSample(w.pid);
      if (s) { last = { ...s, hwmKb: Math.max(s.hwmKb, last.hwmKb) }; maxRss = Math.max(maxRss, s.rssKb); }
    }, 50);
    const deadline = Date.now() + cfg.timeoutS * 1000;
    let counts;
    let ended = -1, progressAt = Date.now(), healthAt = 0;
    for (;;) {
      counts = await queue.getJobCounts('completed', 'failed', 'active', 'wait');
      if (counts.completed + counts.failed >= cfg.jobs) break;
      if (counts.completed + counts.failed !== ended) {
        ended = counts.completed + counts.failed;
        progressAt = Date.now();
      } else if (Date.now() - progressAt > 20000 && Date.now() - healthAt > 20000) {
        // no job ended for 20 s: the OSD may have filled up during the run
        healthAt = Date.now();
        await rgwCheckFull('no job ended for 20 s', () => w.kill('SIGKILL'));
      }
      if (w.exitCode !== null || w.signalCode !== null) {
        throw new Error(`the worker exited (${w.exitCode ?? w.signalCode}); see the tail of ${logPath}:\n` +
          fs.readFileSync(logPath, 'utf8').split('\n').slice(-15).join('\n'));
      }
      if (Date.now() > deadline) { timedOut = true; break; }
      await sleep(50);
    }
    const wall = Number(process.hrtime.bigint() - t0) / 1e9;
    const end = procSample(w.pid);
    if (end) { last = { ...end, hwmKb: Math.max(end.hwmKb, last.hwmKb) }; maxRss = Math.max(maxRss, end.rssKb); }
    const fake1 = procSample(fake.pid);
    // stop it: drain (nothing is in flight) and exit 0; VmHWM sampled until it is gone
    w.kill('SIGTERM');
    const killer = setTimeout(() => w.kill('SIGKILL'), 70000);
    const [exitCode, exitSignal] = await wExit;
    clearTimeout(killer);
    clearInterval(sampler);
    const worker = {
      wall, cpu: (end || last).cpu, user: (end || last).user, sys: (end || last).sys,
      hwmKb: last.hwmKb, maxRssKb: maxRss,
      exit: exitCode ?? exitSignal, fakeCpu: fake1 && fake0 ? fake1.cpu - fake0.cpu : null,
    };
    if (timedOut) say(`timed out after ${cfg.timeoutS}s: ${JSON.stringify(counts)}`);

    // warnings and errors the worker logged (a clean run has none)
    const logLines = fs.readFileSync(logPath, 'utf8').split('\n');
    const warned = logLines.filter((l) => /level=(warn|error)|"level":"(warn|error)"/.test(l));
    worker.warnings = warned.length;
    worker.warnSample = [...new Set(warned.map((l) => (/msg=("[^"]*"|\S+)/.exec(l) || [l])[0]))].slice(0, 4);

    // what the worker did, from the jobs themselves
    const done = await queue.getJobs(['completed'], 0, -1);
    const failed = await queue.getJobs(['failed'], 0, -1);
    worker.completed = done.length;
    worker.failed = failed.length;
    worker.bytes = done.reduce((a, j) => a + (j.returnvalue?.bytes || 0), 0);
    const first = done.reduce((a, j) => Math.min(a, j.processedOn || Infinity), Infinity);
    const lastEnd = done.reduce((a, j) => Math.max(a, j.finishedOn || 0), 0);
    worker.span = done.length ? (lastEnd - first) / 1000 : 0;
    worker.failures = failed.slice(0, 5).map((j) => `${j.data?.providerMediaId}: ${j.failedReason}`);
    return worker;
  };

  // --- plain curl ---
  let curlObjects = [];
  const runCurl = async () => {
      // the download URLs, looked up beforehand (not timed), exactly as the worker does
      const urls = new Array(media.length);
      await pool(media, 16, async (m, i) => {
        const r = await fetch(`${graph}/v25.0/${m}`, { headers: { authorization: `Bearer ${TOKEN}` } });
        const j = await r.json();
        if (!r.ok) throw new Error(`lookup ${m}: ${r.status} ${JSON.stringify(j)}`);
        urls[i] = { url: j.url, size: Number(j.file_size), mime: j.mime_type };
      });
      say(`curl: ${media.length} transfers, ${cfg.concurrency} at a time`);
      await settle('the curl run');
      const f0 = procSample(fake.pid);
      const list = path.join(cfg.dir, 'curl.list');
      let r;
      let fsync = null;
      if (cfg.storage === 's3') {
        const keys = media.map((m, i) => `bench-curl/${RUN}/${ids[i]}/${m}`);
        if (!cfg.keep) {
          curlObjects = keys;
          cleanups.push(() => s3Free(curlObjects, expectedBytes));
        }
        fs.writeFileSync(list, urls.map((x, i) =>
          `${x.url}\n${x.size}\n${x.mime.replace(/\s/g, '')}\n${S3.endpoint}/${S3.bucket}/${keys[i]}\n`).join(''));
        // one download piped into one PutObject. S3 wants a Content-Length, not chunks: given
        // with -T -, curl 7.88 still sends "Transfer-Encoding: chunked" unless told "identity"
        // (an empty "Transfer-Encoding:" would be left out but still signed: 403)
        const one = `set -o pipefail; curl -sS --fail -H "Authorization: Bearer $BENCH_TOKEN" "$1" | ` +
          'curl -sS --fail -o /dev/null -T - -H "Transfer-Encoding: identity" -H "Content-Length: $2" ' +
          '-H "Content-Type: $3" ' +
          `--aws-sigv4 "aws:amz:$BENCH_S3_REGION:s3" --user "$BENCH_S3_USER" ` +
          '-H "x-amz-content-sha256: UNSIGNED-PAYLOAD" "$4"';
        // a full OSD would hang the uploads for good (the worker run watches for it too)
        r = await timedShell(`xargs -d '\\n' -n 4 -P ${cfg.concurrency} bash -c '${one}' _ <'${list}'`, {
          BENCH_TOKEN: TOKEN, BENCH_S3_REGION: S3.region, BENCH_S3_USER: `${S3.key}:${S3.secret}`,
        }, (kill) => rgwCheckFull('during the curl run', kill));
      } else {
        fs.mkdirSync(curlRoot, { recursive: true });
        fs.writeFileSync(list, urls.map((x, i) =>
          `url = "${x.url}"\noutput = "${curlRoot}/${ids[i]}-${media[i]}"\n`).join(''));
        r = await timedShell(`curl -sS --fail --parallel --parallel-immediate --parallel-max ${cfg.concurrency} ` +
          `-H "Authorization: Bearer $BENCH_TOKEN" -K '${list}'`, { BENCH_TOKEN: TOKEN });
        // the worker fsyncs every file before it renames it into place; curl does not
        fsync = await timedShell(`find '${curlRoot}' -type f -print0 | xargs -0 -n 256 -P 4 sync`);
      }
      const f1 = procSample(fake.pid);
      if (r.code !== 0) say(`curl failed (exit ${r.code}): ${r.err.slice(0, 1000)}`);
      let bytes = 0;
      if (cfg.storage === 'local') {
        for (const f of fs.readdirSync(curlRoot)) bytes += fs.statSync(path.join(curlRoot, f)).size;
      } else if (r.code === 0) {
        bytes = urls.reduce((a, x) => a + x.size, 0);
      }
      return { ...r, bytes, fsync, fakeCpu: f1 && f0 ? f1.cpu - f0.cpu : null };
  };

  // RGW's memstore holds objects in RAM: one run's objects are freed before the other's
  let worker;
  let curl = null;
  if (cfg.curl && cfg.curlFirst) {
    curl = await runCurl();
    if (curlObjects.length) await s3Free(curlObjects, expectedBytes);
    curlObjects = [];
    worker = await runWorker();
  } else {
    worker = await runWorker();
    if (cfg.curl && !timedOut) {
      if (workerObjects.length) await s3Free(workerObjects, expectedBytes);
      workerObjects = [];
      curl = await runCurl();
    }
  }

  report(worker, curl);
  if (!cfg.keep) {
    fs.rmSync(storeRoot, { recursive: true, force: true });
    fs.rmSync(curlRoot, { recursive: true, force: true });
  } else {
    say(`kept: ${cfg.storage === 's3' ? `s3://${S3.bucket}/media/<id>/…-b${RUN}-… and bench-curl/${RUN}/`
      : `${storeRoot} and ${curlRoot}`}`);
  }
  const ok = !timedOut && worker.failed === 0 && worker.completed === cfg.jobs && worker.exit === 0 &&
    (!curl || curl.code === 0);
  if (!ok || worker.warnings || E.BENCH_KEEP_LOG === '1') {
    const kept = path.join(path.dirname(cfg.dir), `mi-bench-${RUN}-worker.log`);
    fs.copyFileSync(logPath, kept);
    say(`the worker's log: ${kept}`);
  }
  return ok ? 0 : 1;
}

// Set when RGW's OSD is found full: it takes no writes, deletes included.
let rgwFull = false;

// A full OSD takes no writes: every upload waits out its deadline (seen after many large
// runs, whose freed objects wait for RGW's garbage collector in a RAM-backed memstore, and
// when one run fills a small memstore). With s3 storage, throws when scripts/rgw.sh's gateway
// says so (any other endpoint: `rgw.sh ceph` fails, and nothing is known); before
// throwing, onFull() runs and the cleanups' deletes are turned off (a restart drops all).
async function rgwCheckFull(when, onFull = () => {}) {
  if (cfg.storage !== 's3') return;
  const h = await execFileP(path.join(REPO, 'scripts/rgw.sh'), ['ceph', 'health'], { timeout: 15000 })
    .then((r) => r.stdout, (e) => String(e.stdout || ''));
  if (!/full osd/.test(h)) return;
  rgwFull = true;
  onFull();
  throw new Error(`${when}: RGW's OSD is full (ceph health: ${h.trim().slice(0, 200)}); restart it: ` +
    'scripts/rgw.sh down && MI_RGW_MEMSTORE_GB=12 scripts/rgw.sh up (the size in GiB)');
}

// multipart uploads of this run left open (a worker that crashed or was killed)
async function s3AbortUploads() {
  if (rgwFull) return;
  const { stdout } = await execFileP('curl', ['-sS', '--fail', ...sigv4(),
    `${S3.endpoint}/${S3.bucket}?prefix=media%2F&uploads=`], { maxBuffer: 64 * MIB });
  const open = [...stdout.matchAll(/<Key>([^<]*)<\/Key>\s*<UploadId>([^<]*)<\/UploadId>/g)]
    .filter((m) => m[1].includes(`-b${RUN}-`));
  for (const [, key, id] of open) {
    await execFileP('curl', ['-sS', '-o', '/dev/null', '-X', 'DELETE', ...sigv4(),
      `${S3.endpoint}/${S3.bucket}/${key}?uploadId=${encodeURIComponent(id)}`]);
  }
  if (open.length) say(`aborted ${open.length} multipart uploads left open`);
}

// Delete objects; after a large run, also let RGW's garbage collector (it starts within
// rgw_gc_obj_min_wait + rgw_gc_processor_period = 10 s) free them before going on.
async function s3Free(keys, bytes) {
  if (!keys.length || rgwFull) return;
  await s3Delete(keys);
  if (bytes > 512 * MIB) {
    say(`deleted ${keys.length} objects; waiting for RGW's garbage collector`);
    await sleep(11000);
    await settle('going on');
  }
}

async function s3Delete(keys) {
  if (!keys.length) return;
  const cfgFile = path.join(cfg.dir, `delete-${randomBytes(3).toString('hex')}.cfg`);
  fs.writeFileSync(cfgFile, keys.map((k) => `url = "${S3.endpoint}/${S3.bucket}/${k}"\noutput = "/dev/null"\n`).join(''));
  await execFileP('curl', ['-sS', '--parallel', '--parallel-max', '16', '-X', 'DELETE', ...sigv4(), '-K', cfgFile],
    { maxBuffer: 16 * MIB });
  fs.rmSync(cfgFile, { force: true });
}

// what MEDIA_S3_PAYLOAD_HASH makes of the endpoint: the x-amz-content-sha256 of UploadPart
function partPolicy() {
  const p = process.env.MEDIA_S3_PAYLOAD_HASH || 'auto';
  const tls = /^https:/i.test(S3.endpoint || '');
  const unsigned = p === 'unsigned' || (p === 'auto' && tls);
  return `multipart parts ${unsigned ? 'UNSIGNED-PAYLOAD' : 'signed with their sha256'}, ` +
    `MEDIA_S3_PAYLOAD_HASH=${p}; announced bodies: one PutObject, signed with Graph's sha256 where the store checks it`;
}

function report(w, c) {
  const gb = (b) => b / 1e9;
  const mib = (kb) => (kb == null ? 'n/a' : `${(kb / 1024).toFixed(1)} MiB`);
  const row = (name, jobs, bytes, wall, cpu, rss) => [
    name.padEnd(16), String(jobs).padStart(6), (bytes / 1e6).toFixed(1).padStart(10),
    wall.toFixed(2).padStart(8), (jobs / wall).toFixed(1).padStart(8),
    (bytes / 1e6 / wall).toFixed(1).padStart(8), cpu.toFixed(2).padStart(8),
    (jobs ? (cpu / jobs * 1000).toFixed(3) : '-').padStart(10), (bytes ? (cpu / gb(bytes)).toFixed(2) : '-').padStart(9),
    rss.padStart(11)].join(' ');
  const budget = cfg.budget || '256M (default)';
  console.log(`== media-ingest bench: ${cfg.jobs} jobs, ${cfg.size ? `size ${cfg.size}` : `mix ${cfg.mix}`} ` +
    `(${[...new Set(pattern)].join(', ')}), concurrency ${cfg.concurrency}, budget ${budget}, ` +
    `storage ${cfg.storage}` +
    (cfg.storage === 's3' ? ` (${partPolicy()})` : '') + `, ${(expectedBytes / 1e6).toFixed(1)} MB` +
    (c && cfg.curlFirst ? ', plain curl ran first' : ''));
  console.log(`${'run'.padEnd(16)} ${'jobs'.padStart(6)} ${'MB'.padStart(10)} ${'wall_s'.padStart(8)} ` +
    `${'jobs/s'.padStart(8)} ${'MB/s'.padStart(8)} ${'cpu_s'.padStart(8)} ${'cpu_ms/job'.padStart(10)} ` +
    `${'cpu_s/GB'.padStart(9)} ${'peak_rss'.padStart(11)}`);
  console.log(row('worker', w.completed, w.bytes, w.wall, w.cpu, mib(w.hwmKb)));
  if (c) {
    console.log(row('curl', cfg.jobs, c.bytes, c.wall, c.cpu, c.rssKb == null ? 'n/a' : `${mib(c.rssKb)}*`));
    if (c.fsync) {
      console.log(row('curl + fsync', cfg.jobs, c.bytes, c.wall + c.fsync.wall, c.cpu + c.fsync.cpu,
        c.rssKb == null ? 'n/a' : `${mib(c.rssKb)}*`));
    }
  }
  console.log(`worker: ${w.completed} completed, ${w.failed} failed, exit ${w.exit}; CPU user ` +
    `${w.user.toFixed(2)} s, sys ${w.sys.toFixed(2)} s; jobs' own span ` +
    `(first processedOn → last finishedOn) ${w.span.toFixed(2)} s; VmHWM ${mib(w.hwmKb)}, ` +
    `largest VmRSS seen ${mib(w.maxRssKb)}; Graph fake CPU ${w.fakeCpu?.toFixed(2)} s`);
  if (c) {
    const ratio = (c.wall / w.wall) * 100;
    console.log(`curl: user ${c.user.toFixed(2)} s, sys ${c.sys.toFixed(2)} s (every curl process)` +
      `${c.fsync ? `; fsync of its files ${c.fsync.wall.toFixed(2)} s wall` : ''}; Graph fake CPU ` +
      `${c.fakeCpu?.toFixed(2)} s; * peak RSS of the largest curl process`);
    console.log(`worker throughput = ${ratio.toFixed(0)}% of plain curl's` +
      `${c.fsync ? ` (${(((c.wall + c.fsync.wall) / w.wall) * 100).toFixed(0)}% of curl + fsync)` : ''}`);
  }
  if (w.bytes !== expectedBytes && w.failed === 0) {
    console.log(`note: stored ${w.bytes} bytes, expected ${expectedBytes}`);
  }
  for (const f of w.failures) console.log(`failed: ${f}`);
  if (w.warnings) console.log(`worker log: ${w.warnings} warn/error lines: ${w.warnSample.join('; ')}`);
  console.log(`result jobs=${w.completed} failed=${w.failed} bytes=${w.bytes} wall_s=${w.wall.toFixed(3)} ` +
    `jobs_per_s=${(w.completed / w.wall).toFixed(1)} MBps=${(w.bytes / 1e6 / w.wall).toFixed(1)} ` +
    `cpu_s=${w.cpu.toFixed(3)} cpu_user_s=${w.user.toFixed(3)} cpu_sys_s=${w.sys.toFixed(3)} cpu_ms_per_job=${(w.cpu / Math.max(1, w.completed) * 1000).toFixed(3)} ` +
    `cpu_s_per_GB=${w.bytes ? (w.cpu / gb(w.bytes)).toFixed(3) : '-'} peak_rss_kB=${w.hwmKb}` +
    (c ? ` curl_wall_s=${c.wall.toFixed(3)} curl_cpu_s=${c.cpu.toFixed(3)} curl_MBps=${(c.bytes / 1e6 / c.wall).toFixed(1)}` : ''));
}

let rc = 1;
try {
  rc = await main();
} catch (e) {
  say(`ERROR: ${e.stack || e.message}`);
}
await cleanup();
process.exit(rc);
