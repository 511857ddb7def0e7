#!/usr/bin/env node
// Runs one TF.js artifact for the convert toolkit (converter/runtimes/tfjs.py).
//
// Protocol on stdin/stdout, both directions: a message is a 4-byte little-endian length, that many
// bytes of UTF-8 JSON header, then the raw bytes of the tensors the header lists, back to back
// (each tensor entry declares dtype, shape and nbytes). stdout carries nothing else: console.log
// is redirected to stderr. Commands (header.cmd):
//   load     {path, model_type: 'graph'|'layers', backend: 'cpu'|'wasm', threads}
//   describe {}
//   run      {inputs: [{dtype, shape, nbytes}]} + bytes -> {outputs: [{name, dtype, shape, nbytes}]} + bytes
//   time     {inputs, warmup_runs, warmup_seconds, min_runs, min_seconds, max_runs, max_seconds} + bytes
//            -> {latencies_ms: [...], warmup_runs}
//   intermediates {names, feeds?, inputs} + bytes -> {outputs: [{name, dtype, shape, nbytes}]} + bytes
//            graph models: the outputs of the named nodes (model.execute); `feeds` names the nodes the input
//            tensors stand for (default: the model's inputs), so that one node can be re-run on given inputs.
//            layers models: the outputs of the named layers (a sub-model); with `feeds`, `names` holds one
//            layer, applied to the input tensors.
//   quit     {}
// Every failure is answered {error: message}; the process keeps serving until quit or end of stdin.
'use strict';

console.log = console.error; // keep stdout for the protocol
console.info = console.error;

const fs = require('fs');
const path = require('path');
const tf = require('@tensorflow/tfjs');

const BYTES_PER_ELEMENT = { float32: 4, int32: 4, bool: 1 };
const ARRAY_TYPES = { float32: Float32Array, int32: Int32Array, bool: Uint8Array };

const state = { model: null, modelType: null, backend: null, useAsync: false, metadata: null };

// ----------------------------------------------------------------------------- framing
class Reader {
  constructor(stream) {
    this.chunks = [];
    this.length = 0;
    this.waiter = null;
    this.ended = false;
    stream.on('data', (chunk) => { this.chunks.push(chunk); this.length += chunk.length; this.wake(); });
    stream.on('end', () => { this.ended = true; this.wake(); });
  }

  wake() {
    if (this.waiter) { const w = this.waiter; this.waiter = null; w(); }
  }

  async read(n) {
    while (this.length < n) {
      if (this.ended) return null;
      await new Promise((resolve) => { this.waiter = resolve; });
    }
    const all = this.chunks.length === 1 ? this.chunks[0] : Buffer.concat(this.chunks);
    const out = all.subarray(0, n);
    const rest = all.subarray(n);
    this.chunks = rest.length ? [rest] : [];
    this.length = rest.length;
    return out;
  }
}

async function readMessage(reader) {
  const head = await reader.read(4);
  if (head === null) return null;
  const header = JSON.parse((await reader.read(head.readUInt32LE(0))).toString('utf8'));
  const blobs = [];
  for (const spec of header.inputs || []) {
    const bytes = await reader.read(spec.nbytes);
    if (bytes === null) throw new Error('stdin closed in the middle of a tensor');
    blobs.push(bytes);
  }
  return { header, blobs };
}

function writeMessage(header, buffers = []) {
  const json = Buffer.from(JSON.stringify(header), 'utf8');
  const head = Buffer.alloc(4);
  head.writeUInt32LE(json.length, 0);
  process.stdout.write(Buffer.concat([head, json, ...buffers]));
}

function toTensor(spec, bytes) {
  const ArrayType = ARRAY_TYPES[spec.dtype];
  if (!ArrayType) throw new Error(`unsupported input dtype ${spec.dtype}: use float32, int32 or bool`);
  const size = spec.shape.reduce((a, b) => a * b, 1);
  if (bytes.length !== size * BYTES_PER_ELEMENT[spec.dtype]) {
    throw new Error(`input of shape [${spec.shape}] ${spec.dtype} needs ${size * BYTES_PER_ELEMENT[spec.dtype]} bytes, got ${bytes.length}`);
  }
  // copy into a fresh, aligned ArrayBuffer
  const aligned = new Uint8Array(bytes.length);
  aligned.set(bytes);
  return tf.tensor(new ArrayType(aligned.buffer), spec.shape, spec.dtype);
}

// ----------------------------------------------------------------------------- loading
/** An IOHandler reading model.json and its weight shards from a local folder. */
function folderHandler(dir) {
  return {
    load: async () => {
      const modelJSON = JSON.parse(fs.readFileSync(path.join(dir, 'model.json'), 'utf8'));
      return tf.io.getModelArtifactsForJSON(modelJSON, async (manifest) => {
        const specs = [];
        const buffers = [];
        for (const group of manifest) {
          specs.push(...group.weights);
          for (const shard of group.paths) buffers.push(fs.readFileSync(path.join(dir, shard)));
        }
        const all = Buffer.concat(buffers);
        return [specs, all.buffer.slice(all.byteOffset, all.byteOffset + all.length)];
      });
    },
  };
}

