// graph-fake.test.mjs - checks tests/fakes/graph-fake.mjs against http-apis.md part A, so the
// C client's integration tests rest on a fake that behaves like Meta's endpoints.
//
// Run: node --test tests/integration/graph-fake.test.mjs
// The fake is started as a child process, the way the C tests use it.
import { test, before, after, beforeEach } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import http from 'node:http';
import crypto from 'node:crypto';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const FAKE = path.join(here, '..', 'fakes', 'graph-fake.mjs');
const TOKEN = 'tok-fake-test';
const UA = 'graph-fake-test/1.0';
let child;
let port;

function request(method, target, { headers = {}, body } = {}) {
  return new Promise((resolve, reject) => {
    const u = new URL(target, `http://127.0.0.1:${port}`);
    const rq = http.request({ host: '127.0.0.1', port: u.port, method, path: u.pathname + u.search,
      headers, agent: false }, (res) => {
      const parts = [];
      res.on('data', (c) => parts.push(c));
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers,
        body: Buffer.concat(parts), complete: res.complete }));
      res.on('error', (e) => resolve({ status: res.statusCode, headers: res.headers,
        body: Buffer.concat(parts), complete: false, error: e }));
      res.on('aborted', () => {});
    });
    rq.on('error', reject);
    if (body !== undefined) rq.end(JSON.stringify(body));
    else rq.end();
  });
}

const auth = (tok = TOKEN) => ({ Authorization: `Bearer ${tok}`, 'User-Agent': UA });
const ctl = (p, body) => request('POST', `/__control/${p}`, { body: body ?? {} });
const json = (r) => JSON.parse(r.body.toString('utf8'));
const stats = async () => json(await request('GET', '/__control/stats'));
const sha256 = (b) => crypto.createHash('sha256').update(b).digest('hex');

async function lookup(id, headers = auth(), query = '') {
  return request('GET', `/v25.0/${encodeURIComponent(id)}${query}`, { headers });
}

async function urlOf(id) {
  const r = await lookup(id);
  assert.equal(r.status, 200, r.body.toString());
  return json(r);
}

before(async () => {
  child = spawn(process.execPath, [FAKE, '--port', '0', '--token', TOKEN],
    { stdio: ['pipe', 'pipe', 'inherit'] });
  port = await new Promise((resolve, reject) => {
    let buf = '';
    child.stdout.on('data', (c) => {
      buf += c;
      const nl = buf.indexOf('\n');
      if (nl >= 0) resolve(JSON.parse(buf.slice(0, nl)).port);
    });
    child.on('exit', (code) => reject(new Error(`fake exited ${code}`)));
  });
});

after(async () => {
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.stdin.end();   // the fake exits when its stdin pipe closes
  const t = setTimeout(() => child.kill('SIGTERM'), 3000);
  await exited;
  clearTimeout(t);
});

beforeEach(async () => {
  const r = await ctl('reset');
  assert.equal(r.status, 200);
});

test('lookup: 200 shape, hex sha256, numeric file_size, url on the fake', async () => {
  const reg = json(await ctl('media', { id: '1001', size: 5000, mime: 'image/png' }));
  const r = await lookup('1001');
  assert.equal(r.status, 200);
  assert.match(r.headers['content-type'], /^application\/json/);
  const b = json(r);
  assert.deepEqual(Object.keys(b).sort(),
    ['file_size', 'id', 'messaging_product', 'mime_type', 'sha256', 'url']);
  assert.equal(b.messaging_product, 'whatsapp');
  assert.equal(b.id, '1001');
  assert.equal(b.mime_type, 'image/png');
  assert.match(b.sha256, /^[0-9a-f]{64}$/);
  assert.equal(b.sha256, reg.sha256);
  assert.equal(b.file_size, 5000);
  const u = new URL(b.url);
  assert.equal(u.host, `127.0.0.1:${port}`);
  assert.equal(u.pathname, '/whatsapp_business/attachments/');
  assert.equal(u.searchParams.get('mid'), '1001');
  const ext = Number(u.searchParams.get('ext'));
  const now = Math.floor(Date.now() / 1000);
  assert.ok(ext >= now + 290 && ext <= now + 310, `expiry ${ext - now}s from now`);
  assert.ok(u.searchParams.get('hash'));
});

