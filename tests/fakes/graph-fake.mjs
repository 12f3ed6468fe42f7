// graph-fake.mjs - a fake of the WhatsApp Cloud API media endpoints (Graph API + lookaside).
//
// It is the only fake of the project (Redis, Postgres, BullMQ and S3 are real), so it follows
// /work/shared/docs/http-apis.md part A closely. Node >= 18, built-in modules only.
//
// Usage:
//   node tests/fakes/graph-fake.mjs [--port N] [--token T] [--url-lifetime S] [--no-auto]
//                                   [--phone-number-id PNID]
//   Listens on 127.0.0.1 (port 0 or none: an ephemeral port) and prints one JSON line
//   {"port":N,"ready":true} on stdout once listening. Exits on SIGTERM/SIGINT, and when stdin
//   is a pipe also when it closes, so a test that dies does not leave the fake behind.
//   Defaults: token "test-token", URL lifetime 300 s, automatic media ids on.
//   As a module: `const fake = await startGraphFake(opts); fake.port; await fake.close();`
//
// Graph API (what the worker calls):
//   GET /vNN.N/{media-id}[?phone_number_id=PNID]     Authorization: Bearer <token>
//     200 {"messaging_product":"whatsapp","url":"http://127.0.0.1:PORT/whatsapp_business/
//          attachments/?mid=..&ext=<unix expiry>&hash=<hmac>","mime_type":..,"sha256":<64 hex>,
//          "file_size":<number or string>,"id":"<media-id>"}
//     missing or wrong bearer: 401 {"error":{..,"type":"OAuthException","code":190,..}}
//     unknown id: 400 code 100 subcode 33 (GraphMethodException, Meta's message text)
//     phone_number_id that does not own the media: 400 code 100
//   DELETE /vNN.N/{media-id}  -> {"success":true} and the media is gone (later: code 100).
//   The token is also accepted as ?access_token= on Graph calls (Graph allows it).
//
// Lookaside (the download URL):
//   GET|HEAD /whatsapp_business/attachments/?mid=&ext=&hash=
//     needs the same bearer (none: 401, wrong: 403, both with a small HTML page) and a
//     User-Agent (none: 403 with an HTML page, or with config noUserAgent "html" a 200
//     text/html page, as Meta does for clients that look like bots); bad hash: 403;
//     expired (clock > ext) or deleted media: 404. Body: deterministic bytes of the media
//     (AES-128-CTR keystream keyed by sha256(seed), seed = media id by default), so any
//     size needs no memory and any Range is cheap. Content-Type = mime type (or
//     application/octet-stream with contentType "octet"), Content-Length, Accept-Ranges,
//     Range: one range "bytes=a-b" | "a-" | "-n" -> 206 + Content-Range; unsatisfiable ->
//     416 + "Content-Range: bytes */SIZE"; several ranges -> the whole body (200).
//
// Automatic media: ids "<kind>[-<size>]-<anything>" are registered on first sight, with
//   kind img|image|sticker|audio|voice|video|doc and size like 500, 200kb, 16mb (units b,
//   k or kb = 1024, m or mb = 1048576). Kind -> mime: img/image image/jpeg,
//   sticker image/webp, audio audio/mpeg, voice "audio/ogg; codecs=opus", video video/mp4,
//   doc application/pdf. Default sizes: img 150 KiB, sticker 30 KiB, audio/voice 600 KiB,
//   video 4 MiB, doc 1 MiB. Media bigger than 8 MiB share one byte stream per (kind, size)
//   (seed "<kind>-<size>"), so thousands of "doc-100mb-<n>" cost one sha256 computation.
//   More rules: POST /__control/auto. "--no-auto" or {"enabled":false} turns this off.
//
// Control API (JSON in, JSON out; no auth):
//   POST   /__control/media       {id, size, mime?, fileSizeAs?: "number"|"string"|"absent",
//                                  sha256As?: "hex"|"base64"|"HEX", fileSizeLie?: delta,
//                                  phoneNumberId?, contentType?: "mime"|"octet", seed?,
//                                  usage?, faults?: [fault]}       (or an array of those)
//                                  -> 201 {id, size, sha256, sha256Base64}
//   GET    /__control/media/{id}  -> the media config with its sha256
//   DELETE /__control/media/{id}  -> the id becomes unknown (code 100)
//   POST   /__control/faults      {faults: [fault]} global faults (each with `id` to scope it
//                                  to one media id, else every id); replaces the list
//   POST   /__control/auto        {enabled?, rules?: [{pattern, size, mime, fileSizeAs, ...}]}
//   POST   /__control/token       {token, expired?: bool}  (expired: code 190 subcode 463)
//   POST   /__control/clock       {advance?: s, offset?: s, urlLifetime?: s}
//   POST   /__control/config      {usage?, latencyMs?, noUserAgent?: "403"|"html",
//                                  phoneNumberId?, version?}
//   GET    /__control/stats       counters, see newStats()
//   POST   /__control/reset       back to the start-up options, stats cleared
//
// A fault: {on: "lookup"|"download" (default lookup), times?: N (default: always; "fail the
//   first N times then succeed"), skip?: M (let M requests pass first), latencyMs?,
//   graphError?: {code, subcode?, status?, message?, type?, details?} (HTTP status from the
//   doc's table unless given), status?: plain HTTP status without a Graph body (429, 503..),
//   retryAfter?: s, cutAfter?: bytes (destroy the connection after that many body bytes),
//   stallAfter?: bytes (send that many body bytes, then nothing more: the connection stays
//   open until the client gives up),
//   bytesPerSec?: N (slow body), corrupt?: true (one byte flipped: sha256 mismatch),
//   truncate?: bytes (send fewer bytes with a matching Content-Length: a short file),
//   chunked?: true (download: chunked transfer encoding, no Content-Length),
//   html?: true (200 text/html login page), hang?: true (never answer), usage?: {...},
//   redirect?: "same"|"foreign" (download only: 302 to the same URL on this origin, or on a
//   second listener on another port, a "foreign origin" that serves the media without a
//   bearer and counts requests that still carry an Authorization header: stats.foreign)}
// Usage headers ({app: {call_count,total_cputime,total_time}, buc: {type, call_count, ...,
//   estimated_time_to_regain_access}, businessId?}) become X-App-Usage and
//   X-Business-Use-Case-Usage on Graph answers.
import http from 'node:http';
import crypto from 'node:crypto';
import fs from 'node:fs';
import { pathToFileURL } from 'node:url';

