// PosterGenre collection page: a grid of a scored collection's posters, filters, paging, and a
// detail panel to correct a poster's genres. Plain DOM, no build step; untrusted text only ever
// goes into textContent.
"use strict";

const PAGE_SIZE = 48;
const THUMB = 384; // pixels on the longer side of a grid thumbnail (sharp at 2x)
const state = { offset: 0, total: 0, info: null, selected: null, detail: null, heatUrl: null };
const $ = (selector) => document.querySelector(selector);

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

async function errorMessage(response) {
  try {
    const body = await response.json();
    if (body && typeof body.error === "string") return body.error;
  } catch {
    // not JSON: fall through to the status line
  }
  return `${response.status} ${response.statusText}`.trim();
}

async function api(path, options = {}) {
  const response = await fetch(path, options);
  if (!response.ok) {
    const error = new Error(await errorMessage(response));
    error.status = response.status;
    throw error;
  }
  return response;
}

function showError(message) {
  const box = $("#error");
  box.textContent = message || "";
  box.hidden = !message;
}

// -- the collection and its live model ----------------------------------------------------
async function loadInfo() {
  const info = await (await api("/api/collection/info")).json();
  state.info = info;
  $("#live-model").textContent = `Live model: ${info.model}`;
  let scores = `Probabilities of ${info.scores_model || "the index's model"}`;
  if (!info.scores_current && info.scores_note) scores += ` (earlier model: ${info.scores_note})`;
  else if (info.scores_model && info.scores_model !== info.model) scores += " (not the live model)";
  $("#live-scores").textContent = `${scores} · ${info.size.toLocaleString()} posters, ` +
    `${info.reviewed.toLocaleString()} reviewed`;
  const notice = $("#notice");
  notice.hidden = info.writable;
  notice.textContent = info.writable ? "" :
    `This collection is read-only (${info.folder}): you can browse it, but corrections cannot be saved.`;
  for (const id of ["#d-accept", "#d-save", "#retrain"]) $(id).disabled = !info.writable;
  const select = $("#f-genre");
  if (select.options.length === 1) {
    for (const genre of info.genres) select.append(el("option", { value: genre, text: genre }));
  }
  const mislabelled = $("#f-sort option[value='mislabelled']");
  mislabelled.disabled = info.mislabelled !== "ready";
  mislabelled.textContent = info.mislabelled === "ready" ? "likely mislabelled first" :
    `likely mislabelled first (${info.mislabelled_message || info.mislabelled})`;
  showRetrain(info.retrain);
  return info;
}

// -- the grid ------------------------------------------------------------------------------
function query() {
  const params = new URLSearchParams({ offset: state.offset, limit: PAGE_SIZE });
  const genre = $("#f-genre").value;
  if (genre) params.set("genre", genre);
  const low = Number($("#f-min").value || 0);
  const high = Number($("#f-max").value || 100);
  if (low > 0) params.set("min_p", Math.min(Math.max(low, 0), 100) / 100);
  if (high < 100) params.set("max_p", Math.min(Math.max(high, 0), 100) / 100);
  params.set("sort", $("#f-sort").value);
  const reviewed = $("#f-reviewed").value;
  if (reviewed) params.set("reviewed", reviewed);
  const q = $("#f-q").value.trim();
  if (q) params.set("q", q);
  return params;
}

function tile(item) {
  const button = el("button", { type: "button", class: "tile", "data-position": item.position });
  const img = el("img", {
    src: `/api/poster/${item.position}?size=${THUMB}`,
    alt: item.name,
    loading: "lazy",
    decoding: "async",
  });
  const genres = item.reviewed ? item.corrected.map((g) => [g, null]) : item.genres_top;
  const chips = el("ul", { class: "tile-genres", "aria-label": item.reviewed ? "Reviewed genres" : "Top genres" });
  for (const [genre, p] of genres) {
    chips.append(el("li", { text: p === null ? genre : `${genre} ${percent(p)}` }));
  }
  if (item.reviewed && !item.corrected.length) chips.append(el("li", { text: "no genre" }));
  button.append(img, el("span", { class: "tile-name", text: item.name }), chips);
  if (item.reviewed) button.append(el("span", { class: "badge", text: "✓ reviewed" }));
  button.addEventListener("click", () => openDetail(item.position));
  return el("li", { class: item.reviewed ? "reviewed" : "" }, button);
}