async function setBackend(name, threads) {
  if (name === 'wasm') {
    const wasm = require('@tensorflow/tfjs-backend-wasm');
    const dir = path.dirname(require.resolve('@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm.wasm'));
    wasm.setWasmPaths(dir + path.sep);
    if (threads) wasm.setThreadsCount(threads);
  }
  if (!(await tf.setBackend(name))) throw new Error(`TF.js backend '${name}' failed to initialise`);
  await tf.ready();
}

async function backendSettings() {
  const settings = { backend: tf.getBackend(), threads: 1, simd: false };
  if (settings.backend === 'wasm') {
    const wasm = require('@tensorflow/tfjs-backend-wasm');
    settings.simd = Boolean(await tf.env().getAsync('WASM_HAS_SIMD_SUPPORT'));
    settings.multithread_supported = Boolean(await tf.env().getAsync('WASM_HAS_MULTITHREAD_SUPPORT'));
    settings.threads = wasm.getThreadsCount();
  }
  return settings;
}

async function load(header) {
  if (state.model) throw new Error('a model is already loaded in this runner');
  const start = process.hrtime.bigint();
  await setBackend(header.backend, header.threads);
  const handler = folderHandler(header.path);
  if (header.model_type === 'graph') {
    state.model = await tf.loadGraphModel(handler);
    state.metadata = state.model.metadata || null;
  } else if (header.model_type === 'layers') {
    state.model = await tf.loadLayersModel(handler);
    state.metadata = state.model.getUserDefinedMetadata() || null;
  } else {
    throw new Error(`unknown model_type '${header.model_type}': use 'graph' or 'layers'`);
  }
  state.modelType = header.model_type;
  state.backend = header.backend;
  const loadMs = Number(process.hrtime.bigint() - start) / 1e6;
  return { load_ms: loadMs, ...(await modelInfo()) };
}

async function modelInfo() {
  const m = state.model;
  const io = (list) => list.map((t) => ({ name: t.name, dtype: t.dtype, shape: t.shape }));
  return {
    model_type: state.modelType,
    model_inputs: io(m.inputs),
    model_outputs: io(m.outputs),
    user_metadata: state.metadata,
    settings: await backendSettings(),
  };
}

// ----------------------------------------------------------------------------- inference
/** Run the model once; returns output tensors in a stable order (model.outputs order). */
async function infer(inputs) {
  const m = state.model;
  if (!m) throw new Error('no model loaded: send load first');
  if (inputs.length !== m.inputs.length) {
    throw new Error(`the model takes ${m.inputs.length} input(s), got ${inputs.length}`);
  }
  if (state.modelType === 'layers') {
    const out = m.predict(inputs.length === 1 ? inputs[0] : inputs);
    return Array.isArray(out) ? out : [out];
  }
  const feed = {};
  m.inputs.forEach((info, i) => { feed[info.name] = inputs[i]; });
  const names = m.outputs.map((o) => o.name);
  if (!state.useAsync) {
    try {
      return asList(tf.tidy(() => m.execute(feed, names)));
    } catch (err) {
      // models with control flow or dynamic-shape ops must run through executeAsync
      if (!/executeAsync/.test(String(err && err.message))) throw err;
      state.useAsync = true;
    }
  }
  return asList(await m.executeAsync(feed, names));
}

function asList(out) {
  return Array.isArray(out) ? out : [out];
}

async function readOutputs(outputs) {
  const names = state.modelType === 'graph' ? state.model.outputs.map((o) => o.name) : state.model.outputNames;
  const specs = [];
  const buffers = [];
  for (let i = 0; i < outputs.length; i++) {
    const t = outputs[i];
    const data = await t.data();
    if (!(t.dtype in BYTES_PER_ELEMENT)) throw new Error(`output ${i} has dtype ${t.dtype}, which cannot be sent back`);
    const bytes = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
    specs.push({ name: names ? names[i] : null, dtype: t.dtype, shape: t.shape, nbytes: bytes.length });
    buffers.push(bytes);
  }
  return { specs, buffers };
}

async function run(tensors) {
  const outputs = await infer(tensors);
  try {
    const { specs, buffers } = await readOutputs(outputs);
    return [{ outputs: specs }, buffers];
  } finally {
    tf.dispose(outputs);
  }
}