const KIB = 1024;
const MIB = 1024 * 1024;
const CHUNK = 64 * KIB;
const SHARED_CONTENT_MIN = 8 * MIB;
const MAX_CONTROL_BODY = 1 * MIB;

const KINDS = {
  img: { mime: 'image/jpeg', size: 150 * KIB },
  image: { mime: 'image/jpeg', size: 150 * KIB },
  sticker: { mime: 'image/webp', size: 30 * KIB },
  audio: { mime: 'audio/mpeg', size: 600 * KIB },
  voice: { mime: 'audio/ogg; codecs=opus', size: 600 * KIB },
  video: { mime: 'video/mp4', size: 4 * MIB },
  doc: { mime: 'application/pdf', size: 1 * MIB },
};
const AUTO_RE = /^(img|image|sticker|audio|voice|video|doc)(?:-(\d+)(b|k|kb|m|mb)?)?-(.+)$/i;

// HTTP status of each Graph error code, from http-apis.md §A3.
const GRAPH_ERRORS = {
  0: { status: 401, type: 'OAuthException', message: 'Unknown error' },
  1: { status: 500, type: 'OAuthException', transient: true,
    message: 'An unknown error has occurred.' },
  2: { status: 503, type: 'OAuthException', transient: true,
    message: 'An unexpected error has occurred. Please retry your request later.' },
  3: { status: 403, type: 'OAuthException',
    message: '(#3) Application does not have the capability to make this API call.' },
  4: { status: 400, type: 'OAuthException', transient: true,
    message: '(#4) Application request limit reached' },
  10: { status: 403, type: 'OAuthException',
    message: '(#10) Application does not have permission for this action' },
  100: { status: 400, type: 'GraphMethodException', message: '(#100) Invalid parameter' },
  190: { status: 401, type: 'OAuthException',
    message: 'Invalid OAuth access token - Cannot parse access token' },
  200: { status: 403, type: 'OAuthException', message: '(#200) Permissions error' },
  80007: { status: 400, type: 'OAuthException',
    message: '(#80007) Rate limit hit for WhatsApp Business Account.',
    details: 'The WhatsApp Business Account has reached its rate limit.' },
  130429: { status: 400, type: 'OAuthException', message: '(#130429) Rate limit hit',
    details: 'Cloud API message throughput has been reached.' },
  131000: { status: 500, type: 'OAuthException', message: '(#131000) Something went wrong',
    details: 'Something went wrong' },
  131016: { status: 503, type: 'OAuthException', message: '(#131016) Service unavailable',
    details: 'A service is temporarily unavailable.' },
};