async function loadPage() {
  const grid = $("#grid");
  grid.setAttribute("aria-busy", "true");
  try {
    const body = await (await api(`/api/collection?${query()}`)).json();
    showError("");
    state.total = body.total;
    grid.replaceChildren(...body.items.map(tile));
    const pages = Math.max(1, Math.ceil(body.total / PAGE_SIZE));
    const page = Math.floor(state.offset / PAGE_SIZE) + 1;
    $("#count").textContent = `${body.total.toLocaleString()} posters match`;
    $("#page-of").textContent = `Page ${page} of ${pages}`;
    $("#prev").disabled = state.offset === 0;
    $("#next").disabled = state.offset + PAGE_SIZE >= body.total;
  } catch (error) {
    showError(error.message);
    grid.replaceChildren();
    $("#count").textContent = "";
  } finally {
    grid.setAttribute("aria-busy", "false");
  }
}

function refilter() {
  state.offset = 0;
  loadPage();
}

// -- one poster ----------------------------------------------------------------------------
function renderBars(detail) {
  const bars = $("#d-bars");
  bars.replaceChildren();
  const predicted = new Set(detail.predicted);
  for (const { genre, probability, threshold } of detail.probabilities) {
    const fill = el("span", { class: "bar-fill" });
    fill.style.width = `${(probability * 100).toFixed(1)}%`;
    const tick = el("span", { class: "bar-threshold", "aria-hidden": "true" });
    tick.style.left = `${(threshold * 100).toFixed(1)}%`;
    const label = `${predicted.has(genre) ? "✓ " : ""}${genre}`;
    const kind = predicted.has(genre) ? "cbar predicted" : "cbar";
    bars.append(el("li", { class: kind, "data-genre": genre },
      el("span", { class: "bar-label", text: label }),
      el("span", { class: "bar-track" }, fill, tick),
      el("span", { class: "bar-value", text: percent(probability) })));
  }
}

function renderGenres(detail) {
  const box = $("#d-genres");
  box.querySelectorAll("label").forEach((node) => node.remove());
  const chosen = new Set(detail.reviewed ? detail.corrected : detail.predicted);
  for (const genre of state.info.genres) {
    const input = el("input", { type: "checkbox", value: genre });
    input.checked = chosen.has(genre);
    box.append(el("label", { class: "genre-box" }, input, el("span", { text: genre })));
  }
  $("#d-given").textContent = detail.given === null ? "No given labels." :
    `Given: ${detail.given.join(", ") || "no genre"}`;
  $("#d-suggested").textContent = detail.suggested ?
    `Suggested: ${detail.suggested.join(", ") || "no genre"}` +
    (detail.label_quality === null ? "" : ` (label quality ${detail.label_quality.toFixed(2)})`) : "";
  $("#d-saved").textContent = detail.reviewed ? `Reviewed ${detail.reviewed_at}` : "Not reviewed yet";
}

async function loadHeat(position) {
  const img = $("#d-heat");
  img.hidden = true;
  $("#d-heat-caption").textContent = "Computing where the model looked…";
  try {
    const response = await api(`/api/collection/${position}/explain`);
    if (state.selected !== position) return;
    if (state.heatUrl) URL.revokeObjectURL(state.heatUrl);
    state.heatUrl = URL.createObjectURL(await response.blob());
    img.src = state.heatUrl;
    const genre = decodeURIComponent(response.headers.get("X-Genre") || "");
    img.alt = `Where the model found ${genre}`;
    img.hidden = false;
    $("#d-heat-caption").textContent = `Where the model found ${genre}`;
  } catch (error) {
    if (state.selected === position) $("#d-heat-caption").textContent = error.message;
  }
}

async function loadSimilar(position) {
  const strip = $("#d-similar");
  strip.replaceChildren();
  try {
    const body = await (await api(`/api/collection/${position}/similar?k=8`)).json();
    if (state.selected !== position) return;
    for (const n of body.results) {
      const button = el("button", { type: "button", class: "similar-item", title: n.name },
        el("img", { src: `${n.image_url}?size=${THUMB}`, alt: n.name, loading: "lazy" }),
        el("span", { text: `${(n.similarity * 100).toFixed(0)}%` }));
      button.addEventListener("click", () => openDetail(n.position));
      strip.append(el("li", {}, button));
    }
  } catch (error) {
    strip.append(el("li", { class: "muted", text: error.message }));
  }
}

