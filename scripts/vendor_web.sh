#!/usr/bin/env bash
# Reproduces src/lokal/web/static/vendor/ from web-vendor/package-lock.json: the in-browser runtime the
# playground loads (transformers.js v3, which bundles onnxruntime-web) plus the ONNX Runtime WASM files and
# the licenses. Needs node + npm and access to the npm registry; users of lokal never run this.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
src="$root/web-vendor"
out="$root/src/lokal/web/static/vendor"

cd "$src"
npm ci --ignore-scripts --no-audit --no-fund >/dev/null
tjs="$src/node_modules/@huggingface/transformers"
version="$(node -p "require('$tjs/package.json').version")"
ort_version="$(node -p "require('$src/node_modules/onnxruntime-web/package.json').version")"

rm -rf "$out"
mkdir -p "$out/licenses"
# transformers.min.js is the self-contained ESM build (onnxruntime-web inside); the .jsep pair is the
# WASM backend with WebGPU (JSEP) support that it loads at run time from env.backends.onnx.wasm.wasmPaths.
cp "$tjs/dist/transformers.min.js" "$out/transformers.min.js"
cp "$tjs/dist/ort-wasm-simd-threaded.jsep.mjs" "$tjs/dist/ort-wasm-simd-threaded.jsep.wasm" "$out/"
cp "$tjs/LICENSE" "$out/licenses/transformers.js-LICENSE"
cp "$src/node_modules/@huggingface/jinja/LICENSE" "$out/licenses/huggingface-jinja-LICENSE"
# onnxruntime-web's npm package carries no LICENSE file; its package.json says MIT (ONNX Runtime's license).
cat > "$out/licenses/onnxruntime-web-LICENSE" <<'MIT'
MIT License

Copyright (c) Microsoft Corporation

Permission is hereby granted, free of charge, to any person obtaining a copy
of this software and associated documentation files (the "Software"), to deal
in the Software without restriction, including without limitation the rights
to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
copies of the Software, and to permit persons to whom the Software is
furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all
copies or substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
SOFTWARE.
MIT
cat > "$out/VERSIONS.json" <<JSON
{"@huggingface/transformers": "$version", "onnxruntime-web": "$ort_version"}
JSON
(cd "$out" && sha256sum transformers.min.js ort-wasm-simd-threaded.jsep.mjs ort-wasm-simd-threaded.jsep.wasm > SHA256SUMS)
du -sh "$out"