function parseSize(num, unit) {
  const n = Number(num);
  const u = (unit || 'b').toLowerCase();
  if (u === 'k' || u === 'kb') return n * KIB;
  if (u === 'm' || u === 'mb') return n * MIB;
  return n;
}

// A byte stream that is a pure function of (seed, offset): the AES-128-CTR keystream with
// the key sha256(seed)[0..16], so a Range starts anywhere without generating what precedes.
function keyOf(seed) {
  return crypto.createHash('sha256').update(String(seed)).digest().subarray(0, 16);
}

function streamBytes(key, offset, len) {
  const block = Math.floor(offset / 16);
  const skip = offset % 16;
  const iv = Buffer.alloc(16);
  iv.writeBigUInt64BE(BigInt(block), 8);
  const c = crypto.createCipheriv('aes-128-ctr', key, iv);
  const out = c.update(Buffer.alloc(len + skip));
  return out.subarray(skip);
}

function fbtrace() {
  return crypto.randomBytes(8).toString('base64').replace(/[+/=]/g, 'A');
}

function graphErrorBody(spec, mediaId) {
  const base = GRAPH_ERRORS[spec.code] || { status: 400, type: 'OAuthException',
    message: `(#${spec.code}) Error` };
  const err = {
    message: spec.message || base.message,
    type: spec.type || base.type,
    code: spec.code,
  };
  if (spec.subcode !== undefined) err.error_subcode = spec.subcode;
  if (base.transient) err.is_transient = true;
  // http-apis.md A3: every Graph error carries error_data
  err.error_data = { messaging_product: 'whatsapp', details: spec.details || base.details || err.message };
  err.fbtrace_id = fbtrace();
  return { status: spec.status || base.status, body: { error: err } };
}

function unknownIdError(id) {
  return {
    status: 400,
    body: {
      error: {
        message: `Unsupported get request. Object with ID '${id}' does not exist, cannot be ` +
          'loaded due to missing permissions, or does not support this operation. Please ' +
          'read the Graph API documentation at https://developers.facebook.com/docs/graph-api',
        type: 'GraphMethodException',
        code: 100,
        error_subcode: 33,
        error_data: { messaging_product: 'whatsapp', details: `Object with ID '${id}' does not exist` },
        fbtrace_id: fbtrace(),
      },
    },
  };
}

function newStats() {
  return {
    requests: 0,            // every request, control API excluded
    lookups: 0,             // Graph GET media calls (any outcome)
    lookupsOk: 0,
    downloads: 0,           // lookaside GETs (any outcome)
    downloadsOk: 0,         // 200/206 answers whose body was sent completely
    bytesServed: 0,         // body bytes written by downloads
    noUserAgent: 0,         // requests without a User-Agent header (Graph or lookaside)
    noUserAgentDownloads: 0,
    unauthorized: 0,        // missing or wrong bearer
    tokenInQuery: 0,        // ?access_token= used
    expired: 0,             // downloads after the URL's expiry
    badHash: 0,
    rangeRequests: 0,
    faultsInjected: 0,
    inFlight: 0,
    maxInFlight: 0,
    userAgents: {},         // user-agent -> count
    redirects: 0,
    foreign: { requests: 0, withAuth: 0 },  // the second origin used by redirect faults
    perId: {},              // id -> {lookups, downloads, downloadsOk, bytes}
  };
}