async function openDetail(position) {
  state.selected = position;
  const panel = $("#detail");
  try {
    const detail = await (await api(`/api/collection/${position}`)).json();
    if (state.selected !== position) return;
    state.detail = detail;
    $("#d-name").textContent = detail.name;
    $("#d-meta").textContent = `${detail.id} · ${detail.shown}`;
    const poster = $("#d-poster");
    poster.src = `/api/poster/${position}`;
    poster.alt = `Poster of ${detail.name}`;
    renderBars(detail);
    renderGenres(detail);
    panel.hidden = false;
    $("#d-close").focus();
    loadHeat(position);
    loadSimilar(position);
  } catch (error) {
    showError(error.message);
  }
}

function closeDetail() {
  const position = state.selected;
  $("#detail").hidden = true;
  state.selected = null;
  const back = document.querySelector(`.tile[data-position="${position}"]`);
  if (back) back.focus();
}

async function save(how) {
  const position = state.selected;
  const status = $("#d-saved");
  status.textContent = "Saving…";
  try {
    const options = how === "accept" ? { method: "POST" } : {
      method: "PUT",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({
        genres: [...document.querySelectorAll("#d-genres input:checked")].map((i) => i.value),
      }),
    };
    const path = `/api/collection/${position}/${how === "accept" ? "accept" : "genres"}`;
    const detail = await (await api(path, options)).json();
    state.detail = detail;
    renderGenres(detail);
    status.textContent = `Saved · reviewed ${detail.reviewed_at}`;
    const old = document.querySelector(`.tile[data-position="${position}"]`);
    if (old) old.parentElement.replaceWith(tile(detail));
    loadInfo();
  } catch (error) {
    status.textContent = error.message;
  }
}

// -- retraining ----------------------------------------------------------------------------
function showRetrain(status) {
  const text = {
    idle: "",
    running: `Retraining on ${status.reviewed} reviewed posters…`,
    done: status.message || "Retrained",
    failed: `Retraining failed: ${status.message}`,
  }[status.state] ?? status.state;
  $("#retrain-status").textContent = text;
  $("#retrain").disabled = status.state === "running" || !(state.info && state.info.writable);
}

async function pollRetrain() {
  const status = await (await api("/api/collection/retrain")).json();
  showRetrain(status);
  if (status.state === "running") setTimeout(pollRetrain, 2000);
  else if (status.state === "done") {
    await loadInfo();
    loadPage();
  }
}

async function retrain() {
  try {
    showRetrain(await (await api("/api/collection/retrain", { method: "POST" })).json());
    setTimeout(pollRetrain, 2000);
  } catch (error) {
    $("#retrain-status").textContent = error.message;
  }
}

// -- wiring --------------------------------------------------------------------------------
function debounce(fn, ms) {
  let timer = null;
  return () => {
    clearTimeout(timer);
    timer = setTimeout(fn, ms);
  };
}

function wire() {
  $("#filters").addEventListener("submit", (event) => {
    event.preventDefault();
    refilter();
  });
  for (const id of ["#f-genre", "#f-sort", "#f-reviewed", "#f-min", "#f-max"]) {
    $(id).addEventListener("change", refilter);
  }
  $("#f-q").addEventListener("input", debounce(refilter, 250));
  $("#prev").addEventListener("click", () => {
    state.offset = Math.max(0, state.offset - PAGE_SIZE);
    loadPage();
  });
  $("#next").addEventListener("click", () => {
    state.offset += PAGE_SIZE;
    loadPage();
  });
  $("#d-close").addEventListener("click", closeDetail);
  $("#d-accept").addEventListener("click", () => save("accept"));
  $("#d-save").addEventListener("click", () => save("genres"));
  $("#retrain").addEventListener("click", retrain);
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && !$("#detail").hidden) closeDetail();
  });
}

async function openCollection() {
  try {
    const info = await loadInfo();
    document.querySelector("main").removeAttribute("data-empty");
    if (info.retrain.state === "running") setTimeout(pollRetrain, 2000);
    await loadPage();
  } catch (error) {
    $("#live-model").textContent = error.message;
    document.querySelector("main").setAttribute("data-empty", "true");
    // 503: the collection is still being indexed; the page opens when it is ready.
    if (error.status === 503) setTimeout(openCollection, 3000);
  }
}

async function start() {
  wire();
  await openCollection();
}

start();
