// lensfinder inspection page: shows the cached candidates and posts keyboard grades.
// Plain browser JavaScript, no build step. Every catalogue value is inserted with
// textContent, never as HTML.
"use strict";

const GRADER_KEY = "lensfinder.inspect.grader";
const GRADER_PATTERN = /^[A-Za-z0-9][A-Za-z0-9 ._-]{0,39}$/;
const SHORT_LABELS = { 3: "sure", 2: "probable", 1: "possible", 0: "not a lens" };

const state = {
  manifest: null,
  candidates: [],
  cards: [],
  current: 0,
  grader: "",
  grades: new Map(), // String(object_id) -> {grade, status: "saved" | "pending"}
};

function $(id) { return document.getElementById(id); }

function el(tag, props = {}, children = []) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(key, value);
  }
  for (const child of children) if (child) node.appendChild(child);
  return node;
}

let toastTimer = null;
function toast(message, kind = "error") {
  const box = $("toast");
  box.textContent = message;
  box.className = kind;
  box.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { box.hidden = true; }, 4000);
}

function scaleName(grade) {
  return state.manifest.grade_scale[String(grade)];
}

function bandSrc(candidate, band, stretch) {
  return "/files/" + candidate.images[`b${band}-${stretch}`];
}

function figure(src, caption, alt) {
  return el("figure", {}, [el("img", { src, alt, loading: "lazy" }), el("figcaption", { text: caption })]);
}

function fmt(value, digits) {
  return value === null || value === undefined ? "–" : Number(value).toFixed(digits);
}

function renderCard(candidate, index) {
  const m = state.manifest;
  const stretch = $("stretch").value;
  const rgbCaption = `R ${m.rgb.R.join("+")} · G ${m.rgb.G.join("+")} · B ${m.rgb.B.join("+")}`;
  const side = el("div", { class: "side" });
  for (const kind of m.maps) {
    const label = kind === "gradcam" ? "Grad-CAM" : "occlusion";
    side.appendChild(figure("/files/" + candidate.images[kind], label, `${label} map`));
  }
  if (!m.maps.length) side.appendChild(el("p", { class: "note", text: "no maps: " + (m.maps_note || "") }));
  const strip = el("div", { class: "strip" });
  m.bands.forEach((band, b) => {
    const img = figure(bandSrc(candidate, b, stretch), band, `${band} band`);
    img.querySelector("img").dataset.band = String(b);
    strip.appendChild(img);
  });
  const details = el("dl");
  const add = (term, value, cls) => {
    details.appendChild(el("dt", { text: term }));
    details.appendChild(el("dd", { text: value, class: cls || "" }));
  };
  add("object", String(candidate.object_id));
  add("score", `${fmt(candidate.score, 4)} (logit ${fmt(candidate.logit, 2)})`);
  add("flags", candidate.flag_names, candidate.flags ? "flagged" : "");
  add("ra, dec", `${fmt(candidate.ra, 5)}, ${fmt(candidate.dec, 5)}`);
  if (m.has_known_lens_column) add("known lens", candidate.known_lens_name || "–", candidate.known_lens_name ? "known" : "");
  const buttons = el("div", { class: "buttons" });
  for (const grade of [3, 2, 1, 0]) {
    const button = el("button", { type: "button", title: scaleName(grade), text: `${grade} ${SHORT_LABELS[grade]}` });
    button.dataset.grade = String(grade);
    button.addEventListener("click", () => { setCurrent(index); submitGrade(index, grade); });
    buttons.appendChild(button);
  }
  const card = el("article", { class: "card", tabindex: "-1", dataset: { index: String(index), objectId: String(candidate.object_id) } }, [
    el("div", { class: "head" }, [
      el("span", { class: "rank", text: `#${candidate.rank}` }),
      el("span", { class: "badge", text: "ungraded" }),
    ]),
    el("div", { class: "images" }, [figure("/files/" + candidate.images.rgb, rgbCaption, "colour composite"), side]),
    strip, details, buttons,
  ]);
  card.addEventListener("click", () => setCurrent(index, false));
  return card;
}

function showGrade(index) {
  const candidate = state.candidates[index];
  const card = state.cards[index];
  const entry = state.grades.get(String(candidate.object_id));
  const badge = card.querySelector(".badge");
  badge.className = "badge";
  if (entry) {
    badge.classList.add(`g${entry.grade}`);
    if (entry.status === "pending") badge.classList.add("pending");
    badge.textContent = `${entry.grade} · ${scaleName(entry.grade)}`;
    card.dataset.grade = String(entry.grade);
    card.dataset.status = entry.status;
  } else {
    badge.textContent = "ungraded";
    delete card.dataset.grade;
    delete card.dataset.status;
  }
  for (const button of card.querySelectorAll(".buttons button")) {
    button.classList.toggle("chosen", !!entry && button.dataset.grade === String(entry.grade));
  }
}