export async function startGraphFake(opts = {}) {
  const startup = {
    token: opts.token ?? 'test-token',
    urlLifetime: opts.urlLifetime ?? 300,
    auto: opts.auto ?? true,
    phoneNumberId: opts.phoneNumberId ?? null,
  };
  const secret = crypto.randomBytes(32);
  const shaCache = new Map();   // seed|size -> Promise<Buffer(32)>
  let st;

  function reset() {
    st = {
      token: startup.token,
      tokenExpired: false,
      urlLifetime: startup.urlLifetime,
      clockOffset: 0,
      latencyMs: 0,
      noUserAgent: '403',
      phoneNumberId: startup.phoneNumberId,
      usage: null,
      media: new Map(),
      deleted: new Set(),
      faults: [],
      autoEnabled: startup.auto,
      autoRules: [],
      stats: newStats(),
    };
  }
  reset();

  const now = () => Math.floor(Date.now() / 1000) + st.clockOffset;
  const idStats = (id) => {
    if (!st.stats.perId[id]) {
      st.stats.perId[id] = { lookups: 0, downloads: 0, downloadsOk: 0, bytes: 0 };
    }
    return st.stats.perId[id];
  };

  function normMedia(spec) {
    if (typeof spec.id !== 'string' || spec.id === '') throw new Error('media id required');
    const size = Number(spec.size ?? 1024);
    if (!Number.isSafeInteger(size) || size < 0) throw new Error('bad size');
    return {
      id: spec.id,
      size,
      mime: spec.mime ?? 'image/jpeg',
      fileSizeAs: spec.fileSizeAs ?? 'number',
      sha256As: spec.sha256As ?? 'hex',
      fileSizeLie: Number(spec.fileSizeLie ?? 0),
      phoneNumberId: spec.phoneNumberId ?? null,
      contentType: spec.contentType ?? 'mime',
      seed: String(spec.seed ?? spec.id),
      usage: spec.usage ?? null,
      faults: (spec.faults ?? []).map((f) => ({ ...f, hits: 0 })),
    };
  }

  function autoMedia(id) {
    if (!st.autoEnabled || st.deleted.has(id)) return null;
    for (const r of st.autoRules) {
      if (new RegExp(r.pattern).test(id)) {
        const { pattern, ...rest } = r;
        return normMedia({ ...rest, id });
      }
    }
    const m = AUTO_RE.exec(id);
    if (!m) return null;
    const kind = KINDS[m[1].toLowerCase()];
    const size = m[2] !== undefined ? parseSize(m[2], m[3]) : kind.size;
    const seed = size > SHARED_CONTENT_MIN ? `${m[1].toLowerCase()}-${size}` : id;
    return normMedia({ id, size, mime: kind.mime, seed });
  }

  function findMedia(id) {
    let m = st.media.get(id);
    if (!m) {
      m = autoMedia(id);
      if (m) st.media.set(id, m);
    }
    return m || null;
  }

  // The sha256 of a media's bytes, computed once per (seed, size) in slices so the fake
  // keeps answering while it hashes 100 MB.
  function sha256Of(m) {
    const k = `${m.seed}|${m.size}`;
    let p = shaCache.get(k);
    if (!p) {
      p = new Promise((resolve) => {
        const h = crypto.createHash('sha256');
        const key = keyOf(m.seed);
        let off = 0;
        const step = () => {
          const end = Math.min(m.size, off + 4 * MIB);
          while (off < end) {
            const n = Math.min(MIB, end - off);
            h.update(streamBytes(key, off, n));
            off += n;
          }
          if (off < m.size) setImmediate(step);
          else resolve(h.digest());
        };
        step();
      });
      shaCache.set(k, p);
    }
    return p;
  }

  function hmac(mid, ext) {
    return crypto.createHmac('sha256', secret).update(`${mid}|${ext}`).digest('base64url');
  }

  // Faults that apply to this request, in order: the media's own, then the global ones.
  // A fault with `times` fires that many times and then lets requests through.
  function takeFault(m, id, on) {
    const lists = [m ? m.faults : [], st.faults.filter((f) => !f.id || f.id === id)];
    for (const list of lists) {
      for (const f of list) {
        if ((f.on ?? 'lookup') !== on) continue;
        f.seen = (f.seen ?? 0) + 1;
        if (f.skip && f.seen <= f.skip) continue;
        if (f.times !== undefined && f.hits >= f.times) continue;
        f.hits = (f.hits ?? 0) + 1;
        st.stats.faultsInjected++;
        return f;
      }
    }
    return null;
  }

  function usageHeaders(usage) {
    const h = {};
    if (!usage) return h;
    if (usage.app) h['X-App-Usage'] = JSON.stringify(usage.app);
    if (usage.buc) {
      const entries = Array.isArray(usage.buc) ? usage.buc : [usage.buc];
      h['X-Business-Use-Case-Usage'] = JSON.stringify({
        [usage.businessId ?? '102290129340398']: entries.map((e) => ({
          type: 'whatsapp_business_management', call_count: 0, total_cputime: 0,
          total_time: 0, estimated_time_to_regain_access: 0, ...e,
        })),
      });
    }
    return h;
  }

  function sendJson(res, status, obj, extra = {}) {
    const body = Buffer.from(JSON.stringify(obj));
    res.writeHead(status, {
      'Content-Type': 'application/json; charset=UTF-8',
      'Content-Length': body.length,
      'x-fb-trace-id': fbtrace(),
      'x-fb-rev': '1010000000',
      'facebook-api-version': st.version ?? 'v25.0',
      ...extra,
    });
    res.end(body);
  }

  function sendHtml(res, status, title) {
    const body = Buffer.from('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">' +
      `<title>${title}</title></head><body><div>${title}</div></body></html>\n`);
    res.writeHead(status, { 'Content-Type': 'text/html; charset="utf-8"',
      'Content-Length': body.length });
    res.end(body);
  }

  function sendPlain(res, status, retryAfter) {
    const h = { 'Content-Type': 'text/plain', 'Content-Length': 0 };
    if (retryAfter !== undefined) h['Retry-After'] = String(retryAfter);
    res.writeHead(status, h);
    res.end();
  }

  function bearerOf(req, url, graph) {
    const a = req.headers.authorization;
    if (typeof a === 'string') {
      const m = /^Bearer\s+(\S+)\s*$/i.exec(a);
      return m ? m[1] : '';
    }
    if (graph && url.searchParams.has('access_token')) {
      st.stats.tokenInQuery++;
      return url.searchParams.get('access_token');
    }
    return null;
  }

  // A fault that ends the request before any media answer; true when it answered.
  function answerFault(res, f, id, usage) {
    if (f.hang) return true;
    if (f.graphError) {
      const e = graphErrorBody(f.graphError, id);
      sendJson(res, e.status, e.body, usageHeaders(f.usage ?? usage));
      return true;
    }
    if (f.status) {
      sendPlain(res, f.status, f.retryAfter);
      return true;
    }
    return false;
  }

  async function handleLookup(req, res, url, id) {
    st.stats.lookups++;
    idStats(id).lookups++;
    const tok = bearerOf(req, url, true);
    if (tok === null || tok === '' || tok !== st.token) {
      st.stats.unauthorized++;
      const e = graphErrorBody({ code: 190, message: tok ? undefined :
        'An active access token must be used to query information about the current user.' });
      return sendJson(res, e.status, e.body, { 'WWW-Authenticate':
        'OAuth "Facebook Platform" "invalid_token" "Invalid OAuth access token"' });
    }
    if (st.tokenExpired) {
      const e = graphErrorBody({ code: 190, subcode: 463,
        message: 'Error validating access token: Session has expired on Monday, ' +
          '23-Nov-26 10:00:00 PST. The current time is Tuesday, 24-Nov-26 03:00:00 PST.' });
      return sendJson(res, e.status, e.body);
    }
    const m = findMedia(id);
    const f = takeFault(m, id, 'lookup');
    if (f && f.latencyMs) await sleep(f.latencyMs);
    const usage = (m && m.usage) || st.usage;
    if (f && answerFault(res, f, id, usage)) return;
    if (!m) {
      const e = unknownIdError(id);
      return sendJson(res, e.status, e.body);
    }
    const pnid = url.searchParams.get('phone_number_id');
    const owner = m.phoneNumberId ?? st.phoneNumberId;
    if (pnid !== null && owner !== null && pnid !== String(owner)) {
      const e = graphErrorBody({ code: 100, message: '(#100) Invalid parameter',
        details: `Media ${id} does not belong to phone number ${pnid}` });
      return sendJson(res, e.status, e.body);
    }
    const sha = await sha256Of(m);
    const ext = now() + st.urlLifetime;
    const host = req.headers.host || `127.0.0.1:${server.address().port}`;
    const mid = encodeURIComponent(id);
    const body = {
      messaging_product: 'whatsapp',
      url: `http://${host}/whatsapp_business/attachments/?mid=${mid}&ext=${ext}` +
        `&hash=${hmac(id, ext)}`,
      mime_type: m.mime,
    };
    if (m.sha256As === 'base64') body.sha256 = sha.toString('base64');
    else if (m.sha256As === 'HEX') body.sha256 = sha.toString('hex').toUpperCase();
    else body.sha256 = sha.toString('hex');
    const announced = m.size + m.fileSizeLie;
    if (m.fileSizeAs === 'string') body.file_size = String(announced);
    else if (m.fileSizeAs !== 'absent') body.file_size = announced;
    body.id = id;
    st.stats.lookupsOk++;
    sendJson(res, 200, body, usageHeaders(usage));
  }

  async function handleDownload(req, res, url) {
    st.stats.downloads++;
    const id = url.searchParams.get('mid') ?? '';
    const ext = Number(url.searchParams.get('ext'));
    const hash = url.searchParams.get('hash') ?? '';
    const ids = idStats(id);
    ids.downloads++;
    if (!req.headers['user-agent']) {
      st.stats.noUserAgentDownloads++;
      if (st.noUserAgent === 'html') return sendHtml(res, 200, 'WhatsApp');
      return sendHtml(res, 403, 'Forbidden');
    }
    const want = Buffer.from(hmac(id, ext));
    const got = Buffer.from(hash);
    if (!Number.isSafeInteger(ext) || want.length !== got.length ||
        !crypto.timingSafeEqual(want, got)) {
      st.stats.badHash++;
      return sendHtml(res, 403, 'URL signature mismatch');
    }
    const tok = bearerOf(req, url, false);
    if (tok === null || tok === '') {
      st.stats.unauthorized++;
      return sendHtml(res, 401, 'Unauthorized');
    }
    if (tok !== st.token || st.tokenExpired) {
      st.stats.unauthorized++;
      return sendHtml(res, 403, 'Forbidden');
    }
    if (now() > ext) {
      st.stats.expired++;
      return sendHtml(res, 404, 'Not Found');
    }
    const m = st.media.get(id);
    if (!m) return sendHtml(res, 404, 'Not Found');
    const f = takeFault(m, id, 'download');
    if (f && f.latencyMs) await sleep(f.latencyMs);
    if (f && answerFault(res, f, id, null)) return;
    if (f && f.html) return sendHtml(res, 200, 'Log in to WhatsApp');
    if (f && f.redirect) {
      st.stats.redirects++;
      const origin = f.redirect === 'foreign' ? `http://127.0.0.1:${await foreignPort()}` : '';
      res.writeHead(302, { Location: origin + req.url, 'Content-Length': 0 });
      return res.end();
    }
    await serveBody(req, res, m, f, ids);
  }

  // The second origin: signed URL only, as a CDN would serve it after a redirect.
  let foreign = null;
  async function foreignPort() {
    if (!foreign) {
      foreign = http.createServer((req, res) => {
        const url = new URL(req.url, 'http://127.0.0.1');
        st.stats.foreign.requests++;
        if (req.headers.authorization) st.stats.foreign.withAuth++;
        const id = url.searchParams.get('mid') ?? '';
        const ext = Number(url.searchParams.get('ext'));
        const m = st.media.get(id);
        if (!m || url.searchParams.get('hash') !== hmac(id, ext) || now() > ext) {
          return sendHtml(res, 404, 'Not Found');
        }
        serveBody(req, res, m, null, idStats(id)).catch(() => res.destroy());
      });
      await new Promise((r) => foreign.listen(0, '127.0.0.1', r));
    }
    return foreign.address().port;
  }

  function parseRange(h, size) {
    const m = /^bytes=(\d*)-(\d*)$/.exec(h.trim());
    if (!m || (m[1] === '' && m[2] === '')) return h.includes(',') ? null : 'bad';
    let start;
    let end;
    if (m[1] === '') {
      const n = Number(m[2]);
      if (n === 0) return 'bad';
      start = Math.max(0, size - n);
      end = size - 1;
    } else {
      start = Number(m[1]);
      end = m[2] === '' ? size - 1 : Math.min(Number(m[2]), size - 1);
      if (m[2] !== '' && Number(m[2]) < start) return null;   // invalid: ignore the header
    }
    if (start >= size) return 'bad';
    return { start, end };
  }

  async function serveBody(req, res, m, f, ids) {
    let start = 0;
    let end = m.size - 1;
    let status = 200;
    const headers = {
      'Content-Type': m.contentType === 'octet' ? 'application/octet-stream' : m.mime,
      'Accept-Ranges': 'bytes',
      'Cache-Control': 'private, no-transform',
    };
    if (req.headers.range) {
      st.stats.rangeRequests++;
      const r = parseRange(req.headers.range, m.size);
      if (r === 'bad') {
        res.writeHead(416, { 'Content-Range': `bytes */${m.size}`, 'Content-Length': 0 });
        return res.end();
      }
      if (r) {
        ({ start, end } = r);
        status = 206;
        headers['Content-Range'] = `bytes ${start}-${end}/${m.size}`;
      }
    }
    let len = m.size === 0 ? 0 : end - start + 1;
    if (f && f.truncate !== undefined) len = Math.min(len, f.truncate);
    // chunked: no Content-Length, so only the client's own count can enforce a cap.
    if (!(f && f.chunked)) headers['Content-Length'] = len;
    res.writeHead(status, headers);
    if (req.method === 'HEAD') return res.end();

    const key = keyOf(m.seed);
    const cutAfter = f && f.cutAfter !== undefined ? f.cutAfter : Infinity;
    const stallAfter = f && f.stallAfter !== undefined ? f.stallAfter : Infinity;
    const rate = f && f.bytesPerSec ? f.bytesPerSec : 0;
    const flip = f && f.corrupt ? Math.floor(len / 2) : -1;
    let sent = 0;
    let closed = false;
    res.on('close', () => { closed = true; });
    st.stats.inFlight++;
    st.stats.maxInFlight = Math.max(st.stats.maxInFlight, st.stats.inFlight);
    try {
      while (sent < len && !closed) {
        let n = Math.min(CHUNK, len - sent);
        if (rate) n = Math.min(n, Math.max(1, Math.floor(rate / 10)));
        if (sent + n > cutAfter) n = cutAfter - sent;
        if (sent + n > stallAfter) n = stallAfter - sent;
        if (n > 0) {
          const buf = streamBytes(key, start + sent, n);
          if (flip >= sent && flip < sent + n) buf[flip - sent] ^= 0x5a;
          const ok = res.write(buf);
          sent += n;
          st.stats.bytesServed += n;
          ids.bytes += n;
          if (!ok) await drainOrClose(res);
        }
        if (sent >= stallAfter) {
          // Hold the connection, sending nothing, until the client closes it.
          if (!closed) await new Promise((resolve) => res.once('close', resolve));
          return;
        }
        if (sent >= cutAfter) {
          // Let the bytes already written reach the client, then reset the connection.
          await sleep(20);
          res.socket?.destroy();
          return;
        }
        if (rate) await sleep(100);
      }
      if (!closed) {
        res.end();
        st.stats.downloadsOk++;
        ids.downloadsOk++;
      }
    } finally {
      st.stats.inFlight--;
    }
  }

  function drainOrClose(res) {
    return new Promise((resolve) => {
      const done = () => {
        res.off('drain', done);
        res.off('close', done);
        resolve();
      };
      res.on('drain', done);
      res.on('close', done);
    });
  }

  function sleep(ms) {
    return new Promise((r) => setTimeout(r, ms));
  }

  function readJson(req) {
    return new Promise((resolve, reject) => {
      const parts = [];
      let n = 0;
      req.on('data', (c) => {
        n += c.length;
        if (n > MAX_CONTROL_BODY) reject(new Error('control body too large'));
        else parts.push(c);
      });
      req.on('end', () => {
        const s = Buffer.concat(parts).toString('utf8');
        try {
          resolve(s === '' ? {} : JSON.parse(s));
        } catch (e) {
          reject(e);
        }
      });
      req.on('error', reject);
    });
  }

  async function handleControl(req, res, url) {
    const p = url.pathname.slice('/__control/'.length);
    const body = req.method === 'POST' ? await readJson(req) : {};
    if (p === 'media' && req.method === 'POST') {
      const list = Array.isArray(body) ? body : [body];
      const out = [];
      for (const spec of list) {
        const m = normMedia(spec);
        st.media.set(m.id, m);
        st.deleted.delete(m.id);
        const sha = await sha256Of(m);
        out.push({ id: m.id, size: m.size, sha256: sha.toString('hex'),
          sha256Base64: sha.toString('base64') });
      }
      return sendJson(res, 201, Array.isArray(body) ? out : out[0]);
    }
    const mm = /^media\/(.+)$/.exec(p);
    if (mm) {
      const id = decodeURIComponent(mm[1]);
      if (req.method === 'DELETE') {
        st.media.delete(id);
        st.deleted.add(id);
        return sendJson(res, 200, { success: true });
      }
      const m = findMedia(id);
      if (!m) return sendJson(res, 404, { error: 'unknown media' });
      const sha = await sha256Of(m);
      return sendJson(res, 200, { ...m, sha256: sha.toString('hex') });
    }
    if (p === 'faults') {
      st.faults = (body.faults ?? []).map((f) => ({ ...f, hits: 0 }));
      return sendJson(res, 200, { faults: st.faults.length });
    }
    if (p === 'auto') {
      if (body.enabled !== undefined) st.autoEnabled = !!body.enabled;
      if (body.rules) st.autoRules = body.rules;
      return sendJson(res, 200, { enabled: st.autoEnabled, rules: st.autoRules.length });
    }
    if (p === 'token') {
      if (body.token !== undefined) st.token = String(body.token);
      if (body.expired !== undefined) st.tokenExpired = !!body.expired;
      return sendJson(res, 200, { ok: true });
    }
    if (p === 'clock') {
      if (body.offset !== undefined) st.clockOffset = Number(body.offset);
      if (body.advance !== undefined) st.clockOffset += Number(body.advance);
      if (body.urlLifetime !== undefined) st.urlLifetime = Number(body.urlLifetime);
      return sendJson(res, 200, { now: now(), offset: st.clockOffset,
        urlLifetime: st.urlLifetime });
    }
    if (p === 'config') {
      if (body.usage !== undefined) st.usage = body.usage;
      if (body.latencyMs !== undefined) st.latencyMs = Number(body.latencyMs);
      if (body.noUserAgent !== undefined) st.noUserAgent = String(body.noUserAgent);
      if (body.phoneNumberId !== undefined) st.phoneNumberId = body.phoneNumberId;
      if (body.version !== undefined) st.version = String(body.version);
      return sendJson(res, 200, { ok: true });
    }
    if (p === 'stats') return sendJson(res, 200, st.stats);
    if (p === 'reset') {
      reset();
      return sendJson(res, 200, { ok: true });
    }
    return sendJson(res, 404, { error: `unknown control endpoint ${p}` });
  }

  async function handle(req, res) {
    const url = new URL(req.url, 'http://127.0.0.1');
    if (url.pathname.startsWith('/__control/')) return handleControl(req, res, url);
    st.stats.requests++;
    const ua = req.headers['user-agent'];
    if (!ua) st.stats.noUserAgent++;
    else st.stats.userAgents[ua] = (st.stats.userAgents[ua] ?? 0) + 1;
    if (st.latencyMs) await sleep(st.latencyMs);
    if (url.pathname === '/whatsapp_business/attachments/' &&
        (req.method === 'GET' || req.method === 'HEAD')) {
      return handleDownload(req, res, url);
    }
    const g = /^\/(v\d+\.\d+)\/([^/]+)\/?$/.exec(url.pathname);
    if (g) {
      let id;
      try {
        id = decodeURIComponent(g[2]);
      } catch {
        id = g[2];
      }
      if (req.method === 'GET') return handleLookup(req, res, url, id);
      if (req.method === 'DELETE') {
        const tok = bearerOf(req, url, true);
        if (tok !== st.token) {
          const e = graphErrorBody({ code: 190 });
          return sendJson(res, e.status, e.body);
        }
        if (!findMedia(id)) {
          const e = unknownIdError(id);
          return sendJson(res, e.status, e.body);
        }
        st.media.delete(id);
        st.deleted.add(id);
        return sendJson(res, 200, { success: true });
      }
    }
    // Graph answers unknown paths with an error object too.
    const e = unknownIdError(url.pathname.split('/').filter(Boolean).pop() ?? '');
    return sendJson(res, e.status, e.body);
  }

  const server = http.createServer((req, res) => {
    handle(req, res).catch((e) => {
      if (!res.headersSent) sendJson(res, 500, { error: String(e && e.message) });
      else res.destroy();
    });
  });
  server.keepAliveTimeout = 5000;
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 0, '127.0.0.1', resolve);
  });
  const sockets = new Set();
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  return {
    port: server.address().port,
    close: () => new Promise((resolve) => {
      for (const s of sockets) s.destroy();
      if (foreign) foreign.close();
      foreign?.closeAllConnections?.();
      server.close(() => resolve());
    }),
  };
}

