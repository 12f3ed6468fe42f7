// http-test-server.mjs - a loopback HTTP server for the http adapter's tests.
//
// Usage: node http-test-server.mjs [port]   (0 or nothing: any free port)
// Prints "PORT <n>" on stdout once listening, then serves until stdin closes or a signal.
//
//   GET  /bytes?n=N        N bytes of the pattern (i * 7 + 3) & 255, Content-Type application/x-test
//   PUT|POST /echo         answers JSON {"method","len","sha256","ua","auth","hdr","expect"} of
//                          the request
//   GET  /status/CODE      that status with a small XML body
//   GET  /slow?ms=M        answers after M ms
//   GET  /cut              destroys the connection without answering
//   GET  /stall?after=N    announces 2N bytes of the pattern, sends N, then nothing (open)
//   GET  /drip?chunks=C&ms=M  C chunks of 1000 bytes of the pattern, one every M ms
//   GET  /headers          answers X-One: 1 and X-Two: two words
//   GET  /conn             answers the client's remote port (to observe connection reuse)
//   GET  /target           answers the request target as received: "/target", or the absolute
//                          URL a client sends to a proxy (this server acts as that proxy)
import http from 'node:http';
import crypto from 'node:crypto';

function pattern(n) {
  const b = Buffer.allocUnsafe(n);
  for (let i = 0; i < n; i++) b[i] = (i * 7 + 3) & 255;
  return b;
}

const server = http.createServer((req, res) => {
  const url = new URL(req.url, 'http://127.0.0.1');
  const path = url.pathname;
  if (path === '/bytes') {
    const n = Number(url.searchParams.get('n') || '0');
    res.writeHead(200, { 'Content-Type': 'application/x-test', 'Content-Length': n });
    // Write in slices so that backpressure in the client is exercised.
    const body = pattern(n);
    let off = 0;
    const pump = () => {
      while (off < n) {
        const end = Math.min(n, off + 65536);
        const ok = res.write(body.subarray(off, end));
        off = end;
        if (!ok) return res.once('drain', pump);
      }
      res.end();
    };
    return pump();
  }
  if (path === '/echo') {
    const h = crypto.createHash('sha256');
    let len = 0;
    req.on('data', (c) => { h.update(c); len += c.length; });
    req.on('end', () => {
      const out = JSON.stringify({
        method: req.method, len, sha256: h.digest('hex'),
        ua: req.headers['user-agent'] || '', auth: req.headers['authorization'] || '',
        hdr: req.headers['x-test'] || '', expect: req.headers['expect'] || '',
      });
      res.writeHead(200, { 'Content-Type': 'application/json' });
      res.end(out);
    });
    return;
  }
  const m = /^\/status\/(\d{3})$/.exec(path);
  if (m) {
    res.writeHead(Number(m[1]), { 'Content-Type': 'application/xml' });
    return res.end(`<Error><Code>Code${m[1]}</Code></Error>`);
  }
  if (path === '/slow') {
    const t = setTimeout(() => { res.writeHead(200); res.end('late'); },
      Number(url.searchParams.get('ms') || '1000'));
    res.on('close', () => clearTimeout(t));
    return;
  }
  if (path === '/cut') return req.socket.destroy();
  if (path === '/stall') {
    const n = Number(url.searchParams.get('after') || '1000');
    res.writeHead(200, { 'Content-Type': 'application/x-test', 'Content-Length': 2 * n });
    res.write(pattern(n));
    return;   // the rest never comes; the client has to give up
  }
  if (path === '/drip') {
    const chunks = Number(url.searchParams.get('chunks') || '5');
    const body = pattern(chunks * 1000);
    let i = 0;
    res.writeHead(200, { 'Content-Type': 'application/x-test', 'Content-Length': body.length });
    const t = setInterval(() => {
      res.write(body.subarray(i * 1000, (i + 1) * 1000));
      if (++i === chunks) {
        clearInterval(t);
        res.end();
      }
    }, Number(url.searchParams.get('ms') || '100'));
    res.on('close', () => clearInterval(t));
    return;
  }
  if (path === '/headers') {
    res.writeHead(200, { 'X-One': '1', 'X-Two': '  two words  ' });
    return res.end('h');
  }
  if (path === '/target') {
    res.writeHead(200, { 'Content-Type': 'text/plain' });
    return res.end(req.url);
  }
  if (path === '/conn-drop') {
    // answers on a kept-alive connection, then closes it while the client holds it idle
    res.writeHead(200, { 'Content-Type': 'text/plain' });
    res.end(String(req.socket.remotePort));
    setTimeout(() => req.socket.destroy(), Number(url.searchParams.get('ms') || '100'));
    return;
  }
  if (path === '/conn') {
    res.writeHead(200, { 'Content-Type': 'text/plain' });
    return res.end(String(req.socket.remotePort));
  }
  res.writeHead(404);
  res.end('not found');
});
server.keepAliveTimeout = 30000;
server.listen(Number(process.argv[2] || 0), '127.0.0.1', () => {
  process.stdout.write(`PORT ${server.address().port}\n`);
});
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
process.on('SIGTERM', () => process.exit(0));