test('lookup: file_size as a string, sha256 as base64, mime with codecs', async () => {
  await ctl('media', { id: '1002', size: 777, mime: 'audio/ogg; codecs=opus',
    fileSizeAs: 'string', sha256As: 'base64' });
  const b = json(await lookup('1002'));
  assert.equal(b.file_size, '777');
  assert.equal(b.mime_type, 'audio/ogg; codecs=opus');
  assert.equal(b.sha256.length, 44);
  assert.equal(Buffer.from(b.sha256, 'base64').length, 32);
});

test('lookup: bearer required (missing, wrong, query form, expired token)', async () => {
  await ctl('media', { id: '1003', size: 10 });
  for (const h of [{ 'User-Agent': UA }, auth('nope')]) {
    const r = await lookup('1003', h);
    assert.equal(r.status, 401);
    const e = json(r).error;
    assert.equal(e.code, 190);
    assert.equal(e.type, 'OAuthException');
    assert.ok(e.fbtrace_id);
    assert.ok(!JSON.stringify(e).includes('nope'), 'the token is not echoed');
  }
  const q = await lookup('1003', { 'User-Agent': UA }, `?access_token=${TOKEN}`);
  assert.equal(q.status, 200);
  await ctl('token', { token: 'rotated' });
  assert.equal((await lookup('1003')).status, 401);
  assert.equal((await lookup('1003', auth('rotated'))).status, 200);
  await ctl('token', { expired: true });
  const ex = await lookup('1003', auth('rotated'));
  assert.equal(ex.status, 401);
  assert.equal(json(ex).error.error_subcode, 463);
  assert.equal((await stats()).unauthorized, 3);
});

test('lookup: unknown id is code 100 subcode 33 with Meta\'s message', async () => {
  const r = await lookup('999999999');
  assert.equal(r.status, 400);
  const e = json(r).error;
  assert.equal(e.code, 100);
  assert.equal(e.error_subcode, 33);
  assert.equal(e.type, 'GraphMethodException');
  assert.match(e.message, /^Unsupported get request\. Object with ID '999999999' does not exist/);
  assert.equal(e.error_data.messaging_product, 'whatsapp');
});

test('lookup: phone_number_id must own the media', async () => {
  await ctl('media', { id: '1004', size: 10, phoneNumberId: '555' });
  assert.equal((await lookup('1004', auth(), '?phone_number_id=555')).status, 200);
  const r = await lookup('1004', auth(), '?phone_number_id=666');
  assert.equal(r.status, 400);
  assert.equal(json(r).error.code, 100);
  assert.equal((await lookup('1004')).status, 200);
});

test('lookup: deleted media becomes unknown', async () => {
  await ctl('media', { id: '1005', size: 10 });
  const d = await request('DELETE', '/v25.0/1005', { headers: auth() });
  assert.deepEqual(json(d), { success: true });
  assert.equal(json(await lookup('1005')).error.code, 100);
});

test('download: byte-exact, sha256 matches, headers, deterministic', async () => {
  await ctl('media', { id: '2001', size: 300000, mime: 'video/mp4' });
  const b = await urlOf('2001');
  const r = await request('GET', b.url, { headers: auth() });
  assert.equal(r.status, 200);
  assert.equal(r.headers['content-type'], 'video/mp4');
  assert.equal(Number(r.headers['content-length']), 300000);
  assert.equal(r.headers['accept-ranges'], 'bytes');
  assert.equal(r.body.length, 300000);
  assert.equal(sha256(r.body), b.sha256);
  const again = await request('GET', (await urlOf('2001')).url, { headers: auth() });
  assert.ok(again.body.equals(r.body));
  const s = await stats();
  assert.equal(s.perId['2001'].downloadsOk, 2);
  assert.equal(s.perId['2001'].lookups, 2);
  assert.equal(s.bytesServed, 600000);
  assert.equal(s.noUserAgent, 0);
});

