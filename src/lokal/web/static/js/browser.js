// In-browser inference: the vendored transformers.js (ONNX Runtime Web inside) runs the catalog's web models
// in this page, on WebGPU when the browser gives an adapter, else on WASM. Nothing is fetched from the
// internet: remote models are off, models come from lokal's /static/models/<id>/, the runtime's .wasm from
// /static/vendor/. The runtime (~0.9 MB of JS, 21 MB of WASM) is loaded only when a pane first needs it.

import { ApiError, apiJson } from "./api.js";

const VENDOR = "/static/vendor/";
const MODELS = "/static/models/";

let runtime = null; // the transformers.js module, once imported
let backend = null; // { path, isolated, threads, adapter, note }
const loaded = new Map(); // model id -> Promise<{ tokenizer, model, dtype, path }>
const embedders = new Map(); // path -> Promise<pipeline>

export class BrowserError extends Error {
  constructor(message, title = "in-browser inference") {
    super(message);
    this.name = title;
  }
}

async function importRuntime() {
  if (runtime) return runtime;
  try {
    runtime = await import(`${VENDOR}transformers.min.js`);
  } catch (err) {
    throw new BrowserError(`could not load the bundled runtime from ${VENDOR} (${err?.message || err}); `
      + "is this lokal build missing src/lokal/web/static/vendor? (scripts/vendor_web.sh)");
  }
  const { env } = runtime;
  env.allowRemoteModels = false; // never the Hugging Face hub or a CDN
  env.allowLocalModels = true;
  env.localModelPath = MODELS;
  env.useBrowserCache = typeof caches !== "undefined"; // Cache Storage: the second load reads no bytes
  env.backends.onnx.wasm.wasmPaths = VENDOR;
  env.backends.onnx.wasm.proxy = false;
  return runtime;
}

// Which path the page will take: WebGPU when navigator.gpu gives an adapter, else WASM (threaded only
// when cross-origin isolated, which lokal's COOP/COEP headers make it). The note says what is missing.
export async function detectBackend() {
  if (backend) return backend;
  let adapter = null;
  let gpuNote = "";
  if (!("gpu" in navigator)) {
    gpuNote = "this browser has no WebGPU (navigator.gpu is missing)";
  } else {
    try {
      adapter = await Promise.race([navigator.gpu.requestAdapter(), new Promise((r) => setTimeout(() => r(null), 3000))]);
      if (!adapter) gpuNote = "WebGPU is present but gave no adapter (no GPU, or GPU disabled)";
    } catch (err) {
      gpuNote = `WebGPU adapter request failed: ${err?.message || err}`;
    }
  }
  const isolated = self.crossOriginIsolated === true;
  const threads = isolated ? Math.max(1, Math.min(4, navigator.hardwareConcurrency || 1)) : 1;
  const path = adapter ? "webgpu" : "wasm";
  let note = "";
  if (!adapter) {
    note = `${gpuNote}: using WASM`;
    note += isolated
      ? ` with ${threads} thread${threads === 1 ? "" : "s"}`
      : ", single-threaded, because the page is not cross-origin isolated (it needs the COOP/COEP headers "
        + "`lokal serve` sends; a proxy may have dropped them), so it is slower";
  }
  backend = { path, isolated, threads, adapter: adapter ? (adapter.info?.vendor || "webgpu adapter") : null, note };
  return backend;
}

export async function webModels(apiKey) {
  const body = await apiJson("/lokal/web/models", { apiKey });
  return body.data ?? [];
}

// The card of one web model, checked before anything heavy loads: a readable error when it cannot run here.
async function webCard(id, apiKey, onStatus) {
  let card;
  try {
    card = await apiJson(`/lokal/web/models/${encodeURIComponent(id)}`, { apiKey });
    if (!card.ready && card.downloadable) {
      // A catalog web build not in the cache yet: lokal downloads it (its downloader: resume, sha256), once.
      onStatus?.(`lokal is downloading ${id} into its cache (once)…`);
      card = await apiJson(`/lokal/web/models/${encodeURIComponent(id)}/pull`, { method: "POST", apiKey });
    }
  } catch (err) {
    if (err instanceof ApiError) throw err;
    throw new BrowserError(err?.message || String(err));
  }
  if (!card.ready) {
    throw new BrowserError(`the web model '${id}' is incomplete in lokal's cache (${card.missing.join(", ")} `
      + "missing); re-create it (`lokal model synth … --format web`) or pull it again", "web model incomplete");
  }
  return card;
}

function pickDtype(card, path) {
  // WebGPU prefers half-precision builds, WASM the int/fp32 ones; anything listed is loadable on both.
  const order = path === "webgpu" ? ["q4f16", "fp16", "q4", "fp32", "q8"] : ["q4", "q8", "fp32", "q4f16", "fp16"];
  return order.find((d) => card.dtypes.includes(d)) ?? card.dtypes[0];
}

function progressReporter(onProgress) {
  const files = new Map();
  return (event) => {
    if (event.status === "progress" || event.status === "done") {
      const prev = files.get(event.file) ?? { loaded: 0, total: 0 };
      files.set(event.file, {
        loaded: event.status === "done" ? Math.max(prev.total, prev.loaded) : event.loaded ?? prev.loaded,
        total: event.total ?? prev.total,
      });
      let loadedBytes = 0;
      let total = 0;
      for (const f of files.values()) {
        loadedBytes += f.loaded;
        total += f.total;
      }
      onProgress?.({ file: event.file, loaded: loadedBytes, total });
    }
  };
}