/** The named intermediate tensors (see the header comment), read back under their names. */
async function intermediates(header, tensors) {
  const m = state.model;
  if (!m) throw new Error('no model loaded: send load first');
  const names = header.names || [];
  let outputs;
  if (state.modelType === 'graph') {
    const feedNames = header.feeds || m.inputs.map((info) => info.name);
    if (feedNames.length !== tensors.length) {
      throw new Error(`${feedNames.length} feed name(s) for ${tensors.length} input tensor(s)`);
    }
    const feed = {};
    feedNames.forEach((name, i) => { feed[name] = tensors[i]; });
    if (!state.useAsync) {
      try {
        outputs = asList(tf.tidy(() => m.execute(feed, names)));
      } catch (err) {
        if (!/executeAsync/.test(String(err && err.message))) throw err;
        state.useAsync = true;
      }
    }
    if (!outputs) outputs = asList(await m.executeAsync(feed, names));
  } else if (header.feeds) {
    if (names.length !== 1) throw new Error('with feeds, name exactly one layer to apply');
    const layer = m.getLayer(names[0]);
    outputs = asList(tf.tidy(() => layer.apply(tensors.length === 1 ? tensors[0] : tensors)));
  } else {
    const first = (output) => (Array.isArray(output) ? output[0] : output);
    const sub = tf.model({ inputs: m.inputs, outputs: names.map((name) => first(m.getLayer(name).output)) });
    outputs = asList(sub.predict(tensors.length === 1 ? tensors[0] : tensors));
  }
  try {
    const specs = [];
    const buffers = [];
    for (let i = 0; i < outputs.length; i++) {
      const t = outputs[i];
      if (!(t.dtype in BYTES_PER_ELEMENT)) throw new Error(`tensor ${names[i]} has dtype ${t.dtype}, which cannot be sent back`);
      const data = await t.data();
      const bytes = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
      specs.push({ name: names[i], dtype: t.dtype, shape: t.shape, nbytes: bytes.length });
      buffers.push(bytes);
    }
    return [{ outputs: specs }, buffers];
  } finally {
    tf.dispose(outputs);
  }
}

/** One timed inference: run and read every output back. */
async function once(tensors) {
  const outputs = await infer(tensors);
  try {
    for (const t of outputs) await t.data();
  } finally {
    tf.dispose(outputs);
  }
}

async function time(header, tensors) {
  const seconds = (since) => Number(process.hrtime.bigint() - since) / 1e9;
  let start = process.hrtime.bigint();
  let warmups = 0;
  while (warmups < (header.warmup_runs || 0) || seconds(start) < (header.warmup_seconds || 0)) {
    await once(tensors);
    warmups++;
  }
  const latencies = [];
  start = process.hrtime.bigint();
  for (;;) {
    const t0 = process.hrtime.bigint();
    await once(tensors);
    latencies.push(Number(process.hrtime.bigint() - t0) / 1e6);
    const n = latencies.length;
    const elapsed = seconds(start);
    if (n >= header.max_runs) break;
    if (n >= header.min_runs && elapsed >= Math.min(header.min_seconds, header.max_seconds)) break;
  }
  return { latencies_ms: latencies, warmup_runs: warmups, peak_rss_mb: peakRssMb() };
}

/** This process's own peak resident memory (VmHWM), in MiB: Linux resets it at exec, unlike maxRSS. */
function peakRssMb() {
  try {
    const match = /^VmHWM:\s+(\d+) kB/m.exec(fs.readFileSync('/proc/self/status', 'utf8'));
    if (match) return Number(match[1]) / 1024;
  } catch (err) { /* not Linux */ }
  return process.resourceUsage().maxRSS / 1024;
}

// ----------------------------------------------------------------------------- main loop
async function handle(header, tensors) {
  switch (header.cmd) {
    case 'load': return [await load(header), []];
    case 'describe': return [{
      tfjs_version: tf.version.tfjs,
      node_version: process.version,
      ...(state.model ? await modelInfo() : { settings: null }),
    }, []];
    case 'run': return run(tensors);
    case 'time': return [await time(header, tensors), []];
    case 'intermediates': return intermediates(header, tensors);
    default: throw new Error(`unknown command '${header.cmd}'`);
  }
}

async function main() {
  const reader = new Reader(process.stdin);
  for (;;) {
    let message;
    try {
      message = await readMessage(reader);
    } catch (err) {
      writeMessage({ error: `bad message: ${err && err.message ? err.message : err}` });
      process.exit(1);
    }
    if (message === null || message.header.cmd === 'quit') break;
    const tensors = [];
    try {
      (message.header.inputs || []).forEach((spec, i) => tensors.push(toTensor(spec, message.blobs[i])));
      const [reply, buffers] = await handle(message.header, tensors);
      writeMessage(reply, buffers);
    } catch (err) {
      writeMessage({ error: String(err && err.message ? err.message : err) });
    } finally {
      tf.dispose(tensors);
    }
  }
  if (state.model) state.model.dispose();
}

process.on('unhandledRejection', (err) => {
  console.error(`tfjs runner: unhandled rejection: ${err && err.stack ? err.stack : err}`);
  process.exit(1);
});

main().then(() => process.exit(0), (err) => {
  console.error(`tfjs runner: ${err && err.stack ? err.stack : err}`);
  process.exit(1);
});