test('download: octet-stream content type and zero-byte media', async () => {
  await ctl('media', [{ id: '2002', size: 10, contentType: 'octet' }, { id: '2003', size: 0 }]);
  const r = await request('GET', (await urlOf('2002')).url, { headers: auth() });
  assert.equal(r.headers['content-type'], 'application/octet-stream');
  const z = await urlOf('2003');
  const rz = await request('GET', z.url, { headers: auth() });
  assert.equal(rz.status, 200);
  assert.equal(rz.body.length, 0);
  assert.equal(z.sha256, sha256(Buffer.alloc(0)));
});

test('download: bearer required (401 missing, 403 wrong), bad hash 403', async () => {
  await ctl('media', { id: '2004', size: 100 });
  const b = await urlOf('2004');
  const none = await request('GET', b.url, { headers: { 'User-Agent': UA } });
  assert.equal(none.status, 401);
  const wrong = await request('GET', b.url, { headers: auth('x') });
  assert.equal(wrong.status, 403);
  const u = new URL(b.url);
  u.searchParams.set('hash', 'AAAA' + u.searchParams.get('hash').slice(4));
  assert.equal((await request('GET', u.href, { headers: auth() })).status, 403);
  u.searchParams.set('hash', new URL(b.url).searchParams.get('hash'));
  u.searchParams.set('ext', String(Number(u.searchParams.get('ext')) + 3600));
  assert.equal((await request('GET', u.href, { headers: auth() })).status, 403,
    'the expiry is covered by the hash');
  assert.equal((await stats()).badHash, 2);
});

test('download: User-Agent required (403 html, or 200 html in "html" mode)', async () => {
  await ctl('media', { id: '2005', size: 100 });
  const b = await urlOf('2005');
  const r = await request('GET', b.url, { headers: { Authorization: `Bearer ${TOKEN}` } });
  assert.equal(r.status, 403);
  assert.match(r.headers['content-type'], /^text\/html/);
  await ctl('config', { noUserAgent: 'html' });
  const h = await request('GET', b.url, { headers: { Authorization: `Bearer ${TOKEN}` } });
  assert.equal(h.status, 200);
  assert.match(h.headers['content-type'], /^text\/html/);
  assert.match(h.body.toString(), /<html/);
  const s = await stats();
  assert.equal(s.noUserAgent, 2);
  assert.equal(s.noUserAgentDownloads, 2);
});

test('download: URL expires after 5 minutes (clock control), fresh lookup works', async () => {
  await ctl('media', { id: '2006', size: 100 });
  const b = await urlOf('2006');
  await ctl('clock', { advance: 299 });
  assert.equal((await request('GET', b.url, { headers: auth() })).status, 200);
  await ctl('clock', { advance: 2 });
  const r = await request('GET', b.url, { headers: auth() });
  assert.equal(r.status, 404);
  assert.equal((await stats()).expired, 1);
  const fresh = await urlOf('2006');
  assert.equal((await request('GET', fresh.url, { headers: auth() })).status, 200);
  await ctl('clock', { urlLifetime: 1 });
  const short = await urlOf('2006');
  await ctl('clock', { advance: 2 });
  assert.equal((await request('GET', short.url, { headers: auth() })).status, 404);
});

test('download: Range 206 / suffix / open-ended / 416', async () => {
  await ctl('media', { id: '2007', size: 1000 });
  const b = await urlOf('2007');
  const full = (await request('GET', b.url, { headers: auth() })).body;
  const r = await request('GET', b.url, { headers: { ...auth(), Range: 'bytes=100-199' } });
  assert.equal(r.status, 206);
  assert.equal(r.headers['content-range'], 'bytes 100-199/1000');
  assert.ok(r.body.equals(full.subarray(100, 200)));
  const suf = await request('GET', b.url, { headers: { ...auth(), Range: 'bytes=-10' } });
  assert.equal(suf.headers['content-range'], 'bytes 990-999/1000');
  assert.ok(suf.body.equals(full.subarray(990)));
  const open = await request('GET', b.url, { headers: { ...auth(), Range: 'bytes=995-' } });
  assert.ok(open.body.equals(full.subarray(995)));
  const bad = await request('GET', b.url, { headers: { ...auth(), Range: 'bytes=1000-' } });
  assert.equal(bad.status, 416);
  assert.equal(bad.headers['content-range'], 'bytes */1000');
  const odd = await request('GET', b.url, { headers: { ...auth(), Range: 'bytes=7-7' } });
  assert.equal(odd.body[0], full[7]);
});

