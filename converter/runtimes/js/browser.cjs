#!/usr/bin/env node
// Runs one TF.js artifact in headless Chromium for the convert toolkit (converter/runtimes/browser.py).
//
// Same framed protocol on stdin/stdout as runner.cjs (see frames.cjs); stdout carries nothing else.
// Commands (header.cmd):
//   load     {path, model_type: 'graph'|'layers', backend: 'webgl'|'wasm'|'cpu'|'webgpu', threads, simd,
//             chromium: executable, flags: [extra Chromium flags], tfjs_flags: {TF.js flag: value} or null}
//            -> the page's load reply + {browser: {chromium_version, executable, flags}}
//            or {error: 'unavailable: <reason>'} when the browser or the backend is not there
//   describe {}
//   run      {inputs} + bytes -> {outputs: [{name, dtype, shape, nbytes}]} + bytes
//   intermediates {names, feeds?, inputs} + bytes -> the named tensors, as runner.cjs's command reads them
//   time     {inputs, warmup_runs, warmup_seconds, min_runs, min_seconds, max_runs, max_seconds} + bytes
//            -> {latencies_ms, warmup_runs, memory: {after_warmup, after_timed}}
//   quit     {}
// The loopback page server (page_server.cjs) and Chromium (launched by playwright-core over a pipe)
// live as long as this process: quit, end of stdin, SIGTERM/SIGINT/SIGHUP close both. If this
// process is killed outright, Chromium sees its DevTools pipe close and exits by itself.
'use strict';

console.log = console.error; // keep stdout for the protocol
console.info = console.error;

const path = require('path');
const { Reader, readMessage, writeMessage } = require('./frames.cjs');
const { PageServer } = require('./page_server.cjs');

// Keep Chromium off the network (the machine has none but loopback) and free of first-run work.
const COMMON_FLAGS = ['--disable-background-networking', '--disable-component-update', '--disable-sync',
  '--no-first-run', '--no-default-browser-check', '--disable-quic'];
const BACKEND_FLAGS = {
  webgl: ['--enable-unsafe-swiftshader'], // allow WebGL on SwiftShader (software) when there is no GPU
  webgpu: ['--enable-unsafe-webgpu'],     // headless Chromium on Linux offers no WebGPU adapter without it
  wasm: [],
  cpu: [],
};

const state = { server: null, browser: null, page: null, info: null };

class Unavailable extends Error {}

function message(err) {
  const text = String(err && err.message ? err.message : err);
  // page.evaluate errors carry the call name and a page stack: keep the first line of the message
  return text.replace(/^page\.evaluate: (Error: )?/, '').split('\n')[0];
}

function nodeModules() {
  return path.dirname(path.dirname(path.dirname(require.resolve('@tensorflow/tfjs/package.json'))));
}

function packageVersions() {
  const versions = {};
  for (const name of ['@tensorflow/tfjs', '@tensorflow/tfjs-backend-wasm', '@tensorflow/tfjs-backend-webgpu', 'playwright-core']) {
    try { versions[name] = require(`${name}/package.json`).version; } catch (err) { versions[name] = null; }
  }
  return versions;
}

async function launch(header) {
  let chromium;
  try {
    ({ chromium } = require('playwright-core'));
  } catch (err) {
    throw new Unavailable(`the npm package playwright-core is not installed: ${message(err)}`);
  }
  const flags = [...COMMON_FLAGS, ...(BACKEND_FLAGS[header.backend] || []), ...(header.flags || [])];
  const started = process.hrtime.bigint();
  try {
    state.browser = await chromium.launch({
      executablePath: header.chromium, headless: true, chromiumSandbox: false, args: flags, timeout: 60000,
    });
  } catch (err) {
    throw new Unavailable(`Chromium (${header.chromium}) did not start: ${message(err)}`);
  }
  state.page = await state.browser.newPage();
  state.page.on('console', (m) => console.error(`page ${m.type()}: ${m.text()}`));
  state.page.on('pageerror', (err) => console.error(`page error: ${message(err)}`));
  state.page.on('crash', () => console.error('page crashed'));
  await state.page.goto(`${await state.server.start()}/`);
  await state.page.waitForFunction(() => window.convertPage !== undefined, null, { timeout: 60000 });
  const launchMs = Number(process.hrtime.bigint() - started) / 1e6; // Chromium up and the page ready
  return { chromium_version: state.browser.version(), executable: header.chromium, headless: true, launch_ms: launchMs,
    flags: ['--no-sandbox', ...flags], npm_packages: packageVersions() };
}

