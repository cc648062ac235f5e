// The book's latent-space explorers. They run in the reader's browser, with no kernel and no network;
// the networks are in nets.js, the data come from vaelib/web.py (models.js, and weights/ on demand).
//
// Each <div class="vae-explorer" data-kind="..."> on a page becomes one explorer:
//   map         the 2-D latent map of the MLP models (data-models: which ones; data-draw: a drawing pad,
//               the encoder's ellipses, Sample, BCE and KL; data-sliders="2": z1 and z2 sliders)
//   sliders     ten sliders over the L = 10 conv VAEs, decoded here by the conv decoder
//   interpolate two digits (test or drawn), the walk between their codes beside the pixel blend
//   inpaint     erase part of a digit and let the model complete it (chapter 8: the exact posterior, or the old loop)
// One axis convention everywhere: z1 across, z2 up.
// window.vaeExplorer exposes the models, the explorers' state and the frame timings, for the tests.
(function () {
  "use strict";
  const DATA = window.VAE_EXPLORER_DATA;
  const nets = window.VaeNets;
  const BASE = document.currentScript ? document.currentScript.src.replace(/[^/]*$/, "") : "../explorer/";
  const DIGIT_COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                        "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];
  const INTERPOLATION_MODEL = "vae-l2-b1"; // chapter 5's model
  const INPAINTING_MODEL = "vae-l2-b1";

  // ---- loading on demand -------------------------------------------------------------------------
  // A weight file is a script that calls window.vaeExplorerLoaded(name, payload): script tags work
  // from file:// too, where fetch() does not. Nothing is loaded until an explorer asks for it.
  const pending = {}, requested = [];
  window.vaeExplorerLoaded = (name, payload) => pending[name].resolve(payload);
  function load(name) {
    if (!pending[name]) {
      let resolve, reject;
      const promise = new Promise((yes, no) => { resolve = yes; reject = no; }).then((payload) => {
        if (name === "mnist-test") return {images: nets.unRunLength(payload.pixels, payload.count), labels: labels()};
        return payload.kind === "conv" ? nets.convDecoder(payload) : nets.mlpModel(payload);
      });
      pending[name] = {promise, resolve, reject};
      const script = document.createElement("script");
      script.src = `${BASE}weights/${name}.js`;
      script.onerror = () => reject(new Error(`could not load ${script.src}: rebuild the book with make book`));
      requested.push(name);
      document.head.appendChild(script);
    }
    return pending[name].promise;
  }
  let LABELS = null;
  const labels = () => LABELS || (LABELS = nets.bytes(DATA.labels));
  function testImage(test, index) { // (784) floats in [0, 1], as vaelib.data.load_mnist gives them
    const x = new Float32Array(784);
    for (let i = 0; i < 784; i++) x[i] = test.images[index * 784 + i] / 255;
    return x;
  }

  // ---- small helpers -------------------------------------------------------------------------------
  const timings = {draw: [], encode: [], conv: [], map: []};
  function timed(kind, work) {
    const start = performance.now();
    const result = work();
    timings[kind].push(performance.now() - start);
    return result;
  }
  function element(html) {
    const box = document.createElement("div");
    box.innerHTML = html.trim();
    return box.firstChild;
  }
  // A 28x28 image in [0, 1] onto a canvas, enlarged without smoothing; `grey` marks hidden pixels.
  function drawDigit(canvas, image, hidden) {
    const pixels = new ImageData(28, 28);
    for (let i = 0; i < 784; i++) {
      const v = Math.round(255 * Math.min(1, Math.max(0, image[i])));
      if (hidden && hidden[i]) pixels.data.set([90, 60, 60, 255], 4 * i);
      else pixels.data.set([v, v, v, 255], 4 * i);
    }
    const small = document.createElement("canvas");
    small.width = small.height = 28;
    small.getContext("2d").putImageData(pixels, 0, 0);
    const context = canvas.getContext("2d");
    context.imageSmoothingEnabled = false;
    context.drawImage(small, 0, 0, canvas.width, canvas.height);
  }
  const fmt = (v, digits = 2) => (v < 0 ? "" : "\u2007") + v.toFixed(digits); // aligned signs
  const vector = (v) => `(${Array.from(v).map((a) => fmt(a)).join(", ")})`;
  // One radio button per model; choosing one calls choose(name).
  function modelButtons(box, names, current, group, choose) {
    for (const name of names) {
      const label = element(`<label><input type="radio" name="${group}" value="${name}"> ${DATA.models[name].label}</label>`);
      const input = label.querySelector("input");
      input.checked = name === current;
      input.addEventListener("change", () => choose(name));
      box.appendChild(label);
    }
  }
  let groups = 0; // radio groups must be unique on a page

  // ---- a drawing pad: strokes -> MNIST-like 28x28 digit ------------------------------------------
  // The pad is 280x280; a stroke 20 px wide becomes about 2 px after the 20x20 fit, as in MNIST.
  function drawingPad(canvas, onDigit) {
    const context = canvas.getContext("2d");
    const pad = {digit: null, clear, strokes: 0};
    function clear() {
      context.fillStyle = "#000";
      context.fillRect(0, 0, canvas.width, canvas.height);
      pad.digit = null;
    }
    function point(event) {
      const box = canvas.getBoundingClientRect();
      return [(event.clientX - box.left) * canvas.width / box.width, (event.clientY - box.top) * canvas.height / box.height];
    }
    function update() {
      const digit = timed("draw", () => {
        const rgba = context.getImageData(0, 0, canvas.width, canvas.height).data;
        const ink = new Float32Array(canvas.width * canvas.height);
        for (let i = 0; i < ink.length; i++) ink[i] = rgba[4 * i] / 255;
        return nets.mnistPreprocess(ink, canvas.width);
      });
      pad.digit = digit;
      if (digit) onDigit(digit);
    }
    let last = null;
    canvas.addEventListener("pointerdown", (event) => {
      if (pad.shown) clear(); // a test digit was shown here: start a fresh drawing
      pad.shown = false;
      canvas.setPointerCapture(event.pointerId);
      last = point(event);
      context.fillStyle = "#fff";
      context.beginPath();
      context.arc(last[0], last[1], 10, 0, 2 * Math.PI);
      context.fill();
      pad.strokes++;
      update();
    });
    canvas.addEventListener("pointermove", (event) => {
      if (!last) return;
      const next = point(event);
      context.strokeStyle = "#fff";
      context.lineWidth = 20;
      context.lineCap = context.lineJoin = "round";
      context.beginPath();
      context.moveTo(last[0], last[1]);
      context.lineTo(next[0], next[1]);
      context.stroke();
      last = next;
      update();
    });
    const end = () => { last = null; };
    canvas.addEventListener("pointerup", end);
    canvas.addEventListener("pointercancel", end);
    clear();
    // Show a given 28x28 digit on the pad (a test digit), until the next stroke starts a new drawing.
    pad.show = (digit) => { drawDigit(canvas, digit); pad.digit = digit; pad.shown = true; };
    return pad;
  }

  // ---- the map explorer ----------------------------------------------------------------------------
  const shared = {selected: null, listeners: []}; // the last test digit clicked on a map
  function niceStep(span) { // a tick step of 1, 2 or 5 times a power of ten, for about 6 ticks
    const raw = span / 6, power = Math.pow(10, Math.floor(Math.log10(raw)));
    return [1, 2, 5, 10].map((m) => m * power).find((s) => s >= raw);
  }

  function mapExplorer(root) {
    const names = root.dataset.models.split(" ");
    const withPad = "draw" in root.dataset;
    const sliderCount = Number(root.dataset.sliders || 0);
    const group = `vae-map-${groups++}`;
    root.innerHTML = `
      <div class="vae-toolbar">
        <fieldset class="vae-models"><legend>model</legend></fieldset>
        <span class="vae-zoom">zoom <button type="button" data-zoom="out" title="zoom out">\u2212</button><button
          type="button" data-zoom="in" title="zoom in">+</button><button type="button" data-zoom="fit">fit</button></span>
      </div>
      <div class="vae-row">
        <div class="vae-mapbox">
          <canvas class="vae-map" width="400" height="400"
            aria-label="latent map: drag the black point, drag elsewhere to pan, scroll to zoom, click a dot"></canvas>
          <p class="vae-key">${DIGIT_COLORS.map((c, d) => `<span><i style="background: ${c}"></i>${d}</span>`).join("")}
            <span class="vae-key-prior">prior: circles at 1, 2, 3 sd</span></p>
          <div class="vae-sliders"></div>
          <p class="vae-status"></p>
        </div>
        <div class="vae-side">
          ${withPad ? `<div class="vae-panel"><p class="vae-caption">draw a digit here</p>
            <canvas class="vae-pad" width="280" height="280" aria-label="drawing pad"></canvas>
            <div><button type="button" class="vae-clear">clear</button>
            <button type="button" class="vae-sample" title="z = mu + sigma * eps">Sample</button>
            <button type="button" class="vae-use-mean" title="z = mu">mean</button></div></div>` : ""}
          <div class="vae-figures">
            ${withPad ? `<figure><canvas class="vae-input" width="112" height="112"></canvas>
              <figcaption>encoder input</figcaption></figure>` : ""}
            <figure><canvas class="vae-digit" width="112" height="112"></canvas><figcaption>decoded at z</figcaption></figure>
          </div>
          <div class="vae-inspect" hidden><p class="vae-caption"></p><div class="vae-figures">
            <figure><canvas class="vae-test" width="84" height="84"></canvas><figcaption>test digit</figcaption></figure>
            <figure><canvas class="vae-recon" width="84" height="84"></canvas><figcaption>reconstruction</figcaption></figure>
          </div></div>
        </div>
      </div>
      <pre class="vae-readout"></pre>
      <p class="vae-timing"></p>`;
    const $ = (selector) => root.querySelector(selector);
    const map = $(".vae-map"), digit = $(".vae-digit"), readout = $(".vae-readout"), status = $(".vae-status");
    const M = {left: 44, right: 8, top: 8, bottom: 30}; // margins of the plot inside the canvas, in px
    const size = map.width - M.left - M.right;
    const state = {model: names.includes("vae-l2-b1") && !withPad ? "vae-l2-b1" : names[0], z: [0, 0],
                   view: {cx: 0, cy: 0, half: 4}, encoding: null, eps: null, selected: null, showMeans: true};
    let net = null, meansLayer = null;
    const decoded = new Float32Array(784);

    // latent <-> canvas pixels: z1 across, z2 up
    const px = (z1) => M.left + ((z1 - state.view.cx) / (2 * state.view.half) + 0.5) * size;
    const py = (z2) => M.top + (0.5 - (z2 - state.view.cy) / (2 * state.view.half)) * size;
    const toLatent = (x, y) => [state.view.cx + ((x - M.left) / size - 0.5) * 2 * state.view.half,
                                state.view.cy + (0.5 - (y - M.top) / size) * 2 * state.view.half];

    function renderMeans() { // the 10,000 test means, drawn once per view into their own layer
      meansLayer = document.createElement("canvas");
      meansLayer.width = map.width; meansLayer.height = map.height;
      const context = meansLayer.getContext("2d");
      const means = net.means, lab = labels();
      for (let n = 0; n < lab.length; n++) {
        context.fillStyle = DIGIT_COLORS[lab[n]];
        context.fillRect(px(means[2 * n]) - 1, py(means[2 * n + 1]) - 1, 2.2, 2.2);
      }
    }

    function drawMap() {
      timed("map", () => {
        const context = map.getContext("2d");
        context.fillStyle = "#fff";
        context.fillRect(0, 0, map.width, map.height);
        context.save();
        context.beginPath();
        context.rect(M.left, M.top, size, size);
        context.clip();
        // grid at the ticks
        const step = niceStep(2 * state.view.half);
        const ticks = (centre) => {
          const out = [];
          for (let t = Math.ceil((centre - state.view.half) / step) * step; t <= centre + state.view.half + 1e-9; t += step) out.push(t);
          return out;
        };
        context.strokeStyle = "#eee";
        context.lineWidth = 1;
        context.beginPath();
        for (const t of ticks(state.view.cx)) { context.moveTo(px(t), M.top); context.lineTo(px(t), M.top + size); }
        for (const t of ticks(state.view.cy)) { context.moveTo(M.left, py(t)); context.lineTo(M.left + size, py(t)); }
        context.stroke();
        context.strokeStyle = "#bbb";
        context.beginPath();
        context.moveTo(px(0), M.top); context.lineTo(px(0), M.top + size);
        context.moveTo(M.left, py(0)); context.lineTo(M.left + size, py(0));
        context.stroke();
        if (net && state.showMeans) context.drawImage(meansLayer, 0, 0);
        // the prior N(0, I): its density's contours at 1, 2 and 3 standard deviations
        const unit = size / (2 * state.view.half);
        context.strokeStyle = "#333";
        context.setLineDash([5, 4]);
        for (const r of [1, 2, 3]) {
          context.beginPath();
          context.arc(px(0), py(0), r * unit, 0, 2 * Math.PI);
          context.stroke();
        }
        context.setLineDash([]);
        // the encoder's q(z | x) for the drawn digit: mean, and ellipses at 1 and 2 sigma
        const enc = state.encoding;
        if (enc && enc.logvar) {
          const sigma = enc.logvar.map((v) => Math.exp(v / 2));
          context.strokeStyle = "#c00";
          context.lineWidth = 2;
          for (const k of [1, 2]) {
            context.beginPath();
            context.ellipse(px(enc.mu[0]), py(enc.mu[1]), Math.max(1, k * sigma[0] * unit), Math.max(1, k * sigma[1] * unit), 0, 0, 2 * Math.PI);
            context.stroke();
          }
        }
        if (enc) { // the mean: a cross
          context.strokeStyle = "#c00";
          context.lineWidth = 2;
          context.beginPath();
          context.moveTo(px(enc.mu[0]) - 6, py(enc.mu[1]) - 6); context.lineTo(px(enc.mu[0]) + 6, py(enc.mu[1]) + 6);
          context.moveTo(px(enc.mu[0]) - 6, py(enc.mu[1]) + 6); context.lineTo(px(enc.mu[0]) + 6, py(enc.mu[1]) - 6);
          context.stroke();
        }
        if (state.selected !== null && net) { // the clicked test digit: a ring around its dot
          context.strokeStyle = "#000";
          context.lineWidth = 2;
          context.beginPath();
          context.arc(px(net.means[2 * state.selected]), py(net.means[2 * state.selected + 1]), 7, 0, 2 * Math.PI);
          context.stroke();
        }
        // z: the black point (a ring while a drawn digit's mean is shown, so that the cross stays visible)
        context.lineWidth = 2;
        context.beginPath();
        context.arc(px(state.z[0]), py(state.z[1]), enc ? 9 : 7, 0, 2 * Math.PI);
        if (enc) {
          context.strokeStyle = "#000";
          context.stroke();
        } else {
          context.fillStyle = "#000";
          context.strokeStyle = "#fff";
          context.fill();
          context.stroke();
        }
        context.restore();
        // frame, ticks and their labels, axis names
        context.strokeStyle = "#666";
        context.lineWidth = 1;
        context.strokeRect(M.left, M.top, size, size);
        context.fillStyle = "#333";
        context.font = "11px sans-serif";
        const label = (t) => (Math.abs(t) < 1e-9 ? "0" : Number(t.toPrecision(6)).toString());
        context.textAlign = "center";
        context.textBaseline = "top";
        for (const t of ticks(state.view.cx)) {
          context.fillRect(px(t), M.top + size, 1, 4);
          context.fillText(label(t), px(t), M.top + size + 5);
        }
        context.textAlign = "right";
        context.textBaseline = "middle";
        for (const t of ticks(state.view.cy)) {
          context.fillRect(M.left - 4, py(t), 4, 1);
          context.fillText(label(t), M.left - 6, py(t));
        }
        context.font = "italic 13px serif";
        context.textAlign = "right";
        context.textBaseline = "bottom";
        context.fillText("z\u2081 \u2192", M.left + size, map.height - 1);
        context.save();
        context.translate(11, M.top);
        context.rotate(-Math.PI / 2);
        context.textAlign = "right";
        context.textBaseline = "middle";
        context.fillText("z\u2082 \u2192", 0, 0);
        context.restore();
      });
    }

    // Decode z, then BCE and KL of the drawn digit when there is one.
    function update() {
      if (!net) return;
      timed("encode", () => net.decode(state.z, decoded));
      drawDigit(digit, decoded);
      drawMap();
      const lines = [`z   = ${vector(state.z)}`];
      const enc = state.encoding;
      if (enc) {
        lines.unshift(`mu  = ${vector(enc.mu)}`);
        if (enc.logvar) {
          const sd = enc.logvar.map((v) => Math.exp(v / 2).toPrecision(2)); // beta = 0: sd near 0.001
          lines.splice(1, 0, `sd  = (${sd.join(", ")})`);
          if (state.eps) lines.splice(2, 0, `eps = ${vector(state.eps)}`);
        }
        lines.push(`BCE = ${nets.bce(decoded, enc.x).toFixed(1)} nats (the drawn digit against the decoded one)`);
        lines.push(enc.logvar ? `KL  = ${nets.kl(enc.mu, enc.logvar).toFixed(2)} nats` : "KL  = none: an autoencoder has no KL term");
      }
      readout.textContent = lines.join("\n");
      sliders.forEach((s, u) => { s.value = state.z[u]; s.nextSibling.textContent = fmt(state.z[u]); });
      const last = (list) => (list.length ? list[list.length - 1].toFixed(2) : "-");
      $(".vae-timing").textContent = `frame: decode ${last(timings.encode)} ms, map ${last(timings.map)} ms`
        + (withPad ? `, drawing ${last(timings.draw)} ms` : "");
    }

    // A digit (784) from the pad: encode it, put z on the mean.
    function encodeDigit(x) {
      if (!net) return;
      const enc = timed("encode", () => net.encode(x));
      state.encoding = {x: x, mu: enc.mu, logvar: enc.logvar};
      state.eps = null;
      state.z = enc.mu.slice();
      drawDigit($(".vae-input"), x);
      update();
    }
    function sample() {
      const enc = state.encoding;
      if (!enc || !enc.logvar) return;
      state.eps = enc.mu.map(() => nets.gaussian());
      state.z = enc.mu.map((m, i) => m + Math.exp(enc.logvar[i] / 2) * state.eps[i]);
      update();
    }

    function fit() {
      const half = DATA.models[state.model].range;
      state.view = {cx: 0, cy: 0, half: half};
      if (net) renderMeans();
      drawMap();
    }
    function zoom(factor, x, y) { // keep the latent point under (x, y) in place
      const [a, b] = x === undefined ? [state.view.cx, state.view.cy] : toLatent(x, y);
      const half = Math.min(200, Math.max(0.05, state.view.half * factor));
      const k = half / state.view.half;
      state.view = {cx: a + (state.view.cx - a) * k, cy: b + (state.view.cy - b) * k, half: half};
      renderMeans();
      drawMap();
    }

    let chosen = 0; // the latest model asked for wins, whatever order they load in
    function choose(name) {
      const ticket = ++chosen;
      state.model = name;
      status.textContent = `loading ${DATA.models[name].label}\u2026`;
      return load(name).then((model) => {
        if (ticket !== chosen) return;
        net = model;
        state.loaded = name;
        status.textContent = "";
        $(".vae-sample") && ($(".vae-sample").disabled = !net.variational);
        const range = DATA.models[name].range;
        sliders.forEach((s) => { s.min = -range; s.max = range; });
        fit();
        if (state.selected !== null) inspect(state.selected);
        if (state.encoding) encodeDigit(state.encoding.x);
        else update();
      }, (error) => { status.textContent = error.message; });
    }

    function inspect(n) {
      state.selected = n;
      shared.selected = n;
      shared.listeners.forEach((f) => f(n));
      const box = $(".vae-inspect");
      box.hidden = false;
      const mu = [net.means[2 * n], net.means[2 * n + 1]];
      drawDigit($(".vae-recon"), net.decode(mu));
      box.querySelector(".vae-caption").textContent = `test digit #${n}, label ${labels()[n]}, mean (${fmt(mu[0])}, ${fmt(mu[1])})`;
      load("mnist-test").then((test) => drawDigit($(".vae-test"), testImage(test, n)));
      drawMap();
    }
    function nearestDot(x, y) { // the test mean within 6 px of (x, y), or null
      let best = null, bestDistance = 36;
      for (let n = 0; n < net.means.length / 2; n++) {
        const dx = px(net.means[2 * n]) - x, dy = py(net.means[2 * n + 1]) - y;
        const d = dx * dx + dy * dy;
        if (d < bestDistance) { best = n; bestDistance = d; }
      }
      return best;
    }

    // pointer: drag the point, drag elsewhere to pan, click a dot to inspect it (or empty space to move z)
    let drag = null;
    const canvasPoint = (event) => {
      const box = map.getBoundingClientRect();
      return [(event.clientX - box.left) * map.width / box.width, (event.clientY - box.top) * map.height / box.height];
    };
    map.addEventListener("pointerdown", (event) => {
      const [x, y] = canvasPoint(event);
      map.setPointerCapture(event.pointerId);
      const onPoint = Math.hypot(x - px(state.z[0]), y - py(state.z[1])) <= 11;
      drag = {mode: onPoint ? "point" : "pan", x, y, view: {...state.view}, moved: false};
    });
    map.addEventListener("pointermove", (event) => {
      if (!drag) return;
      const [x, y] = canvasPoint(event);
      if (Math.hypot(x - drag.x, y - drag.y) > 3) drag.moved = true;
      if (drag.mode === "point") { state.z = toLatent(x, y); state.eps = null; update(); }
      else if (drag.moved) {
        const scale = 2 * drag.view.half / size;
        state.view = {...drag.view, cx: drag.view.cx - (x - drag.x) * scale, cy: drag.view.cy + (y - drag.y) * scale};
        renderMeans();
        drawMap();
      }
    });
    map.addEventListener("pointerup", (event) => {
      if (drag && drag.mode === "pan" && !drag.moved && net) {
        const [x, y] = canvasPoint(event);
        const n = state.showMeans ? nearestDot(x, y) : null;
        if (n !== null) inspect(n);
        else { state.z = toLatent(x, y); state.eps = null; update(); }
      }
      drag = null;
    });
    map.addEventListener("wheel", (event) => {
      event.preventDefault();
      const [x, y] = canvasPoint(event);
      zoom(event.deltaY > 0 ? 1.25 : 0.8, x, y);
    }, {passive: false});
    root.querySelectorAll("[data-zoom]").forEach((button) => button.addEventListener("click", () => {
      const kind = button.dataset.zoom;
      if (kind === "fit") fit(); else zoom(kind === "in" ? 0.8 : 1.25);
    }));

    const sliders = [];
    for (let u = 0; u < sliderCount; u++) {
      const label = element(`<label class="vae-slider">z${u + 1} <input type="range" min="-4" max="4" step="0.01" value="0"><span></span></label>`);
      const input = label.querySelector("input");
      input.addEventListener("input", () => { state.z[u] = Number(input.value); state.eps = null; update(); });
      sliders.push(input);
      $(".vae-sliders").appendChild(label);
    }

    modelButtons($(".vae-models"), names, state.model, group, choose);
    if (names.length < 2) $(".vae-models").hidden = true;
    const pad = withPad ? drawingPad($(".vae-pad"), encodeDigit) : null;
    if (withPad) {
      $(".vae-clear").addEventListener("click", () => {
        pad.clear(); state.encoding = null; state.eps = null;
        drawDigit($(".vae-input"), new Float32Array(784)); update();
      });
      $(".vae-sample").addEventListener("click", sample);
      $(".vae-use-mean").addEventListener("click", () => {
        if (state.encoding) { state.z = state.encoding.mu.slice(); state.eps = null; update(); }
      });
      drawDigit($(".vae-input"), new Float32Array(784));
    }
    state.view.half = DATA.models[state.model].range;
    drawMap();
    const ready = choose(state.model);
    const setView = (view) => { state.view = view; renderMeans(); drawMap(); };
    return {state, ready, choose, update, inspect, sample, map, digit, pad, sliders, encodeDigit, setView,
            toCanvas: (z) => [px(z[0]), py(z[1])], net: () => net};
  }

  // ---- ten sliders over the conv decoder -----------------------------------------------------------
  function slidersExplorer(root) {
    const names = root.dataset.models.split(" ");
    const group = `vae-sliders-${groups++}`;
    const state = {model: names[0], z: new Array(DATA.models[names[0]].latent_dim).fill(0), started: false};
    root.innerHTML = `
      <div class="vae-row">
        <div><div class="vae-sliders"></div>
          <div><button type="button" class="vae-reset">all to 0</button>
          <button type="button" class="vae-random" title="z drawn from the prior N(0, I)">random z</button></div></div>
        <div class="vae-side">
          <fieldset class="vae-models"><legend>model</legend></fieldset>
          <button type="button" class="vae-start">Start the conv decoder (loads ${DATA.models[names[0]].megabytes} MB of weights)</button>
          <figure><canvas class="vae-digit" width="168" height="168" aria-label="decoded digit"></canvas>
            <figcaption>decoded at z</figcaption></figure>
          <p class="vae-status"></p>
          <p class="vae-timing"></p>
        </div>
      </div>`;
    const $ = (selector) => root.querySelector(selector);
    const digit = $(".vae-digit"), status = $(".vae-status");
    const decoded = new Float32Array(784);
    let net = null;
    const sliders = state.z.map((_, u) => {
      const label = element(`<label class="vae-slider">z${u + 1} <input type="range" min="-3" max="3" step="0.05" value="0" disabled><span>${fmt(0)}</span></label>`);
      const input = label.querySelector("input");
      input.addEventListener("input", () => { state.z[u] = Number(input.value); redraw(); });
      $(".vae-sliders").appendChild(label);
      return input;
    });
    function redraw() {
      if (!net) return;
      timed("conv", () => net.decode(state.z, decoded));
      drawDigit(digit, decoded);
      sliders.forEach((s, u) => { s.value = state.z[u]; s.nextSibling.textContent = fmt(state.z[u]); });
      const conv = timings.conv;
      $(".vae-timing").textContent = `conv decoder: ${conv[conv.length - 1].toFixed(1)} ms per frame`;
    }
    let chosen = 0;
    function choose(name) {
      const ticket = ++chosen;
      state.model = name;
      if (!state.started) return Promise.resolve();
      status.textContent = `loading ${DATA.models[name].megabytes} MB of weights\u2026`;
      return load(name).then((model) => {
        if (ticket !== chosen) return;
        net = model;
        state.loaded = name;
        status.textContent = "";
        sliders.forEach((s) => { s.disabled = false; });
        redraw();
      }, (error) => { status.textContent = error.message; });
    }
    // The weights (about 11 MB per model) load only when the reader starts this explorer.
    function start() {
      state.started = true;
      $(".vae-start").hidden = true;
      return choose(state.model);
    }
    $(".vae-start").addEventListener("click", start);
    $(".vae-reset").addEventListener("click", () => { state.z.fill(0); redraw(); });
    $(".vae-random").addEventListener("click", () => { state.z = state.z.map(() => Math.round(nets.gaussian() * 20) / 20); redraw(); });
    modelButtons($(".vae-models"), names, state.model, group, choose);
    drawDigit(digit, new Float32Array(784));
    return {state, sliders, start, choose, redraw, digit, net: () => net};
  }

  // ---- a digit to work on: drawn, or a test digit ------------------------------------------------
  // A small pad plus two buttons; onDigit(x) gets the 784 pixels whenever they change.
  function digitSlot(box, title, startIndex, onDigit) {
    box.innerHTML = `<p class="vae-caption">${title}</p>
      <canvas class="vae-pad vae-pad-small" width="280" height="280" aria-label="${title}: draw here"></canvas>
      <div><button type="button" class="vae-random-test">random test digit</button>
      <button type="button" class="vae-clicked-test" disabled title="the test digit last clicked on a map">clicked dot</button></div>
      <p class="vae-slot-label"></p>`;
    const slot = {x: null};
    const name = box.querySelector(".vae-slot-label");
    const pad = drawingPad(box.querySelector("canvas"), (x) => { slot.x = x; name.textContent = "your drawing"; onDigit(x); });
    function useTest(n) {
      return load("mnist-test").then((test) => {
        slot.x = testImage(test, n);
        pad.show(slot.x);
        name.textContent = `test digit #${n} (a ${test.labels[n]})`;
        onDigit(slot.x);
      });
    }
    box.querySelector(".vae-random-test").addEventListener("click", () => useTest(Math.floor(Math.random() * DATA.test_count)));
    const clicked = box.querySelector(".vae-clicked-test");
    clicked.addEventListener("click", () => shared.selected !== null && useTest(shared.selected));
    shared.listeners.push(() => { clicked.disabled = false; });
    slot.ready = useTest(startIndex);
    slot.useTest = useTest;
    slot.pad = pad;
    return slot;
  }

  // ---- interpolation: through the latent space, and in pixel space ------------------------------
  function interpolateExplorer(root) {
    const STEPS = 10;
    root.innerHTML = `
      <div class="vae-row">
        <div class="vae-panel vae-slot-a"></div>
        <div class="vae-panel vae-slot-b"></div>
        <div class="vae-side">
          <label class="vae-slider vae-slider-t">t <input type="range" min="0" max="1" step="0.01" value="0.5"><span></span></label>
          <div class="vae-figures">
            <figure><canvas class="vae-latent" width="112" height="112"></canvas><figcaption>latent blend, decoded</figcaption></figure>
            <figure><canvas class="vae-pixel" width="112" height="112"></canvas><figcaption>pixel blend</figcaption></figure>
          </div>
          <p class="vae-status"></p>
        </div>
      </div>
      <figure><canvas class="vae-strip vae-strip-latent" width="${STEPS * 56}" height="56"></canvas>
        <figcaption>through the latent space (the MLP VAE of chapter 5, beta = 1)</figcaption></figure>
      <figure><canvas class="vae-strip vae-strip-pixel" width="${STEPS * 56}" height="56"></canvas>
        <figcaption>in pixel space</figcaption></figure>`;
    const $ = (selector) => root.querySelector(selector);
    const state = {t: 0.5, mu: [null, null]};
    let net = null;
    const t = $(".vae-slider-t input");
    // z(t) = (1 - t) mu_a + t mu_b, decoded; the pixels: (1 - t) x_a + t x_b (plots.interpolate)
    function blend(weight) {
      const [a, b] = state.mu;
      const latent = net.decode([0, 1].map((i) => (1 - weight) * a[i] + weight * b[i]));
      const pixel = new Float32Array(784);
      for (let i = 0; i < 784; i++) pixel[i] = (1 - weight) * slots[0].x[i] + weight * slots[1].x[i];
      return [latent, pixel];
    }
    function strip(canvas, images) {
      const context = canvas.getContext("2d");
      const cell = document.createElement("canvas");
      cell.width = cell.height = 56;
      images.forEach((image, k) => { drawDigit(cell, image); context.drawImage(cell, 56 * k, 0); });
    }
    function redraw() {
      if (!net || !slots.every((s) => s.x)) return;
      state.mu = slots.map((s) => net.encode(s.x).mu);
      state.t = Number(t.value);
      t.nextSibling.textContent = state.t.toFixed(2);
      const [latent, pixel] = blend(state.t);
      drawDigit($(".vae-latent"), latent);
      drawDigit($(".vae-pixel"), pixel);
      const walks = Array.from({length: STEPS}, (_, k) => blend(k / (STEPS - 1)));
      strip($(".vae-strip-latent"), walks.map((w) => w[0]));
      strip($(".vae-strip-pixel"), walks.map((w) => w[1]));
    }
    const slots = [digitSlot($(".vae-slot-a"), "digit A", 3, redraw), digitSlot($(".vae-slot-b"), "digit B", 2, redraw)];
    t.addEventListener("input", redraw);
    const ready = load(INTERPOLATION_MODEL).then((model) => { net = model; return Promise.all(slots.map((s) => s.ready)); })
      .then(redraw);
    return {state, slots, t, ready, redraw, blend};
  }

  // ---- inpainting (chapter 8): the posterior mean given the visible pixels, or the old heuristic loop ----
  function inpaintExplorer(root) {
    root.innerHTML = `
      <div class="vae-row">
        <div class="vae-panel vae-slot"></div>
        <div class="vae-panel"><p class="vae-caption">paint over the digit to hide pixels</p>
          <canvas class="vae-mask" width="196" height="196" aria-label="paint to hide pixels"></canvas>
          <div><button type="button" data-hide="bottom">hide the bottom half</button>
          <button type="button" data-hide="left">hide the left half</button>
          <button type="button" data-hide="none">show all</button></div>
          <label>method <select class="vae-method">
            <option value="posterior" selected>exact posterior mean (a grid over z)</option>
            <option value="loop">the heuristic loop (encode, decode, copy back)</option></select></label>
          <label class="vae-slider">rounds of the loop <input type="range" class="vae-rounds" min="0" max="50" step="1" value="20"><span></span></label>
        </div>
        <div class="vae-side">
          <div class="vae-figures">
            <figure><canvas class="vae-seen" width="112" height="112"></canvas><figcaption>what the model sees</figcaption></figure>
            <figure><canvas class="vae-completed" width="112" height="112"></canvas><figcaption>its completion</figcaption></figure>
          </div>
          <pre class="vae-readout"></pre>
        </div>
      </div>`;
    const $ = (selector) => root.querySelector(selector);
    const state = {hidden: new Uint8Array(784), completed: null};
    let net = null;
    const rounds = $(".vae-rounds"), mask = $(".vae-mask"), method = $(".vae-method");
    let posterior = null; // nets.gridCompleter(net): inference.complete_on_grid's posterior mean
    // Chapter 8's heuristic, inference.complete_by_loop: hidden pixels start grey (0.5); each round
    // encodes the picture, decodes the mean, and copies the decoded values into the hidden pixels only.
    function inpaint(x, hidden, iterations) {
      const filled = Float32Array.from(x, (v, i) => (hidden[i] ? 0.5 : v));
      for (let r = 0; r < iterations; r++) {
        const decoded = net.decode(net.encode(filled).mu);
        for (let i = 0; i < 784; i++) if (hidden[i]) filled[i] = decoded[i];
      }
      return filled;
    }
    function redraw() {
      const x = slot.x;
      if (!net || !x) return;
      drawDigit(mask, x, state.hidden);
      const seen = Float32Array.from(x, (v, i) => (state.hidden[i] ? 0.3 : v));
      drawDigit($(".vae-seen"), seen);
      const exact = method.value === "posterior";
      state.completed = exact ? posterior(x, state.hidden).mean : inpaint(x, state.hidden, Number(rounds.value));
      drawDigit($(".vae-completed"), state.completed);
      rounds.nextSibling.textContent = rounds.value;
      rounds.disabled = exact;
      let count = 0, filledError = 0, greyError = 0;
      for (let i = 0; i < 784; i++) if (state.hidden[i]) {
        count++;
        filledError += (state.completed[i] - x[i]) ** 2;
        greyError += (0.5 - x[i]) ** 2;
      }
      $(".vae-readout").textContent = count ? `hidden pixels: ${count}\nsquared error per hidden pixel: ${(filledError / count).toFixed(3)}`
        + `\n(grey fill: ${(greyError / count).toFixed(3)})` : "nothing hidden: paint over the digit";
    }
    function hide(kind) {
      for (let i = 0; i < 784; i++) {
        const row = Math.floor(i / 28), column = i % 28;
        state.hidden[i] = kind === "bottom" ? row >= 14 : kind === "left" ? column < 14 : 0;
      }
      redraw();
    }
    root.querySelectorAll("[data-hide]").forEach((b) => b.addEventListener("click", () => hide(b.dataset.hide)));
    rounds.addEventListener("input", redraw);
    method.addEventListener("change", redraw);
    let painting = false;
    function paint(event) { // a brush of radius 1.5 pixels hides what it touches
      const box = mask.getBoundingClientRect();
      const x = (event.clientX - box.left) / box.width * 28, y = (event.clientY - box.top) / box.height * 28;
      for (let i = 0; i < 784; i++) if (Math.hypot(i % 28 + 0.5 - x, Math.floor(i / 28) + 0.5 - y) < 1.5) state.hidden[i] = 1;
      redraw();
    }
    mask.addEventListener("pointerdown", (e) => { painting = true; mask.setPointerCapture(e.pointerId); paint(e); });
    mask.addEventListener("pointermove", (e) => { if (painting) paint(e); });
    mask.addEventListener("pointerup", () => { painting = false; });
    const slot = digitSlot($(".vae-slot"), "the digit", 0, redraw);
    const ready = load(INPAINTING_MODEL).then((model) => { net = model; posterior = nets.gridCompleter(model); return slot.ready; })
      .then(() => hide("bottom"));
    return {state, slot, ready, hide, redraw, method, inpaint: (x, hidden, n) => Array.from(inpaint(x, hidden, n)),
      complete: (x, hidden) => Array.from(posterior(x, hidden).mean), mask};
  }

  // ---- start every explorer on the page ----------------------------------------------------------
  function start() {
    const roots = document.querySelectorAll(".vae-explorer");
    if (!DATA || !nets) {
      roots.forEach((root) => {
        root.textContent = "The explorer's data (explorer/models.js) is missing: rebuild the book with `make book`.";
      });
      return;
    }
    const makers = {map: mapExplorer, sliders: slidersExplorer, interpolate: interpolateExplorer, inpaint: inpaintExplorer};
    const api = {
      nets, load, timings, requested, explorers: {},
      // for the tests: run a model on given inputs
      encode: (name, x) => load(name).then((m) => m.encode(Float32Array.from(x))),
      decode: (name, z) => load(name).then((m) => Array.from(m.decode(z))),
    };
    roots.forEach((root) => {
      const kind = root.dataset.kind;
      (api.explorers[kind] = api.explorers[kind] || []).push(makers[kind](root));
    });
    window.vaeExplorer = api;
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
