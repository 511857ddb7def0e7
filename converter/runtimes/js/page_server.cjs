// The loopback HTTP server the browser driver (browser.cjs) starts for one run: it serves the page,
// the TF.js bundles from node_modules, the artifact folder, and the tensors of the current call.
//
// Every response carries the cross-origin isolation headers (COOP same-origin + COEP require-corp),
// without which the page has no SharedArrayBuffer and the wasm backend runs one thread.
'use strict';

const fs = require('fs');
const http = require('http');
const path = require('path');

const PAGE_DIR = path.join(__dirname, 'page');
const LIBRARIES = ['tfjs', 'tfjs-backend-wasm', 'tfjs-backend-webgpu']; // served from @tensorflow/<name>/dist
const TYPES = { '.html': 'text/html', '.js': 'text/javascript', '.json': 'application/json', '.wasm': 'application/wasm' };
const ISOLATION = {
  'Cross-Origin-Opener-Policy': 'same-origin',
  'Cross-Origin-Embedder-Policy': 'require-corp',
  'Cross-Origin-Resource-Policy': 'same-origin',
  'Cache-Control': 'no-store',
};

/** `relative` inside `root`, or null when it would leave it. */
function inside(root, relative) {
  const full = path.resolve(root, '.' + path.sep + relative);
  return full === root || full.startsWith(root + path.sep) ? full : null;
}

class PageServer {
  constructor(nodeModules) {
    this.nodeModules = nodeModules;
    this.modelDir = null;
    this.inputs = [];   // Buffers the page fetches at /io/in/<i>
    this.outputs = [];  // Buffers the page posts to /io/out/<i>
    this.server = http.createServer((req, res) => this.handle(req, res).catch((err) => this.fail(res, 500, String(err))));
  }

  async start() {
    await new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(0, '127.0.0.1', resolve);
    });
    return `http://127.0.0.1:${this.server.address().port}`;
  }

  stop() {
    this.server.closeAllConnections();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }

  fail(res, code, message) {
    if (!res.headersSent) res.writeHead(code, { ...ISOLATION, 'Content-Type': 'text/plain' });
    res.end(message);
  }

  send(res, body, type) {
    res.writeHead(200, { ...ISOLATION, 'Content-Type': type || 'application/octet-stream', 'Content-Length': body.length });
    res.end(body);
  }

  sendFile(res, file) {
    if (file === null || !fs.existsSync(file) || !fs.statSync(file).isFile()) return this.fail(res, 404, 'not found');
    return this.send(res, fs.readFileSync(file), TYPES[path.extname(file)]);
  }

  async handle(req, res) {
    const url = new URL(req.url, 'http://localhost');
    const parts = decodeURIComponent(url.pathname).split('/').filter(Boolean);
    if (req.method === 'POST' && parts[0] === 'io' && parts[1] === 'out') {
      const chunks = [];
      for await (const chunk of req) chunks.push(chunk);
      this.outputs[Number(parts[2])] = Buffer.concat(chunks);
      return this.send(res, Buffer.from('ok'), 'text/plain');
    }
    if (req.method !== 'GET') return this.fail(res, 405, 'method not allowed');
    if (parts.length === 0) return this.sendFile(res, path.join(PAGE_DIR, 'index.html'));
    if (parts[0] === 'page' && parts.length === 2) return this.sendFile(res, inside(PAGE_DIR, parts[1]));
    if (parts[0] === 'lib' && parts.length === 3 && LIBRARIES.includes(parts[1])) {
      return this.sendFile(res, inside(path.join(this.nodeModules, '@tensorflow', parts[1], 'dist'), parts[2]));
    }
    if (parts[0] === 'model' && this.modelDir) return this.sendFile(res, inside(this.modelDir, parts.slice(1).join('/')));
    if (parts[0] === 'io' && parts[1] === 'in' && this.inputs[Number(parts[2])]) return this.send(res, this.inputs[Number(parts[2])]);
    return this.fail(res, 404, 'not found');
  }
}

module.exports = { PageServer, ISOLATION };
