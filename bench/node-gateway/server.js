// The Node peer of the throughput scenario (bench/run.sh): node:http for the
// server, one undici Pool (kept-alive connections) per backend, the calls made
// together with Promise.all, and the JSON bodies deep-merged in declaration
// order, the way fanout merges them: objects merge key by key, recursively;
// in any other collision the later body wins; a key keeps the place where it
// first appeared. JSON.parse and JSON.stringify keep insertion order, except
// that JS puts integer-like keys ("1", "42") first: bodies with such keys would
// come out in another order than fanout's (the benchmark's bodies have none).
//
//   node bench/node-gateway/server.js --listen 127.0.0.1:19285 \
//     --backends http://127.0.0.1:19301/data,http://127.0.0.1:19302/data,...
//
// GET /merged answers 200 with the merged object, or 502 if a call fails,
// answers a status >= 300 or a body that is not a JSON object.
'use strict';

const http = require('node:http');
const { Pool } = require('undici');

function arg(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 && i + 1 < process.argv.length ? process.argv[i + 1] : fallback;
}

const listen = arg('listen', '127.0.0.1:19285');
const backends = arg('backends', '').split(',').filter(Boolean).map((raw) => {
  const url = new URL(raw);
  return {
    path: url.pathname + url.search,
    pool: new Pool(url.origin, { keepAliveTimeout: 15_000, keepAliveMaxTimeout: 60_000, pipelining: 1 }),
  };
});
if (backends.length === 0) {
  console.error('server.js: --backends URL,URL,... is needed');
  process.exit(2);
}

function isObject(v) {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

function mergeInto(target, source) {
  for (const key of Object.keys(source)) {
    const value = source[key];
    if (isObject(value) && isObject(target[key])) {
      mergeInto(target[key], value);
    } else {
      target[key] = value; // an existing key keeps its place
    }
  }
  return target;
}

async function call(backend, signal) {
  const { statusCode, body } = await backend.pool.request({ path: backend.path, method: 'GET', signal });
  if (statusCode >= 300) {
    await body.dump();
    throw new Error(`${backend.path}: status ${statusCode}`);
  }
  const part = JSON.parse(await body.text());
  if (!isObject(part)) throw new Error(`${backend.path}: not a JSON object`);
  return part;
}

const server = http.createServer(async (req, res) => {
  if (req.method !== 'GET' || req.url !== '/merged') {
    res.writeHead(404, { 'content-type': 'text/plain' });
    res.end('not found\n');
    return;
  }
  // A failed call fails the request and cancels the others (fail fast).
  const abort = new AbortController();
  let text;
  try {
    const parts = await Promise.all(backends.map((b) => call(b, abort.signal).catch((err) => {
      abort.abort();
      throw err;
    })));
    const merged = {};
    for (const part of parts) mergeInto(merged, part);
    text = JSON.stringify(merged);
  } catch (err) {
    const message = `${err.message}\n`;
    res.writeHead(502, { 'content-type': 'text/plain', 'content-length': Buffer.byteLength(message) });
    res.end(message);
    return;
  }
  res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
});
server.keepAliveTimeout = 15_000;
server.headersTimeout = 20_000;
server.requestTimeout = 5_000;

const colon = listen.lastIndexOf(':');
server.listen(Number(listen.slice(colon + 1)), listen.slice(0, colon));

function shutdown() {
  server.close();
  server.closeAllConnections();
  Promise.all(backends.map((b) => b.pool.close())).finally(() => process.exit(0));
  setTimeout(() => process.exit(0), 2000).unref();
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
