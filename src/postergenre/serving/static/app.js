// PosterGenre page: upload posters, show genre probabilities, Grad-CAM heatmaps and
// similar posters. Plain DOM, no build step; untrusted text only ever goes into textContent.
"use strict";

// What the server decodes, when /api/model does not say (server.formats).
const DEFAULT_FORMATS = ["JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "AVIF"];
const state = {
  model: null,
  maxUpload: 10 * 1000 * 1000, // the server's default, in SI bytes like its own limits
  similar: false,
  thresholds: null,
  formats: DEFAULT_FORMATS,
};
const cards = new Set();

const $ = (selector, root = document) => root.querySelector(selector);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

function percent(p) {
  if (p > 0 && p < 0.001) return "<0.1%";
  return `${(p * 100).toFixed(1)}%`;
}

// ["JPEG", "PNG", "WEBP"] -> "JPEG, PNG or WebP"
function formatList(formats) {
  const names = formats.map((f) => (String(f).toUpperCase() === "WEBP" ? "WebP" : String(f)));
  if (names.length < 2) return names.join("");
  return `${names.slice(0, -1).join(", ")} or ${names[names.length - 1]}`;
}

// "512 B", "64.0 kB", "10.0 MB": the server's format_bytes (powers of 1000), so the page
// and the server's 413 messages name a limit the same way.
function formatBytes(n) {
  let size = n;
  for (const unit of ["B", "kB", "MB", "GB"]) {
    if (size < 1000 || unit === "GB") {
      return unit === "B" ? `${Math.trunc(size)} B` : `${size.toFixed(1)} ${unit}`;
    }
    size /= 1000;
  }
  return `${n} B`; // unreachable: GB takes any size
}

async function errorMessage(response) {
  try {
    const body = await response.json();
    if (body && typeof body.error === "string") return body.error;
  } catch {
    // not JSON: fall through to the status line
  }
  return `the server answered ${response.status} ${response.statusText}`.trim();
}

async function post(url, field, file) {
  const form = new FormData();
  form.append(field, file, file.name);
  let response;
  try {
    response = await fetch(url, { method: "POST", body: form });
  } catch {
    throw new Error("cannot reach the server; is it still running?");
  }
  if (!response.ok) throw new Error(await errorMessage(response));
  return response;
}

// -- model ------------------------------------------------------------------------------------
function shortName(name) {
  const parts = String(name).split(/[\\/]/).filter(Boolean);
  return parts.length > 2 ? `…/${parts.slice(-2).join("/")}` : String(name);
}

async function loadModel() {
  const box = $("#model");
  try {
    const response = await fetch("/api/model");
    if (!response.ok) throw new Error(await errorMessage(response));
    const model = await response.json();
    state.model = model;
    state.maxUpload = model.server?.max_upload_bytes ?? state.maxUpload;
    state.similar = Boolean(model.server?.similar);
    state.thresholds = model.task === "multi" ? model.thresholds || {} : null;
    const method = model.training?.calibration?.method;
    state.calibrated = Boolean(method && method !== "none");
    const formats = model.server?.formats;
    if (Array.isArray(formats) && formats.length) state.formats = formats;
    const task = model.task === "multi" ? "multi-label" : "single-label";
    const name = el("span", { class: "model-name", title: model.name, text: shortName(model.name) });
    const facts = [model.architecture, task, `${model.genres.length} genres`];
    if (model.text) facts.push("reads the poster's text (OCR, about 1 s a poster)");
    if (model.runtime) facts.push(model.runtime);
    const line = el("p", { class: "model-line" }, "Model ", name, ` · ${facts.filter(Boolean).join(" · ")}`);
    const list = el("ul", { class: "genre-list" }, ...model.genres.map((g) => el("li", { text: g })));
    const details = el("details", {}, el("summary", { text: "Genres it knows" }), list);
    box.replaceChildren(line, details);
    $("#drop-limits").textContent = `${formatList(state.formats)} · up to ${formatBytes(state.maxUpload)} each`;
  } catch (error) {
    box.replaceChildren(el("p", { class: "model-error", role: "alert", text: `Cannot load the model: ${error.message}` }));
  }
}

// -- cards ------------------------------------------------------------------------------------
class PosterCard {
  constructor(file) {
    this.file = file;
    this.heatmaps = new Map(); // genre -> object URL
    this.urls = [];
    this.heatRequest = 0;
    this.node = $("#card-template").content.firstElementChild.cloneNode(true);
    this.heat = $(".heat", this.node);
    this.heatImg = $(".heat-img", this.node);
    this.placeholder = $(".placeholder", this.node);
    $(".filename", this.node).textContent = file.name || "poster";
    $(".filename", this.node).title = file.name || "poster";
    const poster = $(".poster-img", this.node);
    poster.src = this.objectUrl(file);
    poster.alt = `Uploaded poster ${file.name || ""}`.trim();
    // Not every file a browser is given is an image it can show; the API says why.
    poster.addEventListener("error", () => {
      $(".poster", this.node).hidden = true;
    });
    $(".remove", this.node).setAttribute("aria-label", `Remove ${file.name || "poster"}`);
    $(".remove", this.node).addEventListener("click", () => this.remove());
    $(".bars", this.node).addEventListener("click", (event) => {
      const bar = event.target.closest(".bar");
      if (bar) this.showHeatmap(bar.dataset.genre);
    });
  }

  objectUrl(blob) {
    const url = URL.createObjectURL(blob);
    this.urls.push(url);
    return url;
  }

  remove() {
    this.node.remove();
    cards.delete(this);
    for (const url of this.urls) URL.revokeObjectURL(url);
    updateSummary();
  }

  fail(message) {
    this.failed = true;
    this.node.setAttribute("aria-busy", "false");
    this.node.classList.add("failed");
    const box = $(".error", this.node);
    box.textContent = message;
    box.hidden = false;
    $(".similar", this.node).hidden = true;
  }

  async run() {
    await modelReady;
    if (this.file.size > state.maxUpload) {
      this.fail(`${this.file.name}: ${formatBytes(this.file.size)} is over the ${formatBytes(state.maxUpload)} upload limit`);
      return;
    }
    if (state.similar) this.loadSimilar(); // in parallel with the genres
    try {
      const response = await post("/api/predict", "files", this.file);
      const body = await response.json();
      this.render(body.results[0]);
    } catch (error) {
      this.fail(error.message);
    }
  }

  render(result) {
    this.node.setAttribute("aria-busy", "false");
    const predicted = new Set(result.predicted);
    // Chips from the most probable genre down (the API lists them in vocabulary order).
    const probability = new Map(result.genres.map((g) => [g.genre, g.probability]));
    const chips = [...result.predicted].sort((a, b) => (probability.get(b) ?? 0) - (probability.get(a) ?? 0));
    $(".chips", this.node).replaceChildren(...chips.map((g) => el("li", { text: g })));
    const legend = $(".legend", this.node);
    const rule = $(".rule", this.node);
    const honest = state.calibrated ? "; percentages are calibrated: of genres shown at 60%, about 60% are right" : "";
    if (state.thresholds) {
      legend.replaceChildren("✓ predicted · ", el("span", { class: "tick" }), " threshold · click for its heatmap");
      const values = [...new Set(Object.values(state.thresholds))];
      rule.textContent = values.length === 1
        ? `✓ marks every genre at or above ${percent(values[0])}${honest}`
        : `✓ marks genres at or above their threshold (the tick on each bar)${honest}`;
    } else {
      legend.textContent = "✓ predicted · click a genre for its heatmap";
      rule.textContent = `✓ marks the most probable genre${honest}`;
    }
    const bars = result.genres.map(({ genre, probability }) => {
      const isPredicted = predicted.has(genre);
      const fill = el("span", { class: "bar-fill" });
      const track = el("span", { class: "bar-track", "aria-hidden": "true" }, fill);
      const threshold = state.thresholds ? state.thresholds[genre] : undefined;
      if (threshold !== undefined) {
        const tick = el("span", { class: "bar-threshold", title: `threshold ${percent(threshold)}` });
        tick.style.setProperty("--t", `${(threshold * 100).toFixed(2)}%`);
        track.append(tick);
      }
      const label = el("span", { class: "bar-label" });
      if (isPredicted) label.append(el("span", { class: "check", "aria-hidden": "true", text: "✓" }));
      label.append(genre);
      let description = `${genre}: ${percent(probability)}${isPredicted ? ", predicted" : ""}`;
      if (threshold !== undefined) description += `, threshold ${percent(threshold)}`;
      const button = el(
        "button",
        {
          type: "button",
          class: `bar${isPredicted ? " predicted" : ""}`,
          "data-genre": genre,
          "aria-pressed": "false",
          "aria-label": `${description}. Show its heatmap`,
        },
        label,
        track,
        el("span", { class: "bar-value", text: percent(probability) }),
      );
      requestAnimationFrame(() => fill.style.setProperty("--p", `${(probability * 100).toFixed(2)}%`));
      return el("li", {}, button);
    });
    $(".bars", this.node).replaceChildren(...bars);
    if (result.genres.length) this.showHeatmap(result.genres[0].genre);
  }

  async showHeatmap(genre) {
    for (const bar of this.node.querySelectorAll(".bar")) {
      bar.setAttribute("aria-pressed", String(bar.dataset.genre === genre));
    }
    const request = ++this.heatRequest;
    const caption = $(".heat-caption", this.node);
    let url = this.heatmaps.get(genre);
    if (!url) {
      this.heat.classList.add("loading");
      this.heat.setAttribute("aria-busy", "true");
      if (this.heatImg.hidden) {
        $(".placeholder-text", this.node).textContent = `Computing the ${genre} heatmap…`;
      }
      try {
        const response = await post(`/api/explain?genre=${encodeURIComponent(genre)}`, "file", this.file);
        url = this.objectUrl(await response.blob());
        this.heatmaps.set(genre, url);
      } catch (error) {
        if (request === this.heatRequest) {
          this.heat.classList.remove("loading");
          this.heat.setAttribute("aria-busy", "false");
          this.placeholder.hidden = false;
          this.placeholder.classList.add("failed");
          this.heatImg.hidden = true;
          $(".placeholder-text", this.node).textContent = `No heatmap: ${error.message}`;
        }
        return;
      }
    }
    if (request !== this.heatRequest) return; // a later click won
    this.heatImg.src = url;
    this.heatImg.alt = `Grad-CAM heatmap of the poster for ${genre}: warm colours mark the regions that raised its probability`;
    this.heatImg.hidden = false;
    this.placeholder.hidden = true;
    this.heat.classList.remove("loading");
    this.heat.setAttribute("aria-busy", "false");
    caption.replaceChildren("Where the model looked for ", el("strong", { text: genre }));
  }

  async loadSimilar() {
    const section = $(".similar", this.node);
    const status = $(".similar-status", this.node);
    section.hidden = false;
    status.textContent = "Searching the index…";
    try {
      const response = await post("/api/similar?k=8", "file", this.file);
      const { results } = await response.json();
      status.textContent = results.length ? "" : "No similar posters found.";
      const items = results.map((item) => {
        const name = item.name || item.id;
        let genres = item.genres.join(", ") || "no genres";
        if (item.genres_are === "predicted" && item.genres.length) genres += " (predicted)";
        const img = el("img", {
          src: item.image_url,
          alt: `Indexed poster ${name} (${genres})`,
          loading: "lazy",
          decoding: "async",
        });
        return el(
          "li",
          { title: name },
          img,
          el("span", { class: "sim", text: `${(item.similarity * 100).toFixed(0)}% similar` }),
          el("span", { class: "sim-name", text: name }),
          el("span", { class: "sim-genres", text: genres }),
        );
      });
      $(".strip", this.node).replaceChildren(...items);
    } catch (error) {
      status.textContent = `Similar posters unavailable: ${error.message}`;
    }
  }
}

// -- wiring -----------------------------------------------------------------------------------
function updateSummary() {
  const total = cards.size;
  const busy = [...cards].filter((card) => card.node.getAttribute("aria-busy") === "true").length;
  $("#toolbar").hidden = total === 0;
  $("#upload").classList.toggle("compact", total > 0);
  const failed = [...cards].filter((card) => card.failed).length;
  const analysed = total - busy - failed; // a poster that could not be read was not analysed
  const posters = (n) => `${n} ${n === 1 ? "poster" : "posters"}`;
  let text;
  if (busy) text = `Analysing ${busy} of ${posters(total)}…`;
  else if (analysed || !failed) text = `${posters(analysed)} analysed`;
  if (failed) text = text ? `${text} · ${failed} could not be read` : `${posters(failed)} could not be read`;
  $("#summary").textContent = text;
}

async function addFiles(files) {
  const images = [...files];
  if (!images.length) return;
  const added = images.map((file) => new PosterCard(file));
  for (const card of added) cards.add(card);
  $("#results").prepend(...added.map((card) => card.node));
  updateSummary();
  await Promise.all(added.map((card) => card.run().finally(updateSummary)));
}

function setUpDropzone() {
  const input = $("#file-input");
  const zone = $("#dropzone");
  input.addEventListener("change", () => {
    addFiles(input.files);
    input.value = ""; // choosing the same file again still fires change
  });
  let depth = 0;
  document.addEventListener("dragenter", (event) => {
    if (!event.dataTransfer?.types.includes("Files")) return;
    depth += 1;
    zone.classList.add("dragging");
  });
  document.addEventListener("dragleave", () => {
    depth = Math.max(0, depth - 1);
    if (!depth) zone.classList.remove("dragging");
  });
  document.addEventListener("dragover", (event) => {
    if (event.dataTransfer?.types.includes("Files")) event.preventDefault();
  });
  document.addEventListener("drop", (event) => {
    if (!event.dataTransfer?.files.length) return;
    event.preventDefault();
    depth = 0;
    zone.classList.remove("dragging");
    addFiles(event.dataTransfer.files);
  });
  $("#clear").addEventListener("click", () => {
    for (const card of [...cards]) card.remove();
    input.focus();
  });
}

// -- the poster index, built in the background by `serve --index DIR POSTERS...` ---------------
// Polled while it is built: similar posters appear on the cards once there is an index.
async function pollIndex() {
  const line = $("#index-status");
  let index;
  try {
    const response = await fetch("/api/info");
    if (!response.ok) throw new Error(await errorMessage(response));
    index = (await response.json()).index;
  } catch {
    setTimeout(pollIndex, 10000); // the server may be restarting: ask again, less often
    return;
  }
  const wasSimilar = state.similar;
  state.similar = index.size > 0;
  if (state.similar && !wasSimilar) {
    for (const card of cards) if (!card.failed) card.loadSimilar();
  }
  if (index.state === "building") {
    const done = index.total ? `: ${index.done.toLocaleString()} of ${index.total.toLocaleString()} posters` : "";
    const serving = index.size ? ` (searching the ${index.size.toLocaleString()} indexed before meanwhile)` : "";
    line.textContent = `Indexing posters for similar-poster search${done}…${serving}`;
    line.hidden = false;
    setTimeout(pollIndex, 2000);
  } else if (index.state === "failed") {
    line.textContent = `Similar posters unavailable: ${index.message}`;
    line.hidden = false;
  } else {
    line.hidden = true;
  }
}

const modelReady = loadModel();
setUpDropzone();
modelReady.then(pollIndex);
