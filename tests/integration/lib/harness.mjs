// Shared helpers of the queue integration tests: real Redis, real bullmq@6.7.0 from
// npm, and our binaries (paths from meson's test environment).
import { spawn, execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import net from 'node:net';
import { promisify } from 'node:util';

const execFileP = promisify(execFile);

export const REDIS_URL = process.env.REDIS_URL || process.env.MEDIA_INGEST_QUEUE_URL || '';

// Exit 77 (meson: skipped) unless Redis answers and bullmq is installed.
export async function requireServices() {
  if (!REDIS_URL) {
    console.log('# skip: REDIS_URL is not set (run scripts/services.sh up)');
    process.exit(77);
  }
  const u = new URL(REDIS_URL);
  const ok = await new Promise((resolve) => {
    const s = net.connect({ host: u.hostname, port: Number(u.port || 6379) });
    s.setTimeout(2000);
    s.on('connect', () => { s.destroy(); resolve(true); });
    s.on('error', () => resolve(false));
    s.on('timeout', () => { s.destroy(); resolve(false); });
  });
  if (!ok) {
    console.log(`# skip: Redis at ${u.host} is not reachable`);
    process.exit(77);
  }
  try {
    await import('bullmq');
  } catch {
    console.log('# skip: the bullmq npm package is not installed (npm ci)');
    process.exit(77);
  }
}

export async function bullmq() {
  return import('bullmq');
}

export function connection() {
  const u = new URL(REDIS_URL);
  return {
    host: u.hostname, port: Number(u.port || 6379),
    db: Number((u.pathname || '/0').slice(1) || 0),
    password: u.password || undefined, username: u.username || undefined,
    maxRetriesPerRequest: null,
  };
}

export function queueName(tag) {
  return `t-${tag}-${randomBytes(4).toString('hex')}`;
}

// Environment for our binaries bound to @queue.
export function envFor(queue, extra = {}) {
  return {
    ...process.env,
    MEDIA_INGEST_QUEUE_URL: REDIS_URL,
    MEDIA_INGEST_QUEUE: queue,
    METRICS_ADDR: '',
    LOG_LEVEL: process.env.MI_TEST_LOG_LEVEL || 'info',
    ...extra,
  };
}

// Start our test worker (the real loop with the test handler). Returns the child.
export function startWorker(queue, extra = {}, bin = process.env.MI_TEST_WORKER) {
  const child = spawn(bin, [], { env: envFor(queue, extra), stdio: ['ignore', 'pipe', 'pipe'] });
  child.logs = '';
  let started;
  child.started = new Promise((resolve) => { started = resolve; });
  const keep = (d) => {
    child.logs += d.toString();
    if (child.logs.includes('worker starting')) started();
    if (process.env.MI_TEST_VERBOSE) process.stderr.write(d);
  };
  child.stdout.on('data', keep);
  child.stderr.on('data', keep);
  child.exited = once(child, 'exit');
  return child;
}

export async function stopWorker(child, signal = 'SIGTERM', timeoutMs = 20000) {
  if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
  // Signals sent before the worker installed its handlers would kill it outright.
  await Promise.race([child.started, sleep(5000)]);
  child.kill(signal);
  const t = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  const [code] = await child.exited;
  clearTimeout(t);
  return code;
}

export async function mediaQueue(queue, args, extra = {}) {
  const r = await execFileP(process.env.MEDIA_QUEUE, args, { env: envFor(queue, extra) });
  return r.stdout;
}

export async function waitFor(fn, { timeout = 20000, interval = 50, what = 'condition' } = {}) {
  const end = Date.now() + timeout;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, interval));
  }
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Collect QueueEvents events by name for assertions.
export async function recordEvents(QueueEvents, queue) {
  // Fresh queue per test: read the stream from its start so no early event is missed.
  const qe = new QueueEvents(queue, { connection: connection(), lastEventId: '0-0' });
  await qe.waitUntilReady();
  const seen = [];
  for (const ev of ['added', 'waiting', 'active', 'completed', 'failed', 'delayed',
    'stalled', 'retries-exhausted', 'duplicated', 'drained', 'paused', 'resumed']) {
    qe.on(ev, (args) => seen.push({ ev, ...(args || {}), at: Date.now() }));
  }
  const errors = [];
  qe.on('error', (e) => errors.push(e));
  return { qe, seen, errors };
}