async function load(header) {
  if (state.browser) throw new Error('a model is already loaded in this driver');
  state.server = new PageServer(nodeModules());
  state.server.modelDir = path.resolve(header.path);
  const browser = await launch(header);
  let reply;
  try {
    reply = await state.page.evaluate((h) => window.convertPage.load(h),
      { model_type: header.model_type, backend: header.backend, threads: header.threads, simd: header.simd,
        tfjs_flags: header.tfjs_flags || null });
  } catch (err) {
    const reason = await state.page.evaluate(() => window.convertPage.unavailable()).catch(() => null);
    if (reason) throw new Unavailable(`the browser offers no ${header.backend} backend: ${reason}`);
    throw err;
  }
  state.info = { browser, ...(await state.page.evaluate(() => window.convertPage.describe())) };
  return { ...reply, browser };
}

// run and intermediates: the inputs served to the page, its outputs posted back (page.js)
async function run(header, blobs) {
  state.server.inputs = blobs;
  state.server.outputs = [];
  try {
    const call = { fn: header.cmd, inputs: header.inputs || [], names: header.names, feeds: header.feeds };
    const reply = await state.page.evaluate((h) => window.convertPage[h.fn](h), call);
    const buffers = reply.outputs.map((spec, i) => {
      const bytes = state.server.outputs[i];
      if (!bytes || bytes.length !== spec.nbytes) throw new Error(`output ${i} arrived with ${bytes ? bytes.length : 0} of ${spec.nbytes} bytes`);
      return bytes;
    });
    return [reply, buffers];
  } finally {
    state.server.inputs = [];
    state.server.outputs = [];
  }
}

async function time(header, blobs) {
  state.server.inputs = blobs;
  try {
    const { cmd, ...schedule } = header;
    return await state.page.evaluate((h) => window.convertPage.time(h), schedule);
  } finally {
    state.server.inputs = [];
  }
}

async function handle(header, blobs) {
  if (header.cmd === 'load') return [await load(header), []];
  if (!state.page) throw new Error('no model loaded: send load first');
  switch (header.cmd) {
    case 'describe': return [{ ...(await state.page.evaluate(() => window.convertPage.describe())), browser: state.info.browser }, []];
    case 'run': return run(header, blobs);
    case 'intermediates': return run(header, blobs);
    case 'time': return [await time(header, blobs), []];
    default: throw new Error(`unknown command '${header.cmd}'`);
  }
}

async function shutdown() {
  const { browser, server } = state;
  state.browser = null;
  state.server = null;
  if (browser) await browser.close().catch(() => {});
  if (server) await server.stop().catch(() => {});
}

async function main() {
  const reader = new Reader(process.stdin);
  for (;;) {
    let msg;
    try {
      msg = await readMessage(reader);
    } catch (err) {
      writeMessage(process.stdout, { error: `bad message: ${message(err)}` });
      break;
    }
    if (msg === null || msg.header.cmd === 'quit') break;
    try {
      const [reply, buffers] = await handle(msg.header, msg.blobs);
      writeMessage(process.stdout, reply, buffers);
    } catch (err) {
      writeMessage(process.stdout, { error: err instanceof Unavailable ? `unavailable: ${message(err)}` : message(err) });
    }
  }
  await shutdown();
}

process.on('unhandledRejection', (err) => {
  console.error(`browser driver: unhandled rejection: ${err && err.stack ? err.stack : err}`);
  shutdown().finally(() => process.exit(1));
});

main().then(() => process.exit(0), (err) => {
  console.error(`browser driver: ${err && err.stack ? err.stack : err}`);
  shutdown().finally(() => process.exit(1));
});