function parseArgs(argv) {
  const o = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const v = () => {
      if (i + 1 >= argv.length) throw new Error(`${a} needs a value`);
      return argv[++i];
    };
    if (a === '--port') o.port = Number(v());
    else if (a === '--token') o.token = v();
    else if (a === '--url-lifetime') o.urlLifetime = Number(v());
    else if (a === '--phone-number-id') o.phoneNumberId = v();
    else if (a === '--no-auto') o.auto = false;
    else if (a === '-h' || a === '--help') o.help = true;
    else throw new Error(`unknown argument ${a}`);
  }
  return o;
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  let o;
  try {
    o = parseArgs(process.argv.slice(2));
  } catch (e) {
    process.stderr.write(`graph-fake: ${e.message}\n`);
    process.exit(2);
  }
  if (o.help) {
    process.stdout.write('usage: graph-fake.mjs [--port N] [--token T] [--url-lifetime S] ' +
      '[--phone-number-id PNID] [--no-auto]\n');
    process.exit(0);
  }
  const fake = await startGraphFake(o);
  process.stdout.write(`${JSON.stringify({ port: fake.port, ready: true })}\n`);
  const stop = () => fake.close().then(() => process.exit(0));
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  // Node's child_process pipes are socket pairs, a shell's are FIFOs.
  const stdin = fs.fstatSync(0);
  if (stdin.isFIFO() || stdin.isSocket()) {
    process.stdin.on('end', stop);
    process.stdin.on('error', stop);
    process.stdin.resume();
  }
}
