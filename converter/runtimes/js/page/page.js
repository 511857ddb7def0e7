// The page side of the browser runtime (converter/runtimes/browser.py, driven by ../browser.cjs).
//
// window.convertPage.{load, run, intermediates, time, describe} are called by the driver with page.evaluate. Input
// tensors are fetched from /io/in/<i> and outputs posted to /io/out/<i> as raw bytes, so no tensor
// goes through the DevTools protocol as JSON. Latency is measured as tensorflow/tfjs
// e2e/benchmarks/benchmark_util.js does: predict/execute plus the awaited data() of every output,
// under performance.now().
'use strict';

(function () {
  const ARRAY_TYPES = { float32: Float32Array, int32: Int32Array, bool: Uint8Array };
  const BUNDLES = { wasm: '/lib/tfjs-backend-wasm/tf-backend-wasm.min.js', webgpu: '/lib/tfjs-backend-webgpu/tf-backend-webgpu.min.js' };
  const state = { model: null, modelType: null, useAsync: false, metadata: null, unavailable: null, concurrency: null, flags: null };

  function loadScript(src) {
    return new Promise((resolve, reject) => {
      const script = document.createElement('script');
      script.src = src;
      script.onload = resolve;
      script.onerror = () => reject(new Error(`cannot load ${src}`));
      document.head.appendChild(script);
    });
  }

  /** Why WebGPU is not offered here, or null when an adapter is available. */
  async function webgpuMissing() {
    if (!navigator.gpu) return 'navigator.gpu is undefined: this Chromium exposes no WebGPU';
    let adapter = null;
    try {
      adapter = await navigator.gpu.requestAdapter();
    } catch (err) {
      return `navigator.gpu.requestAdapter() failed: ${err && err.message ? err.message : err}`;
    }
    return adapter ? null : 'navigator.gpu.requestAdapter() returned no adapter';
  }

  /**
   * tfjs-backend-wasm caps its thread pool at navigator.hardwareConcurrency / 2 (it assumes two hardware
   * threads per core), so on a 2-core machine it runs 1 thread whatever setThreadsCount asks. To run
   * the thread count asked for, the page reports 2 x threads logical cores when it has fewer; the
   * real and the reported counts are recorded in the settings.
   */
  function liftThreadCap(threads) {
    const real = navigator.hardwareConcurrency;
    if (real >= 2 * threads) return;
    Object.defineProperty(Navigator.prototype, 'hardwareConcurrency', { get: () => 2 * threads, configurable: true });
    state.concurrency = { real, reported: 2 * threads };
  }

  async function setBackend(name, threads, simd, flags) {
    if (flags && Object.keys(flags).length) {
      tf.env().setFlags(flags); // e.g. {WEBGL_FORCE_F16_TEXTURES: true} or {WEBGL_PACK: false}
      state.flags = flags;
    }
    if (name === 'webgpu') {
      const missing = await webgpuMissing();
      if (missing) { state.unavailable = missing; throw new Error(`WebGPU is not offered: ${missing}`); }
    }
    if (BUNDLES[name]) await loadScript(BUNDLES[name]);
    if (name === 'wasm') {
      tf.wasm.setWasmPaths('/lib/tfjs-backend-wasm/');
      if (simd === false) tf.env().set('WASM_HAS_SIMD_SUPPORT', false); // the plain .wasm build, which has no threads
      if (threads) {
        liftThreadCap(threads);
        tf.wasm.setThreadsCount(threads);
      }
    }
    if (!(await tf.setBackend(name))) throw new Error(`TF.js backend '${name}' failed to initialise in the browser`);
    await tf.ready();
  }

  function webglSettings() {
    const env = tf.env();
    const settings = {
      webgl_version: env.getNumber('WEBGL_VERSION'),
      render_float32_capable: env.getBool('WEBGL_RENDER_FLOAT32_CAPABLE'),
      render_float32_enabled: env.getBool('WEBGL_RENDER_FLOAT32_ENABLED'),
      force_f16_textures: env.getBool('WEBGL_FORCE_F16_TEXTURES'),
      pack: env.getBool('WEBGL_PACK'),
    };
    const gl = tf.backend().gpgpu && tf.backend().gpgpu.gl;
    if (gl) {
      const info = gl.getExtension('WEBGL_debug_renderer_info');
      settings.renderer = info ? gl.getParameter(info.UNMASKED_RENDERER_WEBGL) : gl.getParameter(gl.RENDERER);
      const highp = gl.getShaderPrecisionFormat(gl.FRAGMENT_SHADER, gl.HIGH_FLOAT);
      settings.fragment_highp_float_bits = highp ? highp.precision : null;
    }
    // float32 textures when rendering to them works, else half floats (about 3 significant digits)
    settings.texture_float_bits = settings.render_float32_enabled && !settings.force_f16_textures ? 32 : 16;
    return settings;
  }

  async function backendSettings() {
    const backend = tf.getBackend();
    const settings = { backend, threads: 1, simd: false, cross_origin_isolated: self.crossOriginIsolated };
    if (state.flags) settings.tfjs_flags = state.flags;
    if (backend === 'wasm') {
      settings.simd = Boolean(await tf.env().getAsync('WASM_HAS_SIMD_SUPPORT'));
      settings.multithread_supported = Boolean(await tf.env().getAsync('WASM_HAS_MULTITHREAD_SUPPORT'));
      settings.threads = tf.wasm.getThreadsCount();
      const fetched = performance.getEntriesByType('resource').map((e) => e.name).filter((n) => n.endsWith('.wasm'));
      settings.wasm_binary = fetched.length ? fetched[fetched.length - 1].split('/').pop() : null;
      settings.tfjs_backend_wasm_version = tf.wasm.version_wasm || null;
      if (state.concurrency) settings.hardware_concurrency = state.concurrency;
    } else if (backend === 'webgl') {
      Object.assign(settings, webglSettings());
    } else if (backend === 'webgpu') {
      const adapter = await navigator.gpu.requestAdapter();
      const info = adapter && adapter.info ? adapter.info : {};
      settings.adapter = { vendor: info.vendor || null, architecture: info.architecture || null, description: info.description || null };
    }
    return settings;
  }

  function modelInfo() {
    const m = state.model;
    const io = (list) => list.map((t) => ({ name: t.name, dtype: t.dtype, shape: t.shape }));
    return { model_type: state.modelType, model_inputs: io(m.inputs), model_outputs: io(m.outputs), user_metadata: state.metadata };
  }

  function memory() {
    const m = tf.memory();
    const snapshot = { numBytes: m.numBytes, numTensors: m.numTensors, numDataBuffers: m.numDataBuffers };
    if (m.numBytesInGPU !== undefined) snapshot.numBytesInGPU = m.numBytesInGPU;
    return snapshot;
  }

  // tfjs 4.22's loader fetches every weight shard and awaits all their headers before it reads any body; over
  // HTTP/1.1 Chromium opens 6 connections per host, and a connection whose body is unread is not released, so a
  // model with more than 6 shards of 4 MB never loads (measured: ResNet50's 23 shards stalled after the 6th). Each
  // response is read whole before it is handed over, which releases its connection.
  async function fetchWhole(url, init) {
    const response = await fetch(url, init);
    const body = await response.arrayBuffer();
    return new Response(body, { status: response.status, statusText: response.statusText, headers: response.headers });
  }

  async function load(header) {
    if (state.model) throw new Error('a model is already loaded in this page');
    const start = performance.now();
    await setBackend(header.backend, header.threads, header.simd, header.tfjs_flags);
    if (header.model_type === 'graph') {
      state.model = await tf.loadGraphModel('/model/model.json', { fetchFunc: fetchWhole });
      state.metadata = state.model.metadata || null;
    } else if (header.model_type === 'layers') {
      state.model = await tf.loadLayersModel('/model/model.json', { fetchFunc: fetchWhole });
      state.metadata = state.model.getUserDefinedMetadata() || null;
    } else {
      throw new Error(`unknown model_type '${header.model_type}': use 'graph' or 'layers'`);
    }
    state.modelType = header.model_type;
    return { load_ms: performance.now() - start, ...modelInfo(), settings: await backendSettings(), memory_after_load: memory() };
  }

  async function fetchInputs(specs) {
    const tensors = [];
    for (let i = 0; i < specs.length; i++) {
      const spec = specs[i];
      const ArrayType = ARRAY_TYPES[spec.dtype];
      if (!ArrayType) throw new Error(`unsupported input dtype ${spec.dtype}: use float32, int32 or bool`);
      const response = await fetch(`/io/in/${i}`);
      if (!response.ok) throw new Error(`input ${i} could not be fetched: HTTP ${response.status}`);
      tensors.push(tf.tensor(new ArrayType(await response.arrayBuffer()), spec.shape, spec.dtype));
    }
    return tensors;
  }

  /** Run the model once; output tensors in model.outputs order. */
  async function infer(inputs) {
    const m = state.model;
    if (!m) throw new Error('no model loaded: send load first');
    if (inputs.length !== m.inputs.length) throw new Error(`the model takes ${m.inputs.length} input(s), got ${inputs.length}`);
    if (state.modelType === 'layers') {
      const out = m.predict(inputs.length === 1 ? inputs[0] : inputs);
      return Array.isArray(out) ? out : [out];
    }
    const feed = {};
    m.inputs.forEach((info, i) => { feed[info.name] = inputs[i]; });
    const names = m.outputs.map((o) => o.name);
    if (!state.useAsync) {
      try {
        const out = tf.tidy(() => m.execute(feed, names));
        return Array.isArray(out) ? out : [out];
      } catch (err) {
        // models with control flow or dynamic-shape ops must run through executeAsync
        if (!/executeAsync/.test(String(err && err.message))) throw err;
        state.useAsync = true;
      }
    }
    const out = await m.executeAsync(feed, names);
    return Array.isArray(out) ? out : [out];
  }

  /** Post each tensor's bytes to /io/out/<i>; their specs, named by `names`. */
  async function postOutputs(outputs, names) {
    const specs = [];
    for (let i = 0; i < outputs.length; i++) {
      const t = outputs[i];
      if (!(t.dtype in ARRAY_TYPES)) throw new Error(`output ${i} has dtype ${t.dtype}, which cannot be sent back`);
      const data = await t.data();
      const response = await fetch(`/io/out/${i}`, { method: 'POST', body: data });
      if (!response.ok) throw new Error(`output ${i} could not be posted: HTTP ${response.status}`);
      specs.push({ name: names ? names[i] : null, dtype: t.dtype, shape: t.shape, nbytes: data.byteLength });
    }
    return specs;
  }

  async function run(header) {
    const inputs = await fetchInputs(header.inputs || []);
    let outputs = [];
    try {
      outputs = await infer(inputs);
      const names = state.modelType === 'graph' ? state.model.outputs.map((o) => o.name) : state.model.outputNames;
      return { outputs: await postOutputs(outputs, names) };
    } finally {
      tf.dispose(outputs);
      tf.dispose(inputs);
    }
  }

  /**
   * The named tensors, as the Node runner's `intermediates` reads them: graph models, the named nodes' outputs
   * (model.execute), `feeds` naming the nodes the inputs stand for (default: the model's inputs); layers models,
   * the named layers' outputs (a sub-model), or with `feeds` one layer applied to the inputs.
   */
  async function intermediates(header) {
    const m = state.model;
    if (!m) throw new Error('no model loaded: send load first');
    const names = header.names || [];
    const inputs = await fetchInputs(header.inputs || []);
    const list = (out) => (Array.isArray(out) ? out : [out]);
    let outputs = [];
    try {
      if (state.modelType === 'graph') {
        const feedNames = header.feeds || m.inputs.map((info) => info.name);
        if (feedNames.length !== inputs.length) throw new Error(`${feedNames.length} feed name(s) for ${inputs.length} input tensor(s)`);
        const feed = {};
        feedNames.forEach((name, i) => { feed[name] = inputs[i]; });
        let out = null;
        if (!state.useAsync) {
          try {
            out = tf.tidy(() => m.execute(feed, names));
          } catch (err) {
            if (!/executeAsync/.test(String(err && err.message))) throw err;
            state.useAsync = true;
          }
        }
        outputs = list(out === null ? await m.executeAsync(feed, names) : out);
      } else if (header.feeds) {
        if (names.length !== 1) throw new Error('with feeds, name exactly one layer to apply');
        const layer = m.getLayer(names[0]);
        outputs = list(tf.tidy(() => layer.apply(inputs.length === 1 ? inputs[0] : inputs)));
      } else {
        const first = (output) => (Array.isArray(output) ? output[0] : output);
        const sub = tf.model({ inputs: m.inputs, outputs: names.map((name) => first(m.getLayer(name).output)) });
        outputs = list(sub.predict(inputs.length === 1 ? inputs[0] : inputs));
      }
      return { outputs: await postOutputs(outputs, names) };
    } finally {
      tf.dispose(outputs);
      tf.dispose(inputs);
    }
  }

  /** One timed inference: predict/execute, then every output read back with an awaited data(). */
  async function once(inputs) {
    const outputs = await infer(inputs);
    try {
      await Promise.all(outputs.map((t) => t.data()));
    } finally {
      tf.dispose(outputs);
    }
  }

  async function time(header) {
    const inputs = await fetchInputs(header.inputs || []);
    try {
      const seconds = (since) => (performance.now() - since) / 1000;
      let start = performance.now();
      let warmups = 0;
      while (warmups < (header.warmup_runs || 0) || seconds(start) < (header.warmup_seconds || 0)) {
        await once(inputs);
        warmups++;
      }
      const afterWarmup = memory();
      const latencies = [];
      start = performance.now();
      for (;;) {
        const t0 = performance.now();
        await once(inputs);
        latencies.push(performance.now() - t0);
        const n = latencies.length;
        if (n >= header.max_runs) break;
        if (n >= header.min_runs && seconds(start) >= Math.min(header.min_seconds, header.max_seconds)) break;
      }
      return { latencies_ms: latencies, warmup_runs: warmups, memory: { after_warmup: afterWarmup, after_timed: memory() } };
    } finally {
      tf.dispose(inputs);
    }
  }

  async function describe() {
    return {
      tfjs_version: tf.version.tfjs,
      user_agent: navigator.userAgent,
      hardware_concurrency: navigator.hardwareConcurrency,
      cross_origin_isolated: self.crossOriginIsolated,
      ...(state.model ? { ...modelInfo(), settings: await backendSettings(), memory: memory() } : { settings: null }),
    };
  }

  window.convertPage = { load, run, intermediates, time, describe, unavailable: () => state.unavailable };
})();