test('faults: Graph error codes with the doc\'s HTTP statuses and shapes', async () => {
  const want = { 1: 500, 2: 503, 4: 400, 10: 403, 100: 400, 131000: 500, 80007: 400,
    130429: 400, 190: 401, 200: 403 };
  for (const [code, status] of Object.entries(want)) {
    const id = `30${code}`;
    await ctl('media', { id, size: 10, faults: [{ graphError: { code: Number(code) } }] });
    const r = await lookup(id);
    assert.equal(r.status, status, `code ${code}`);
    const e = json(r).error;
    assert.equal(e.code, Number(code));
    assert.equal(typeof e.message, 'string');
    assert.equal(typeof e.type, 'string');
    assert.equal(typeof e.fbtrace_id, 'string');
    assert.equal(e.error_data.messaging_product, 'whatsapp', `code ${code}`);
    assert.equal(typeof e.error_data.details, 'string', `code ${code}`);
  }
  await ctl('media', { id: '3999', size: 10, faults: [{ graphError: { code: 4, status: 429 } }] });
  assert.equal((await lookup('3999')).status, 429);
});

test('faults: plain 429/503, fail first N times then succeed, global faults', async () => {
  await ctl('media', { id: '4001', size: 10,
    faults: [{ status: 503, times: 2 }] });
  const a = await lookup('4001');
  assert.equal(a.status, 503);
  assert.equal(a.body.length, 0);
  assert.equal((await lookup('4001')).status, 503);
  assert.equal((await lookup('4001')).status, 200);
  await ctl('faults', { faults: [{ status: 429, retryAfter: 7, times: 1 }] });
  const g = await lookup('img-5');
  assert.equal(g.status, 429);
  assert.equal(g.headers['retry-after'], '7');
  assert.equal((await lookup('img-5')).status, 200);
  await ctl('faults', { faults: [{ id: 'img-6', on: 'download', status: 500 }] });
  assert.equal((await request('GET', (await urlOf('img-7')).url, { headers: auth() })).status,
    200);
  assert.equal((await request('GET', (await urlOf('img-6')).url, { headers: auth() })).status,
    500);
  assert.equal((await stats()).faultsInjected, 4);
});

test('faults: cut body, corrupt body, truncated body, lying file_size, html', async () => {
  await ctl('media', [
    { id: '5001', size: 200000, faults: [{ on: 'download', cutAfter: 70000 }] },
    { id: '5002', size: 5000, faults: [{ on: 'download', corrupt: true }] },
    { id: '5003', size: 5000, faults: [{ on: 'download', truncate: 4000 }] },
    { id: '5004', size: 5000, fileSizeLie: 123 },
    { id: '5005', size: 5000, faults: [{ on: 'download', html: true }] },
  ]);
  const cut = await request('GET', (await urlOf('5001')).url, { headers: auth() });
  assert.equal(cut.complete, false);
  assert.equal(cut.body.length, 70000);
  const c = await urlOf('5002');
  const cb = await request('GET', c.url, { headers: auth() });
  assert.equal(cb.body.length, 5000);
  assert.notEqual(sha256(cb.body), c.sha256);
  const t = await urlOf('5003');
  const tb = await request('GET', t.url, { headers: auth() });
  assert.equal(tb.body.length, 4000);
  assert.equal(Number(tb.headers['content-length']), 4000);
  assert.equal(t.file_size, 5000);
  const l = await urlOf('5004');
  assert.equal(l.file_size, 5123);
  assert.equal((await request('GET', l.url, { headers: auth() })).body.length, 5000);
  const h = await request('GET', (await urlOf('5005')).url, { headers: auth() });
  assert.equal(h.status, 200);
  assert.match(h.headers['content-type'], /^text\/html/);
});