function explainLoadFailure(err, id) {
  const message = err?.message || String(err);
  if (/could not locate file|404|not found/i.test(message)) {
    return new BrowserError(`a file of the web model '${id}' could not be read from lokal: ${message}`, "web model incomplete");
  }
  return new BrowserError(`loading '${id}' in this browser failed: ${message}`);
}

export function loadModel(id, { apiKey, onProgress } = {}) {
  if (!loaded.has(id)) {
    const job = (async () => {
      const card = await webCard(id, apiKey, (text) => onProgress?.({ text }));
      if (card.task !== "chat-completion") throw new BrowserError(`'${id}' is an embedding model, not a chat model`);
      const [{ AutoTokenizer, AutoModelForCausalLM, env }, info] = await Promise.all([importRuntime(), detectBackend()]);
      env.backends.onnx.wasm.numThreads = info.threads;
      const dtype = pickDtype(card, info.path);
      const progress_callback = progressReporter(onProgress);
      try {
        const tokenizer = await AutoTokenizer.from_pretrained(id, { progress_callback });
        const model = await AutoModelForCausalLM.from_pretrained(id, {
          device: info.path, dtype, progress_callback, use_external_data_format: card.external_data,
        });
        return { tokenizer, model, dtype, path: info.path, card };
      } catch (err) {
        throw explainLoadFailure(err, id);
      }
    })();
    loaded.set(id, job);
    job.catch(() => loaded.delete(id)); // a failure is retried next time, not remembered
  }
  return loaded.get(id);
}

// Streams a chat answer from the model in this page. onDelta gets each decoded piece; returns usage-like facts.
export async function generateInPage({ id, messages, maxTokens, temperature, signal, apiKey, onProgress, onReady,
  onDelta }) {
  const { tokenizer, model, path } = await loadModel(id, { apiKey, onProgress });
  onReady?.();
  const { TextStreamer, InterruptableStoppingCriteria } = runtime;
  if (signal?.aborted) throw new DOMException("stopped", "AbortError");
  const inputs = tokenizer.apply_chat_template(messages, { add_generation_prompt: true, return_dict: true });
  const stopper = new InterruptableStoppingCriteria();
  const onAbort = () => stopper.interrupt();
  signal?.addEventListener("abort", onAbort);
  let pieces = 0;
  const streamer = new TextStreamer(tokenizer, {
    skip_prompt: true, skip_special_tokens: true,
    callback_function: (text) => {
      if (!text) return;
      pieces += 1;
      onDelta(text);
    },
  });
  const max = maxTokens ?? 256;
  try {
    const output = await model.generate({
      ...inputs, max_new_tokens: max, do_sample: temperature > 0, temperature: temperature > 0 ? temperature : undefined,
      streamer, stopping_criteria: stopper,
    });
    const promptTokens = inputs.input_ids.dims.at(-1);
    const completion = output.dims.at(-1) - promptTokens;
    if (signal?.aborted) throw new DOMException("stopped", "AbortError");
    return { path, usage: { prompt_tokens: promptTokens, completion_tokens: completion },
      finishReason: completion >= max ? "length" : "stop", pieces };
  } finally {
    signal?.removeEventListener("abort", onAbort);
  }
}

// ---- retrieval: MiniLM in the page -----------------------------------------------------------------------

export const EMBEDDER = "all-minilm-l6-v2";

async function embedder(apiKey, onProgress) {
  const info = await detectBackend();
  const key = info.path;
  if (!embedders.has(key)) {
    const job = (async () => {
      await webCard(EMBEDDER, apiKey);
      const { pipeline, env } = await importRuntime();
      env.backends.onnx.wasm.numThreads = info.threads;
      try {
        return await pipeline("feature-extraction", EMBEDDER, {
          device: info.path, dtype: "fp32", progress_callback: progressReporter(onProgress),
        });
      } catch (err) {
        throw explainLoadFailure(err, EMBEDDER);
      }
    })();
    embedders.set(key, job);
    job.catch(() => embedders.delete(key));
  }
  return embedders.get(key);
}

const passageVectors = new Map(); // passage text -> Float32Array (unit length)

// The k passages closest to the query by MiniLM cosine similarity, renumbered [1]..[k] in rank order; each
// keeps its place in the pasted text as `source` ("passage 3") and its similarity.
export async function rankPassages(query, passages, k, { apiKey, onProgress } = {}) {
  if (!passages.length) return [];
  const extract = await embedder(apiKey, onProgress);
  const todo = passages.map((p) => p.text).filter((t) => !passageVectors.has(t));
  for (let i = 0; i < todo.length; i += 16) {
    const batch = todo.slice(i, i + 16);
    const out = await extract(batch, { pooling: "mean", normalize: true });
    const rows = out.tolist();
    batch.forEach((text, j) => passageVectors.set(text, Float32Array.from(rows[j])));
  }
  const q = Float32Array.from((await extract([query], { pooling: "mean", normalize: true })).tolist()[0]);
  const scored = passages.map((p) => {
    const v = passageVectors.get(p.text);
    let dot = 0;
    for (let i = 0; i < v.length; i += 1) dot += v[i] * q[i];
    return { ...p, similarity: dot };
  });
  scored.sort((a, b) => b.similarity - a.similarity);
  return scored.slice(0, Math.max(1, k)).map((p, i) => ({
    n: i + 1, source: `passage ${p.n}`, text: p.text, similarity: p.similarity,
  }));
}
