// The book's latent-space explorers: they run in the reader's browser, with no kernel and no network.
//
// Plane explorer: drag a point over the 2-D latent space of an MLP VAE (beta = 0, 1 or 4); the decoder
// (z -> 400 ReLU -> 784 sigmoid, float16 weights exactly as in the checkpoints) runs here in JavaScript.
// Traversal explorer: ten sliders over the L = 10 conv VAEs; each frame was decoded by PyTorch
// (vaelib/web.py), because the conv decoder is too large for a page.
// window.vaeExplorer exposes decode() and the frame timings, for the browser tests.
(function () {
  "use strict";
  const DATA = window.VAE_EXPLORER_DATA;
  const DIGIT_COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                        "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];
  const PLANE_LIMIT = 4; // the plane shows [-4, 4]^2

  function bytes(b64) {
    const text = atob(b64);
    const out = new Uint8Array(text.length);
    for (let i = 0; i < text.length; i++) out[i] = text.charCodeAt(i);
    return out;
  }

  function float16ToFloat32(bits) { // IEEE 754 half -> float, exactly
    const sign = bits & 0x8000 ? -1 : 1;
    const exponent = (bits >> 10) & 0x1f;
    const fraction = bits & 0x3ff;
    if (exponent === 0) return sign * Math.pow(2, -14) * (fraction / 1024);
    if (exponent === 31) return fraction ? NaN : sign * Infinity;
    return sign * Math.pow(2, exponent - 15) * (1 + fraction / 1024);
  }

  function halfs(b64) {
    const raw = bytes(b64);
    const view = new Uint16Array(raw.buffer, raw.byteOffset, raw.byteLength / 2);
    const out = new Float32Array(view.length);
    for (let i = 0; i < view.length; i++) out[i] = float16ToFloat32(view[i]);
    return out;
  }

  function floats(b64) {
    const raw = bytes(b64);
    return new Float32Array(raw.buffer, raw.byteOffset, raw.byteLength / 4);
  }

  // ---- the MLP decoder ---------------------------------------------------------------------------
  const decoders = {};
  function decoder(beta) {
    if (!decoders[beta]) {
      const spec = DATA.plane[beta];
      decoders[beta] = {
        spec: spec,
        layers: spec.layers.map((l) => ({out: l.out, in: l.in, weight: halfs(l.weight), bias: halfs(l.bias)})),
        means: halfs(spec.means),
        hidden: new Float32Array(spec.layers[0].out),
        image: new Float32Array(784),
      };
    }
    return decoders[beta];
  }

  // x_hat = sigmoid(W2 relu(W1 z + b1) + b2), weights (out, in) row-major as in torch.nn.Linear
  function decode(beta, z) {
    const d = decoder(beta);
    const [first, second] = d.layers;
    for (let o = 0; o < first.out; o++) {
      let sum = first.bias[o];
      for (let i = 0; i < first.in; i++) sum += first.weight[o * first.in + i] * z[i];
      d.hidden[o] = sum > 0 ? sum : 0;
    }
    for (let o = 0; o < second.out; o++) {
      let sum = second.bias[o];
      const row = o * second.in;
      for (let i = 0; i < second.in; i++) sum += second.weight[row + i] * d.hidden[i];
      d.image[o] = 1 / (1 + Math.exp(-sum));
    }
    return d.image;
  }

  function drawDigit(canvas, image) {
    const context = canvas.getContext("2d");
    const pixels = context.createImageData(28, 28);
    for (let i = 0; i < 784; i++) {
      const v = Math.round(255 * Math.min(1, Math.max(0, image[i])));
      pixels.data.set([v, v, v, 255], 4 * i);
    }
    const small = document.createElement("canvas");
    small.width = small.height = 28;
    small.getContext("2d").putImageData(pixels, 0, 0);
    context.imageSmoothingEnabled = false;
    context.drawImage(small, 0, 0, canvas.width, canvas.height);
  }

  const timings = [];
  function timed(work) {
    const start = performance.now();
    work();
    timings.push(performance.now() - start);
  }

  // One radio button per beta in the explorer's .vae-betas box; choosing one sets state.beta.
  function betaButtons(root, betas, state, group, redraw) {
    for (const beta of betas) {
      const label = document.createElement("label");
      label.innerHTML = `<input type="radio" name="${group}" value="${beta}"> ${beta} `;
      const input = label.querySelector("input");
      input.checked = beta === state.beta;
      input.addEventListener("change", () => { state.beta = beta; redraw(); });
      root.querySelector(".vae-betas").appendChild(label);
    }
  }

  // ---- the plane explorer ------------------------------------------------------------------------
  function planeExplorer(root) {
    const labels = bytes(DATA.labels);
    root.innerHTML = `
      <div class="vae-row">
        <canvas class="vae-plane" width="420" height="420" aria-label="latent plane: drag the point"></canvas>
        <div class="vae-side">
          <canvas class="vae-digit" width="168" height="168" aria-label="decoded digit"></canvas>
          <p class="vae-readout"></p>
          <fieldset class="vae-betas"><legend>beta</legend></fieldset>
          <label><input type="checkbox" class="vae-show-means" checked> test-set means</label>
          <p class="vae-key">${DIGIT_COLORS.map((color, digit) =>
            `<span><i style="background: ${color}"></i>${digit}</span>`).join("")}</p>
          <p class="vae-timing"></p>
        </div>
      </div>`;
    const plane = root.querySelector(".vae-plane");
    const digit = root.querySelector(".vae-digit");
    const readout = root.querySelector(".vae-readout");
    const timing = root.querySelector(".vae-timing");
    const showMeans = root.querySelector(".vae-show-means");
    const betas = Object.keys(DATA.plane);
    const state = {beta: betas.includes("1") ? "1" : betas[0], z: [0, 0]};
    betaButtons(root, betas, state, "vae-beta", () => redraw());
    const toPixel = (v) => ((v + PLANE_LIMIT) / (2 * PLANE_LIMIT)) * plane.width;
    const toLatent = (p) => (p / plane.width) * 2 * PLANE_LIMIT - PLANE_LIMIT;

    function drawPlane() {
      const context = plane.getContext("2d");
      context.fillStyle = "#fff";
      context.fillRect(0, 0, plane.width, plane.height);
      context.strokeStyle = "#ccc";
      context.beginPath();
      context.moveTo(toPixel(0), 0); context.lineTo(toPixel(0), plane.height);
      context.moveTo(0, toPixel(0)); context.lineTo(plane.width, toPixel(0));
      context.stroke();
      if (showMeans.checked) {
        const means = decoder(state.beta).means;
        for (let n = 0; n < labels.length; n++) {
          context.fillStyle = DIGIT_COLORS[labels[n]];
          // z1 across, z2 up
          context.fillRect(toPixel(means[2 * n]) - 1, plane.height - toPixel(means[2 * n + 1]) - 1, 2, 2);
        }
      }
      context.fillStyle = "#000";
      context.beginPath();
      context.arc(toPixel(state.z[0]), plane.height - toPixel(state.z[1]), 7, 0, 2 * Math.PI);
      context.fill();
    }

    function redraw() {
      decoder(state.beta); // unpack the weights once, outside the timed frame
      timed(() => drawDigit(digit, decode(state.beta, state.z)));
      drawPlane();
      readout.textContent = `z = (${state.z[0].toFixed(2)}, ${state.z[1].toFixed(2)})`;
      timing.textContent = `decode + draw: ${timings[timings.length - 1].toFixed(2)} ms`;
    }

    function moveTo(event) {
      const box = plane.getBoundingClientRect();
      const x = ((event.clientX - box.left) / box.width) * plane.width;
      const y = ((event.clientY - box.top) / box.height) * plane.height;
      state.z = [toLatent(x), toLatent(plane.height - y)];
      redraw();
    }
    let dragging = false;
    plane.addEventListener("pointerdown", (e) => { dragging = true; moveTo(e); });
    plane.addEventListener("pointermove", (e) => { if (dragging) moveTo(e); });
    window.addEventListener("pointerup", () => { dragging = false; });
    showMeans.addEventListener("change", drawPlane);
    redraw();
    return {state: state, redraw: redraw, plane: plane, digit: digit};
  }

  // ---- the traversal explorer --------------------------------------------------------------------
  function traversalExplorer(root) {
    const betas = Object.keys(DATA.traversal);
    const state = {beta: betas[betas.length - 1], unit: 0, step: 0};
    const frames = {};
    for (const beta of betas) frames[beta] = floats(DATA.traversal[beta].frames);
    const spec = DATA.traversal[state.beta];
    const middle = (spec.steps - 1) / 2;
    const stepSize = (spec.high - spec.low) / (spec.steps - 1);
    state.step = middle;
    const sliders = [];
    root.innerHTML = `
      <div class="vae-row">
        <div class="vae-sliders"></div>
        <div class="vae-side">
          <canvas class="vae-digit" width="168" height="168" aria-label="decoded digit"></canvas>
          <fieldset class="vae-betas"><legend>beta</legend></fieldset>
          <p class="vae-readout"></p>
        </div>
      </div>`;
    const digit = root.querySelector(".vae-digit");
    const readout = root.querySelector(".vae-readout");
    for (let u = 0; u < spec.latent_dim; u++) {
      const label = document.createElement("label");
      label.className = "vae-slider";
      label.innerHTML = `z${u + 1} <input type="range" min="0" max="${spec.steps - 1}" step="1" value="${middle}">`;
      const input = label.querySelector("input");
      input.addEventListener("input", () => {
        // A frame moves one coordinate from the centre: the other sliders return to 0.
        sliders.forEach((other, v) => { if (v !== u) other.value = middle; });
        state.unit = u;
        state.step = Number(input.value);
        redraw();
      });
      sliders.push(input);
      root.querySelector(".vae-sliders").appendChild(label);
    }
    betaButtons(root, betas, state, "vae-traversal-beta", () => redraw());
    function frame(beta, unit, step) {
      const offset = (unit * spec.steps + step) * 784;
      return frames[beta].subarray(offset, offset + 784);
    }
    function redraw() {
      timed(() => drawDigit(digit, frame(state.beta, state.unit, state.step)));
      const value = spec.low + state.step * stepSize;
      readout.textContent = `z${state.unit + 1} = ${value.toFixed(1)}, the others 0`;
    }
    redraw();
    return {state: state, sliders: sliders, digit: digit, frame: frame, redraw: redraw};
  }

  function start() {
    if (!DATA) {
      document.querySelectorAll(".vae-explorer").forEach((root) => {
        root.textContent = "The explorer's data (explorer/models.js) is missing: rebuild the book with `make book`.";
      });
      return;
    }
    const api = {decode: (beta, z) => Array.from(decode(beta, z)), timings: timings, explorers: {}};
    document.querySelectorAll(".vae-explorer").forEach((root) => {
      const kind = root.dataset.kind;
      api.explorers[kind] = kind === "plane" ? planeExplorer(root) : traversalExplorer(root);
    });
    window.vaeExplorer = api;
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