test('faults: redirects, same origin and foreign origin', async () => {
  await ctl('media', [
    { id: '5101', size: 1000, faults: [{ on: 'download', redirect: 'same', times: 1 }] },
    { id: '5102', size: 1000, faults: [{ on: 'download', redirect: 'foreign' }] },
  ]);
  const a = await urlOf('5101');
  const r = await request('GET', a.url, { headers: auth() });
  assert.equal(r.status, 302);
  assert.equal(r.headers.location, new URL(a.url).pathname + new URL(a.url).search);
  assert.equal((await request('GET', a.url, { headers: auth() })).status, 200);
  const b = await urlOf('5102');
  const f = await request('GET', b.url, { headers: auth() });
  assert.equal(f.status, 302);
  const loc = new URL(f.headers.location);
  assert.notEqual(loc.port, String(port));
  const g = await request('GET', loc.href, { headers: { 'User-Agent': UA } });
  assert.equal(g.status, 200);
  assert.equal(sha256(g.body), b.sha256);
  await request('GET', loc.href, { headers: auth() });
  const s = await stats();
  assert.equal(s.redirects, 2);
  assert.deepEqual(s.foreign, { requests: 2, withAuth: 1 });
});

test('faults: slow body and latency', async () => {
  await ctl('media', [
    { id: '6001', size: 3000, faults: [{ on: 'download', bytesPerSec: 10000 }] },
    { id: '6002', size: 10, faults: [{ latencyMs: 300 }] },
  ]);
  const b = await urlOf('6001');
  let t0 = Date.now();
  const r = await request('GET', b.url, { headers: auth() });
  assert.equal(sha256(r.body), b.sha256);
  assert.ok(Date.now() - t0 >= 200, `slow body took ${Date.now() - t0} ms`);
  t0 = Date.now();
  assert.equal((await lookup('6002')).status, 200);
  assert.ok(Date.now() - t0 >= 280);
});

test('usage headers: X-App-Usage and X-Business-Use-Case-Usage', async () => {
  await ctl('config', { usage: { app: { call_count: 91, total_cputime: 10, total_time: 12 },
    buc: { call_count: 100, estimated_time_to_regain_access: 7 }, businessId: '42' } });
  const r = await lookup('img-1');
  assert.deepEqual(JSON.parse(r.headers['x-app-usage']),
    { call_count: 91, total_cputime: 10, total_time: 12 });
  const buc = JSON.parse(r.headers['x-business-use-case-usage']);
  assert.equal(buc['42'][0].estimated_time_to_regain_access, 7);
  assert.equal(buc['42'][0].call_count, 100);
  assert.equal(buc['42'][0].type, 'whatsapp_business_management');
  await ctl('media', { id: '7001', size: 1, faults: [{ graphError: { code: 4 },
    usage: { app: { call_count: 100, total_cputime: 1, total_time: 1 } } }] });
  const e = await lookup('7001');
  assert.equal(json(e).error.code, 4);
  assert.equal(JSON.parse(e.headers['x-app-usage']).call_count, 100);
});

test('automatic ids encode kind and size; big ones share content', async () => {
  const a = await urlOf('voice-1');
  assert.equal(a.mime_type, 'audio/ogg; codecs=opus');
  assert.equal(a.file_size, 600 * 1024);
  const b = await urlOf('img-200kb-3');
  assert.equal(b.file_size, 200 * 1024);
  assert.equal(b.mime_type, 'image/jpeg');
  const d1 = await urlOf('doc-20mb-1');
  const d2 = await urlOf('doc-20mb-2');
  assert.equal(d1.file_size, 20 * 1024 * 1024);
  assert.equal(d1.sha256, d2.sha256);
  const r = await request('GET', d2.url, { headers: auth() });
  assert.equal(sha256(r.body), d2.sha256);
  await ctl('auto', { rules: [{ pattern: '^load-\\d+$', size: 1234, mime: 'image/png',
    fileSizeAs: 'string' }] });
  const l = await urlOf('load-77');
  assert.equal(l.file_size, '1234');
  await ctl('auto', { enabled: false });
  assert.equal((await lookup('img-99')).status, 400);
});

test('stats: counts per id and requests without a User-Agent', async () => {
  await lookup('img-1');
  await request('GET', '/v25.0/img-1', { headers: { Authorization: `Bearer ${TOKEN}` } });
  const s = await stats();
  assert.equal(s.lookups, 2);
  assert.equal(s.perId['img-1'].lookups, 2);
  assert.equal(s.noUserAgent, 1);
  assert.equal(s.userAgents[UA], 1);
  await ctl('reset');
  assert.equal((await stats()).lookups, 0);
});
