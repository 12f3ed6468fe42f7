// fault-proxy.mjs - an HTTP proxy in front of an S3 endpoint that injects failures.
//
// Usage: node fault-proxy.mjs UPSTREAM_URL [RATE] [SEED]
//   UPSTREAM_URL  e.g. http://127.0.0.1:57480 (loopback only)
//   RATE          fraction of UploadPart and CompleteMultipartUpload requests that fail (0.1);
//                 failure kinds rotate, and the first Complete always gets error200
//   SEED          PRNG seed, so a run can be repeated (1)
// Prints "PORT <n>" once listening; exits when stdin closes.
//
// The Host header is forwarded unchanged, so SigV4 signatures made for the proxy's
// address still verify upstream. A failing request gets one of:
//   slowdown  503 with an S3 SlowDown XML body, not forwarded
//   internal  500 InternalError XML, not forwarded
//   cut       the client connection is destroyed before any answer (UploadPart: after
//             the body was forwarded, so the part may exist upstream: a retry overwrites it)
//   error200  Complete only: 200 OK whose body is an <Error> (InternalError), not forwarded
//
// GET /__proxy/log answers the JSON list of handled S3 requests:
//   {method, path, query, len, status, fault, sha (the x-amz-content-sha256 header)}
import http from 'node:http';

const upstream = new URL(process.argv[2] || 'http://127.0.0.1:57480');
if (upstream.hostname !== '127.0.0.1' && upstream.hostname !== 'localhost') {
  console.error('fault-proxy: upstream must be on loopback');
  process.exit(2);
}
const rate = Number(process.argv[3] ?? '0.1');
let seed = Number(process.argv[4] ?? '1') >>> 0 || 1;
const agent = new http.Agent({ keepAlive: true, maxSockets: 128 });
const log = [];

function rnd() {
  // xorshift32: deterministic for a seed.
  seed ^= seed << 13; seed >>>= 0;
  seed ^= seed >>> 17;
  seed ^= seed << 5; seed >>>= 0;
  return seed / 4294967296;
}

function xmlError(code, msg) {
  return `<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>${code}</Code>` +
    `<Message>${msg}</Message><RequestId>fault-proxy</RequestId></Error>`;
}

function classify(req, url) {
  const q = url.searchParams;
  if (req.method === 'PUT' && q.has('partNumber') && q.has('uploadId')) return 'part';
  if (req.method === 'POST' && q.has('uploadId')) return 'complete';
  return 'other';
}

// Whether a request fails is random; which failure it gets rotates, so that even a short
// run sees every kind. The first Complete of a run (with RATE > 0) always gets error200.
const rotation = { part: ['slowdown', 'internal', 'cut'],
  complete: ['error200', 'slowdown', 'internal', 'cut'] };
const turn = { part: 0, complete: 0 };
let completes = 0;
function pickFault(kind) {
  if (kind === 'other' || rate <= 0) return null;
  if (kind === 'complete' && completes++ === 0) return rotation.complete[turn.complete++ % 4];
  if (rnd() >= rate) return null;
  const list = rotation[kind];
  return list[turn[kind]++ % list.length];
}

function forward(req, res, entry, cutAfter) {
  const up = http.request({
    host: upstream.hostname, port: upstream.port, method: req.method, path: req.url,
    headers: req.headers, agent,
  }, (ur) => {
    entry.status = ur.statusCode;
    if (cutAfter) {
      ur.resume();
      ur.on('end', () => req.socket.destroy());
      return;
    }
    res.writeHead(ur.statusCode, ur.headers);
    ur.pipe(res);
  });
  up.on('error', (e) => {
    entry.status = 502;
    if (!res.headersSent) res.writeHead(502, { 'Content-Type': 'text/plain' });
    res.end(String(e));
  });
  req.pipe(up);
}

const server = http.createServer((req, res) => {
  const url = new URL(req.url, 'http://proxy');
  if (url.pathname === '/__proxy/log') {
    res.writeHead(200, { 'Content-Type': 'application/json' });
    return res.end(JSON.stringify(log));
  }
  const kind = classify(req, url);
  const fault = pickFault(kind);
  const entry = {
    method: req.method, path: url.pathname, query: url.search,
    len: Number(req.headers['content-length'] || 0), status: 0, fault,
    sha: String(req.headers['x-amz-content-sha256'] || ''),
  };
  log.push(entry);
  if (!fault) return forward(req, res, entry, false);
  if (fault === 'cut' && kind === 'part') return forward(req, res, entry, true);
  // Every other fault answers without forwarding, after reading the body.
  req.resume();
  req.on('end', () => {
    if (fault === 'cut') return req.socket.destroy();
    const [status, body] = fault === 'slowdown' ? [503, xmlError('SlowDown', 'Please reduce your request rate.')]
      : fault === 'internal' ? [500, xmlError('InternalError', 'We encountered an internal error.')]
        : [200, xmlError('InternalError', 'We encountered an internal error. Please try again.')];
    entry.status = status;
    res.writeHead(status, { 'Content-Type': 'application/xml', 'Content-Length': Buffer.byteLength(body) });
    res.end(body);
  });
});
server.keepAliveTimeout = 30000;
server.listen(0, '127.0.0.1', () => process.stdout.write(`PORT ${server.address().port}\n`));
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
process.on('SIGTERM', () => process.exit(0));
