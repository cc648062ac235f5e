// The course's networks in plain JavaScript, for the book's in-browser explorers (no kernel, no network).
//
// Every function here mirrors one in vaelib/ and is checked against PyTorch by tests/test_browser.py:
//   mlpModel(payload)   models.VAE and models.Autoencoder with L = 2: encode(x) and decode(z)
//   convDecoder(payload) the decoder of models.ConvVAE: decode(z), z of length L -> 784 pixels
//   gridCompleter(model) inpainting from the exact posterior of a 2-D model (inference.complete_on_grid)
//   bce, kl             losses.bce and losses.kl_to_standard_normal, for one image
//   mnistPreprocess     a drawing -> a 28x28 digit prepared as MNIST's were
// Weights arrive as the checkpoints store them, float16, and are widened to float32 exactly.
// Works in a browser (window.VaeNets) and in Node (module.exports), which the tests do not need.
(function (root) {
  "use strict";

  // ---- decoding the exported arrays ----------------------------------------------------------------
  function bytes(b64) {
    const text = atob(b64);
    const out = new Uint8Array(text.length);
    for (let i = 0; i < text.length; i++) out[i] = text.charCodeAt(i);
    return out;
  }

  let HALF = null; // all 65,536 float16 values as float32: a table makes widening 5 M weights fast
  function halfTable() {
    if (HALF) return HALF;
    HALF = new Float32Array(65536);
    for (let bits = 0; bits < 65536; bits++) {
      const sign = bits & 0x8000 ? -1 : 1;
      const exponent = (bits >> 10) & 0x1f;
      const fraction = bits & 0x3ff;
      HALF[bits] = exponent === 0 ? sign * Math.pow(2, -14) * (fraction / 1024)
        : exponent === 31 ? (fraction ? NaN : sign * Infinity)
        : sign * Math.pow(2, exponent - 15) * (1 + fraction / 1024);
    }
    return HALF;
  }

  function halves(b64) { // base64 of little-endian float16 -> Float32Array
    const raw = bytes(b64);
    const table = halfTable();
    const out = new Float32Array(raw.length / 2);
    for (let i = 0; i < out.length; i++) out[i] = table[raw[2 * i] | (raw[2 * i + 1] << 8)];
    return out;
  }

  function floats(b64) { // base64 of little-endian float32 -> Float32Array
    const raw = bytes(b64);
    return new Float32Array(raw.buffer, raw.byteOffset, raw.byteLength / 4);
  }

  function linear(spec) {
    return {out: spec.out, in: spec.in, weight: halves(spec.weight), bias: halves(spec.bias)};
  }

  // y = W x + b, W (out, in) row-major as in torch.nn.Linear. `nonzero` lists the x[i] != 0 (optional).
  function applyLinear(layer, x, y, nonzero) {
    const n = layer.in;
    for (let o = 0; o < layer.out; o++) {
      let sum = layer.bias[o];
      const row = o * n;
      if (nonzero) for (let k = 0; k < nonzero.length; k++) sum += layer.weight[row + nonzero[k]] * x[nonzero[k]];
      else for (let i = 0; i < n; i++) sum += layer.weight[row + i] * x[i];
      y[o] = sum;
    }
    return y;
  }

  const sigmoid = (v) => 1 / (1 + Math.exp(-v));

  // ---- the MLP models (models.VAE, models.Autoencoder), L = 2 ------------------------------------
  function mlpModel(payload) {
    const enc = payload.encoder;
    const hiddenIn = linear(enc.hidden), toMu = linear(enc.mu);
    const toLogvar = enc.logvar ? linear(enc.logvar) : null;
    const [first, second] = payload.decoder.map(linear);
    const latentDim = toMu.out;
    const h = new Float32Array(hiddenIn.out), d = new Float32Array(first.out);
    function decodeLogits(z, out) { // logits = W2 relu(W1 z + b1) + b2: z (L) -> (784)
      out = out || new Float32Array(784);
      applyLinear(first, z, d);
      for (let i = 0; i < d.length; i++) if (d[i] < 0) d[i] = 0;
      return applyLinear(second, d, out);
    }
    return {
      latentDim: latentDim,
      variational: toLogvar !== null,
      means: floats(payload.means), // (N, 2) test means, row-major
      // x (784) in [0, 1] -> {mu, logvar}; logvar is null for the autoencoder (its code is mu)
      encode(x) {
        const nonzero = [];
        for (let i = 0; i < x.length; i++) if (x[i] !== 0) nonzero.push(i);
        applyLinear(hiddenIn, x, h, nonzero); // (784) -> (400)
        for (let i = 0; i < h.length; i++) h[i] = enc.activation === "tanh" ? Math.tanh(h[i]) : Math.max(0, h[i]);
        const mu = Array.from(applyLinear(toMu, h, new Float32Array(latentDim))); // (400) -> (L)
        if (enc.code_relu) for (let i = 0; i < latentDim; i++) mu[i] = Math.max(0, mu[i]);
        const logvar = toLogvar ? Array.from(applyLinear(toLogvar, h, new Float32Array(latentDim))) : null;
        return {mu: mu, logvar: logvar};
      },
      decodeLogits: decodeLogits,
      // x_hat = sigmoid(logits): z (L) -> (784) in [0, 1]
      decode(z, out) {
        out = decodeLogits(z, out);
        for (let i = 0; i < 784; i++) out[i] = sigmoid(out[i]);
        return out;
      },
    };
  }

  // ---- the conv decoder (models.ConvVAE) ---------------------------------------------------------
  // z (L) -> Linear(L, 1024) -> ReLU -> (1024, 1, 1)
  //   -> ConvT(1024, 256, 4, s2) -> (256, 4, 4) -> ReLU -> ConvT(256, 128, 6, s2) -> (128, 12, 12) -> ReLU
  //   -> ConvT(128, 1, 6, s2) -> (1, 28, 28) -> sigmoid
  // A transposed convolution scatters: input pixel (c, y, x) adds v * W[c, :, ky, kx] to output pixel
  // (s*y + ky, s*x + kx) for every tap (ky, kx). We keep activations channels-last, (H, W, C), and
  // reorder W (C_in, C_out, k, k) to (C_in, k, k, C_out), so that one row of taps (fixed c, y, ky,
  // all kx and output channels) is one contiguous multiply-add of k * C_out numbers in both arrays.
  // ReLU leaves about half the inputs at 0, and a zero input scatters nothing: skipping them halves
  // the work. About 24 M multiply-adds per image without the skipping.
  function convDecoder(payload) {
    const input = linear(payload.input);
    const layers = payload.deconv.map((spec) => {
      const w = halves(spec.weight), k = spec.kernel, cin = spec.in, cout = spec.out;
      const reordered = new Float32Array(w.length); // (C_in, C_out, k, k) -> (C_in, k, k, C_out)
      for (let c = 0; c < cin; c++)
        for (let o = 0; o < cout; o++)
          for (let t = 0; t < k * k; t++) reordered[(c * k * k + t) * cout + o] = w[(c * cout + o) * k * k + t];
      return {in: cin, out: cout, kernel: k, stride: spec.stride, weight: reordered, bias: halves(spec.bias)};
    });
    const h = new Float32Array(input.out);
    // Buffers, channels-last: side 1 -> 4 -> 12 -> 28 ((n - 1) * stride + k).
    let side = 1;
    const buffers = layers.map((l) => { side = (side - 1) * l.stride + l.kernel; return new Float32Array(side * side * l.out); });

    // One transposed convolution, channels-last in and out; `src` is (n, n, C_in).
    function deconv(layer, src, n, dst) {
      const k = layer.kernel, s = layer.stride, cin = layer.in, cout = layer.out;
      const m = (n - 1) * s + k, w = layer.weight, rowLength = k * cout;
      for (let p = 0; p < m * m; p++) dst.set(layer.bias, p * cout);
      for (let y = 0; y < n; y++) for (let x = 0; x < n; x++) {
        const base = (y * n + x) * cin;
        for (let c = 0; c < cin; c++) {
          const v = src[base + c];
          if (v === 0) continue;
          for (let ky = 0; ky < k; ky++) {
            const o = ((s * y + ky) * m + s * x) * cout; // output (s*y + ky, s*x, 0): the row's start
            const t = (c * k + ky) * rowLength; // taps (c, ky, 0, 0)
            for (let j = 0; j < rowLength; j++) dst[o + j] += v * w[t + j];
          }
        }
      }
      return m;
    }

    return {
      latentDim: input.in,
      decode(z, out) {
        out = out || new Float32Array(784);
        applyLinear(input, z, h); // (L) -> (1024)
        for (let i = 0; i < h.length; i++) if (h[i] < 0) h[i] = 0;
        let src = h, n = 1;
        layers.forEach((layer, index) => {
          n = deconv(layer, src, n, buffers[index]);
          src = buffers[index];
          if (index < layers.length - 1) for (let i = 0; i < src.length; i++) if (src[i] < 0) src[i] = 0;
        });
        for (let i = 0; i < 784; i++) out[i] = sigmoid(src[i]); // (28, 28, 1): already row-major pixels
        return out;
      },
    };
  }

  // ---- the loss, for one image (vaelib/losses.py) ---------------------------------------------------
  const EPS = 1e-10; // the original's guard against log(0)
  function bce(xHat, x) { // -sum(x log(eps + x_hat) + (1 - x) log(eps + (1 - x_hat)))
    let sum = 0;
    for (let i = 0; i < x.length; i++) sum += x[i] * Math.log(EPS + xHat[i]) + (1 - x[i]) * Math.log(EPS + (1 - xHat[i]));
    return -sum;
  }
  function kl(mu, logvar) { // KL(N(mu, exp(logvar)) || N(0, I)) = -1/2 sum(1 + logvar - mu^2 - exp(logvar)), Kingma and Welling, App. B
    let sum = 0;
    for (let i = 0; i < mu.length; i++) sum += 1 + logvar[i] - mu[i] * mu[i] - Math.exp(logvar[i]);
    return -0.5 * sum;
  }
  function gaussian() { // a standard normal sample (Box-Muller)
    return Math.sqrt(-2 * Math.log(1 - Math.random())) * Math.cos(2 * Math.PI * Math.random());
  }

  // ---- a drawing, prepared as MNIST's digits were ------------------------------------------------
  // LeCun et al.: each digit was scaled, keeping its aspect ratio, to fit a 20x20 box (anti-aliased,
  // so its edges are grey), then placed in 28x28 so that its centre of mass falls on the centre.
  // `ink` is (size, size) in [0, 1]; returns 784 values in [0, 1], or null when nothing is drawn.
  function mnistPreprocess(ink, size) {
    let top = size, bottom = -1, left = size, right = -1;
    for (let y = 0; y < size; y++) for (let x = 0; x < size; x++) if (ink[y * size + x] > 0.02) {
      if (y < top) top = y; if (y > bottom) bottom = y; if (x < left) left = x; if (x > right) right = x;
    }
    if (bottom < 0) return null;
    const height = bottom - top + 1, width = right - left + 1;
    const scale = 20 / Math.max(height, width);
    const h = Math.max(1, Math.round(height * scale)), w = Math.max(1, Math.round(width * scale));
    // Area averaging: each small pixel is the mean of the part of the drawing it covers.
    const box = new Float64Array(h * w);
    const sy = height / h, sx = width / w;
    for (let Y = 0; Y < h; Y++) for (let X = 0; X < w; X++) {
      let sum = 0;
      const y0 = Y * sy, y1 = y0 + sy, x0 = X * sx, x1 = x0 + sx;
      for (let y = Math.floor(y0); y < Math.ceil(y1); y++) {
        const fy = Math.min(y + 1, y1) - Math.max(y, y0);
        for (let x = Math.floor(x0); x < Math.ceil(x1); x++) {
          const fx = Math.min(x + 1, x1) - Math.max(x, x0);
          sum += fy * fx * ink[(top + y) * size + left + x];
        }
      }
      box[Y * w + X] = sum / (sy * sx);
    }
    // Stroke darkness: MNIST's strokes reach 1 at their centre; rescale so the darkest pixel is 1.
    let peak = 0;
    for (const v of box) peak = Math.max(peak, v);
    let mass = 0, my = 0, mx = 0;
    for (let Y = 0; Y < h; Y++) for (let X = 0; X < w; X++) {
      const v = box[Y * w + X] / peak;
      box[Y * w + X] = v; mass += v; my += v * Y; mx += v * X;
    }
    // Shift (a whole number of pixels) that puts the centre of mass on pixel (14, 14), as in MNIST.
    const dy = Math.round(14 - my / mass), dx = Math.round(14 - mx / mass);
    const out = new Float32Array(784);
    for (let Y = 0; Y < h; Y++) for (let X = 0; X < w; X++) {
      const y = Y + dy, x = X + dx;
      if (y >= 0 && y < 28 && x >= 0 && x < 28) out[y * 28 + x] = Math.min(1, box[Y * w + X]);
    }
    return out;
  }

  // ---- inpainting by inference (vaelib.inference.complete_on_grid), a model with L = 2 ------------
  // The completion is the posterior mean E[sigmoid(logits(z)) | visible pixels], the posterior summed on
  // vaelib.grid's points (multiples of 0.05). Only where it has mass: a coarse grid (step 0.25 over
  // [-5, 5], decoded once) marks the coarse points within `margin` nats of its best, and the fine points
  // within 0.15 of them (every fine point lies within 0.125 of a coarse one) are decoded, and kept for
  // the next call. Elsewhere the posterior is so far below its peak that no pixel moves by 1e-6
  // (margin 20 and 40 give the same means to 1e-10; tests/test_browser.py checks against PyTorch).
  function gridCompleter(model, margin = 20) {
    const FINE = 0.05, RATIO = 5, HALF = 5, REACH = 3; // coarse step = RATIO * FINE = 0.25; REACH fine steps
    const side = Math.round(2 * HALF / (FINE * RATIO)) + 1; // 41 coarse points per axis
    const first = -Math.round(HALF / FINE); // the fine index of -5
    let coarse = null; // (side * side, 784) logits, decoded on the first call
    const cache = new Map(); // fine index "i,j" -> Float32Array(784) logits
    const LOG_2PI = Math.log(2 * Math.PI);
    const softplus = (l) => Math.max(l, 0) + Math.log1p(Math.exp(-Math.abs(l)));
    function logJoint(logits, offset, x, seen, z1, z2) { // log p(x_visible | z) + log p(z)
      let s = -0.5 * (z1 * z1 + z2 * z2) - LOG_2PI;
      for (let k = 0; k < seen.length; k++) {
        const l = logits[offset + seen[k]];
        s += x[seen[k]] * l - softplus(l);
      }
      return s;
    }
    function fineLogits(i, j) {
      const key = i + "," + j;
      let logits = cache.get(key);
      if (!logits) {
        if (cache.size > 12000) cache.clear(); // 12,000 x 784 floats: 38 MB at most
        logits = model.decodeLogits([i * FINE, j * FINE]);
        cache.set(key, logits);
      }
      return logits;
    }
    // x (784) in [0, 1], hidden (784) 1 where hidden -> {mean (784): visible pixels kept, meanZ, points}
    return function complete(x, hidden) {
      if (!coarse) {
        coarse = new Float32Array(side * side * 784);
        for (let a = 0; a < side; a++) for (let b = 0; b < side; b++) {
          model.decodeLogits([(first + RATIO * a) * FINE, (first + RATIO * b) * FINE], coarse.subarray((a * side + b) * 784, (a * side + b + 1) * 784));
        }
      }
      const seen = [];
      for (let i = 0; i < 784; i++) if (!hidden[i]) seen.push(i);
      const rough = new Float64Array(side * side);
      let best = -Infinity;
      for (let g = 0; g < side * side; g++) {
        const a = Math.floor(g / side), b = g % side;
        rough[g] = logJoint(coarse, g * 784, x, seen, (first + RATIO * a) * FINE, (first + RATIO * b) * FINE);
        best = Math.max(best, rough[g]);
      }
      const points = new Set(); // fine indices near a coarse point that counts
      for (let g = 0; g < side * side; g++) if (rough[g] > best - margin) {
        const ci = first + RATIO * Math.floor(g / side), cj = first + RATIO * (g % side);
        for (let i = ci - REACH; i <= ci + REACH; i++) for (let j = cj - REACH; j <= cj + REACH; j++) points.add(i + "," + j);
      }
      const list = Array.from(points, (key) => key.split(",").map(Number));
      const logs = list.map(([i, j]) => logJoint(fineLogits(i, j), 0, x, seen, i * FINE, j * FINE));
      const top = Math.max(...logs);
      const mean = new Float64Array(784), meanZ = [0, 0];
      let total = 0;
      list.forEach(([i, j], n) => {
        const w = Math.exp(logs[n] - top), logits = fineLogits(i, j);
        total += w;
        meanZ[0] += w * i * FINE; meanZ[1] += w * j * FINE;
        for (let p = 0; p < 784; p++) mean[p] += w * sigmoid(logits[p]);
      });
      const out = new Float32Array(784);
      for (let p = 0; p < 784; p++) out[p] = hidden[p] ? mean[p] / total : x[p];
      return {mean: out, meanZ: [meanZ[0] / total, meanZ[1] / total], points: list.length};
    };
  }

  // The test images, run-length coded by vaelib/web.py: a 0 byte is followed by a count of zero pixels.
  function unRunLength(b64, count) {
    const coded = bytes(b64), out = new Uint8Array(count * 784);
    let o = 0;
    for (let i = 0; i < coded.length; i++) {
      if (coded[i] === 0) { o += coded[++i]; continue; }
      out[o++] = coded[i];
    }
    return out;
  }

  const api = {bytes, halves, floats, mlpModel, convDecoder, gridCompleter, bce, kl, gaussian, mnistPreprocess, unRunLength};
  if (typeof module !== "undefined" && module.exports) module.exports = api;
  else root.VaeNets = api;
})(typeof window !== "undefined" ? window : this);
