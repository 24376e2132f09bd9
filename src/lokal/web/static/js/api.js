// HTTP to the server: the OpenAI protocol only, same origin, optional Bearer key.
// Failures become ApiError (the server answered with an error) or NetworkError (it did not answer);
// an abort by the user stays a DOMException named "AbortError" so callers can tell "stopped" apart.

export class ApiError extends Error {
  constructor({ message, type = null, code = null, param = null, status = 0 }) {
    super(message || "request failed");
    this.name = "ApiError";
    this.type = type;
    this.code = code;
    this.param = param;
    this.status = status;
  }

  static fromPayload(payload, status) {
    const err = payload && typeof payload.error === "object" && payload.error !== null ? payload.error : null;
    if (err) {
      return new ApiError({ message: String(err.message ?? ""), type: err.type ?? null, code: err.code ?? null,
        param: err.param ?? null, status });
    }
    // FastAPI's default shape, for servers other than lokal.
    if (payload && payload.detail !== undefined) {
      const detail = typeof payload.detail === "string" ? payload.detail : JSON.stringify(payload.detail);
      return new ApiError({ message: detail, status });
    }
    return null;
  }

  static async fromResponse(res) {
    const text = await res.text().catch(() => "");
    let payload = null;
    try { payload = JSON.parse(text); } catch { /* not JSON: keep the raw text */ }
    return ApiError.fromPayload(payload, res.status)
      ?? new ApiError({ message: text.trim().slice(0, 500) || res.statusText || "no response body", status: res.status });
  }
}

export class NetworkError extends Error {
  constructor(detail, during = "connecting") {
    super(`Network error while ${during}: ${detail}. Is \`lokal serve\` still running at ${location.origin}?`);
    this.name = "NetworkError";
  }
}

export const isAbort = (err) => err?.name === "AbortError";

export async function apiFetch(path, { method = "GET", body, apiKey, signal } = {}) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (apiKey) headers.Authorization = `Bearer ${apiKey}`;
  let res;
  try {
    res = await fetch(path, { method, headers, signal, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (err) {
    if (isAbort(err)) throw err;
    throw new NetworkError(err?.message || String(err));
  }
  if (!res.ok) throw await ApiError.fromResponse(res);
  return res;
}

export async function apiJson(path, options) {
  const res = await apiFetch(path, options);
  return res.json();
}

// Yields the data of each server-sent event: "data:" lines joined by "\n", dispatched at a blank line.
export async function* sseData(res) {
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let data = [];
  try {
    for (;;) {
      let chunk;
      try {
        chunk = await reader.read();
      } catch (err) {
        if (isAbort(err)) throw err;
        throw new NetworkError(err?.message || String(err), "streaming the answer");
      }
      if (chunk.done) break;
      buffer += chunk.value;
      let nl;
      while ((nl = buffer.indexOf("\n")) >= 0) {
        const line = buffer.slice(0, nl).replace(/\r$/, "");
        buffer = buffer.slice(nl + 1);
        if (line === "") {
          if (data.length) yield data.join("\n");
          data = [];
        } else if (line.startsWith("data:")) {
          data.push(line.slice(line.startsWith("data: ") ? 6 : 5));
        } // comments (":"), "event:", "id:" and "retry:" carry nothing the chat needs
      }
    }
    if (buffer.startsWith("data:")) data.push(buffer.slice(buffer.startsWith("data: ") ? 6 : 5));
    if (data.length) yield data.join("\n");
  } finally {
    reader.releaseLock();
  }
}

// POST /v1/chat/completions with stream=true. onDelta gets each content piece as it arrives.
export async function streamChat({ body, apiKey, signal, onDelta }) {
  const res = await apiFetch("/v1/chat/completions", {
    method: "POST", apiKey, signal,
    body: { ...body, stream: true, stream_options: { include_usage: true } },
  });
  const result = {
    finishReason: null, usage: null, model: null,
    // Set by lokal's router when the request named "auto": which model answered and why.
    routedTo: res.headers.get("x-lokal-routed-model"), intent: res.headers.get("x-lokal-intent"),
  };
  for await (const data of sseData(res)) {
    if (data === "[DONE]") break;
    let chunk;
    try {
      chunk = JSON.parse(data);
    } catch {
      throw new ApiError({ message: `the server sent an event that is not JSON: ${data.slice(0, 200)}`, status: res.status });
    }
    const failure = ApiError.fromPayload(chunk, res.status);
    if (failure) throw failure;
    result.model ??= chunk.model ?? null;
    if (chunk.usage) result.usage = chunk.usage;
    for (const choice of chunk.choices ?? []) {
      const text = choice.delta?.content;
      if (text) onDelta(text);
      if (choice.finish_reason) result.finishReason = choice.finish_reason;
    }
  }
  return result;
}