function updateProgress() {
  let graded = 0;
  for (const candidate of state.candidates) if (state.grades.has(String(candidate.object_id))) graded += 1;
  $("progress").textContent = state.grader
    ? `${graded} / ${state.candidates.length} graded by ${state.grader}`
    : "enter your name to grade";
}

function setCurrent(index, scroll = true) {
  if (!state.cards.length) return;
  index = Math.max(0, Math.min(state.cards.length - 1, index));
  state.cards[state.current].classList.remove("current");
  state.current = index;
  const card = state.cards[index];
  card.classList.add("current");
  if (scroll) card.scrollIntoView({ block: "center", behavior: "instant" });
}

function firstUngraded(from = 0) {
  for (let k = 0; k < state.candidates.length; k += 1) {
    const index = (from + k) % state.candidates.length;
    if (!state.grades.has(String(state.candidates[index].object_id))) return index;
  }
  return -1;
}

async function submitGrade(index, grade) {
  if (!state.grader) {
    toast("Enter your name first: grades are recorded per grader.");
    $("grader").focus();
    return;
  }
  const candidate = state.candidates[index];
  const key = String(candidate.object_id);
  const previous = state.grades.get(key);
  state.grades.set(key, { grade, status: "pending" });
  showGrade(index);
  updateProgress();
  if (index === state.current) setCurrent(index + 1);
  try {
    const response = await fetch("/api/grades", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ grader: state.grader, object_id: candidate.object_id, grade }),
    });
    const body = await response.json();
    if (!response.ok) throw new Error(body.error || response.statusText);
    const latest = state.grades.get(key);
    if (latest && latest.grade === grade) state.grades.set(key, { grade, status: "saved" });
  } catch (error) {
    if (previous) state.grades.set(key, previous); else state.grades.delete(key);
    toast(`Grade for object ${key} not saved: ${error.message}`);
  }
  showGrade(index);
  updateProgress();
}

async function loadGrades() {
  state.grades.clear();
  if (state.grader) {
    const response = await fetch("/api/grades?grader=" + encodeURIComponent(state.grader));
    const body = await response.json();
    if (!response.ok) { toast(body.error || "could not load grades"); return; }
    for (const row of body.grades) state.grades.set(String(row.object_id), { grade: row.grade, status: "saved" });
  }
  state.cards.forEach((_, index) => showGrade(index));
  updateProgress();
  const next = firstUngraded(0);
  setCurrent(next >= 0 ? next : 0);
}

function setGrader(name) {
  state.grader = name;
  $("grader-current").hidden = !name;
  $("grader-current").textContent = name ? `grading as ${name}` : "";
  $("grader-save").textContent = name ? "Switch grader" : "Start grading";
}

function onKey(event) {
  const tag = event.target.tagName;
  if (tag === "INPUT" || tag === "SELECT" || tag === "TEXTAREA") return;
  if (event.ctrlKey || event.metaKey || event.altKey || !state.cards.length) return;
  const key = event.key;
  if (["0", "1", "2", "3"].includes(key)) {
    event.preventDefault();
    submitGrade(state.current, Number(key));
  } else if (key === "ArrowRight" || key === "ArrowDown" || key === "j") {
    event.preventDefault();
    setCurrent(state.current + 1);
  } else if (key === "ArrowLeft" || key === "ArrowUp" || key === "k") {
    event.preventDefault();
    setCurrent(state.current - 1);
  } else if (key === "n") {
    const next = firstUngraded(state.current + 1);
    if (next >= 0) setCurrent(next); else toast("Every candidate is graded.", "info");
  }
}

async function main() {
  const response = await fetch("/api/candidates");
  state.manifest = await response.json();
  state.candidates = state.manifest.candidates;
  const model = state.manifest.model || {};
  $("run-info").textContent =
    `${state.manifest.run} · top ${state.candidates.length} · model ${model.name || "?"} (${model.architecture || "?"})`;
  const grid = $("grid");
  state.cards = state.candidates.map((candidate, index) => grid.appendChild(renderCard(candidate, index)));
  $("stretch").addEventListener("change", () => {
    const stretch = $("stretch").value;
    state.cards.forEach((card, index) => {
      for (const img of card.querySelectorAll("img[data-band]")) img.src = bandSrc(state.candidates[index], img.dataset.band, stretch);
    });
    $("stretch").blur();
  });
  $("grader-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const name = $("grader").value.trim();
    if (!GRADER_PATTERN.test(name)) { toast("Name: 1-40 letters, digits, space, . _ -"); return; }
    localStorage.setItem(GRADER_KEY, name);
    setGrader(name);
    $("grader").blur();
    await loadGrades();
  });
  document.addEventListener("keydown", onKey);
  const saved = localStorage.getItem(GRADER_KEY) || "";
  if (GRADER_PATTERN.test(saved)) { $("grader").value = saved; setGrader(saved); }
  await loadGrades();
  document.body.dataset.ready = "true";
}

main().catch((error) => toast("Could not load the candidates: " + error.message));
