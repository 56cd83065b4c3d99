// sceneloc page: choose an image, then either type queries and see each query's best box
// (locate), or draw boxes on the image and read what the model says each shows (describe).
//
// Locate asks the model once per press, with threshold 0 and a generous top_k, so the
// threshold slider can re-filter the answer here without asking the model again: a query
// counts as found when its best candidate's score is at least the slider's value.
"use strict";

// The same Tableau 10 colours as sceneloc.results.PALETTE, one per query or region in order.
const PALETTE = [
  "#4E79A7", "#F28E2B", "#E15759", "#76B7B2", "#59A14F",
  "#EDC948", "#B07AA1", "#FF9DA7", "#9C755F", "#BAB0AC",
];
const TOP_K = 20; // candidates kept per query, for the slider to choose from

const $ = (id) => document.getElementById(id);
const form = $("ask");
const fileInput = $("file");
const drop = $("drop");
const queries = $("queries");
const submitButton = $("submit");
const message = $("message");
const output = $("output");
const slider = $("threshold");
const sliderValue = $("threshold-value");
const downloadButton = $("download");
const stage = $("stage");
const picture = $("picture");
const boxes = $("boxes");
const list = $("results");

let file = null; // the chosen image (a File)
let mode = "locate"; // or "describe"
// The last answer of each mode, as it came (locate's at threshold 0).
const answers = { locate: null, describe: null };
let drawn = []; // describe mode: the boxes drawn so far, [x1, y1, x2, y2] in image pixels
let dragging = null; // the box being drawn: { from: [x, y], to: [x, y] }

function say(text, isError = false) {
  message.textContent = text;
  message.classList.toggle("error", isError);
}

// ---- Choosing an image: the file input, or a file dropped on its label ----

function choose(chosen) {
  if (!chosen) return;
  file = chosen;
  answers.locate = answers.describe = null;
  drawn = [];
  URL.revokeObjectURL(picture.src);
  picture.src = URL.createObjectURL(chosen);
  $("drop-text").textContent = `${chosen.name} (drop or choose another)`;
  output.hidden = false;
  say("");
  render();
}

fileInput.addEventListener("change", () => choose(fileInput.files[0]));
drop.addEventListener("dragover", (event) => {
  event.preventDefault();
  drop.classList.add("over");
});
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  drop.classList.remove("over");
  choose(event.dataTransfer.files[0]);
});
// A file dropped beside the zone must not make the browser leave the page.
window.addEventListener("dragover", (event) => event.preventDefault());
window.addEventListener("drop", (event) => event.preventDefault());

// ---- Locate or describe ----

function switchMode(chosen) {
  mode = chosen;
  const describing = mode === "describe";
  $("locate-fields").hidden = describing;
  $("describe-fields").hidden = !describing;
  for (const element of document.querySelectorAll(".threshold")) element.hidden = describing;
  $("submit-label").textContent = describing ? "Describe" : "Locate";
  stage.classList.toggle("drawing", describing);
  say("");
  render();
}

for (const radio of form.elements.mode) {
  radio.addEventListener("change", () => switchMode(radio.value));
}

// ---- Drawing the boxes to describe ----

// Where the pointer is, in pixels of the image, kept inside it.
function imagePoint(event) {
  const shown = picture.getBoundingClientRect();
  const clamp = (value) => Math.min(1, Math.max(0, value));
  return [
    Math.round(clamp((event.clientX - shown.left) / shown.width) * picture.naturalWidth),
    Math.round(clamp((event.clientY - shown.top) / shown.height) * picture.naturalHeight),
  ];
}

function spanned({ from, to }) {
  return [Math.min(from[0], to[0]), Math.min(from[1], to[1]),
          Math.max(from[0], to[0]), Math.max(from[1], to[1])];
}

stage.addEventListener("pointerdown", (event) => {
  if (mode !== "describe" || !picture.naturalWidth || event.button !== 0) return;
  event.preventDefault();
  stage.setPointerCapture(event.pointerId);
  const point = imagePoint(event);
  dragging = { from: point, to: point };
});
stage.addEventListener("pointermove", (event) => {
  if (!dragging) return;
  dragging.to = imagePoint(event);
  render();
});
stage.addEventListener("pointerup", () => {
  if (!dragging) return;
  const [x1, y1, x2, y2] = spanned(dragging);
  dragging = null;
  if (x2 > x1 && y2 > y1) {
    drawn = [...drawn, [x1, y1, x2, y2]];
    answers.describe = null; // the regions changed: the old captions are not theirs
    say(`${drawn.length} ${drawn.length === 1 ? "box" : "boxes"} drawn; press Describe.`);
  }
  render();
});
stage.addEventListener("pointercancel", () => {
  dragging = null;
  render();
});

$("clear").addEventListener("click", () => {
  drawn = [];
  answers.describe = null;
  say("");
  render();
});

// ---- Asking the server ----

form.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
    event.preventDefault();
    form.requestSubmit();
  }
});

// What to send for a Locate press, or null (having said why) when there is nothing to ask.
function locateRequest() {
  const texts = queries.value.split("\n").map((line) => line.trim()).filter(Boolean);
  if (!texts.length) {
    say("Type at least one query.", true);
    return null;
  }
  const body = new FormData();
  body.append("image", file);
  for (const text of texts) body.append("queries", text);
  body.append("threshold", "0");
  body.append("top_k", String(TOP_K));
  const done = (data) =>
    `Answered ${texts.length} ${texts.length === 1 ? "query" : "queries"}` +
    ` in ${Math.round(data.timing_ms)} ms.`;
  return { path: "v1/locate", body, progress: "Locating…", done };
}

// What to send for a Describe press: the drawn boxes, or none for dense captions.
function describeRequest() {
  const body = new FormData();
  body.append("image", file);
  for (const box of drawn) body.append("box", box.join(","));
  const done = (data) =>
    `Described ${data.regions.length} ${data.regions.length === 1 ? "region" : "regions"}` +
    ` in ${Math.round(data.timing_ms)} ms.`;
  return { path: "v1/describe", body, progress: "Describing…", done };
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  if (!file) return say("Choose an image first.", true);
  const request = mode === "locate" ? locateRequest() : describeRequest();
  if (!request) return;

  const asked = { file, mode, drawn };
  submitButton.disabled = true;
  say(request.progress);
  try {
    const reply = await fetch(request.path, { method: "POST", body: request.body });
    const data = await reply.json().catch(() => ({}));
    if (!reply.ok) throw new Error(data.error || `The server answered ${reply.status}.`);
    if (asked.file !== file || asked.drawn !== drawn) return; // asked about something else
    answers[asked.mode] = data;
    say(request.done(data));
  } catch (error) {
    answers[asked.mode] = null;
    say(error instanceof TypeError ? "The server cannot be reached." : error.message, true);
  } finally {
    submitButton.disabled = false;
    render();
  }
});

// ---- Showing the answer ----

// The locate answer as the server would have given it at the slider's threshold: weaker
// candidates dropped, box and score null where none is left. This is also what
// "Download JSON" saves, with the threshold used.
function filtered() {
  const threshold = Number(slider.value);
  const results = answers.locate.results.map((result) => {
    const candidates = result.candidates.filter((c) => c.score >= threshold);
    const best = candidates[0]; // candidates come best first
    return { ...result, box: best ? best.box : null, score: best ? best.score : null, candidates };
  });
  return { ...answers.locate, threshold, results };
}

function render() {
  sliderValue.value = Number(slider.value).toFixed(2);
  boxes.replaceChildren();
  list.replaceChildren();
  downloadButton.disabled = !answers[mode];
  if (mode === "locate") renderLocated();
  else renderDescribed();
}

function renderLocated() {
  if (!answers.locate) return;
  const { width, height } = answers.locate.image;
  filtered().results.forEach((result, index) => {
    const colour = PALETTE[index % PALETTE.length];
    const item = listItem(index, colour, tag("span", "query", result.query));
    item.append(
      result.box
        ? tag("span", "score", `score ${result.score.toFixed(2)}`)
        : tag("span", "missing", "not found"),
    );
    if (result.box) {
      boxes.append(drawBox(result.box, width, height, colour, index + 1));
      item.append(crop(result.box, width, height));
    }
  });
}

// The answer's regions with their captions; before one, the boxes drawn so far (dashed).
function renderDescribed() {
  const answer = answers.describe;
  if (!answer) {
    const pending = dragging ? [...drawn, spanned(dragging)] : drawn;
    pending.forEach((box, index) => {
      const colour = PALETTE[index % PALETTE.length];
      const shown = drawBox(box, picture.naturalWidth, picture.naturalHeight, colour, index + 1);
      shown.classList.add("pending");
      boxes.append(shown);
    });
    return;
  }
  const { width, height } = answer.image;
  if (!answer.regions.length) list.append(tag("li", "missing", "The model found no regions."));
  answer.regions.forEach((region, index) => {
    const colour = PALETTE[index % PALETTE.length];
    const item = listItem(index, colour, tag("span", "caption", region.caption));
    item.append(
      region.score === null
        ? tag("span", "missing", "no score")
        : tag("span", "score", `score ${region.score.toFixed(2)}`),
      crop(region.box, width, height),
    );
    boxes.append(drawBox(region.box, width, height, colour, index + 1));
  });
}

// A numbered line of the list, in its query's or region's colour.
function listItem(index, colour, text) {
  const item = document.createElement("li");
  item.style.borderLeft = `4px solid ${colour}`;
  item.append(tag("span", "swatch", String(index + 1), colour), text);
  list.append(item);
  return item;
}

function tag(name, className, text, background) {
  const element = document.createElement(name);
  element.className = className;
  element.textContent = text;
  if (background) element.style.background = background;
  return element;
}

// A box in percent of the image, so it follows the picture at any displayed size.
function drawBox([x1, y1, x2, y2], width, height, colour, number) {
  const box = document.createElement("div");
  box.className = "box";
  box.style.borderColor = colour;
  box.style.left = `${(100 * x1) / width}%`;
  box.style.top = `${(100 * y1) / height}%`;
  box.style.width = `${(100 * (x2 - x1)) / width}%`;
  box.style.height = `${(100 * (y2 - y1)) / height}%`;
  box.append(tag("span", "", String(number), colour));
  if (y1 < 0.05 * height) box.classList.add("top"); // no room above: label inside
  return box;
}

// The box's region of the loaded picture, 192 pixels on its longer side.
function crop([x1, y1, x2, y2], width, height) {
  const canvas = document.createElement("canvas");
  const w = Math.max(1, x2 - x1);
  const h = Math.max(1, y2 - y1);
  const scale = 192 / Math.max(w, h);
  canvas.width = Math.max(1, Math.round(w * scale));
  canvas.height = Math.max(1, Math.round(h * scale));
  const sx = picture.naturalWidth / width;
  const sy = picture.naturalHeight / height;
  if (picture.complete && picture.naturalWidth) {
    canvas.getContext("2d").drawImage(
      picture, x1 * sx, y1 * sy, w * sx, h * sy, 0, 0, canvas.width, canvas.height);
  }
  return canvas;
}

slider.addEventListener("input", render);
picture.addEventListener("load", render); // crops need the decoded picture

// ---- Download JSON: the answer as shown (locate's at the current threshold) ----

downloadButton.addEventListener("click", () => {
  const shown = mode === "locate" ? filtered() : answers.describe;
  const text = JSON.stringify(shown, null, 2);
  const link = document.createElement("a");
  link.href = URL.createObjectURL(new Blob([text], { type: "application/json" }));
  link.download = `${file.name.replace(/\.[^.]*$/, "")}.sceneloc.json`;
  link.click();
  setTimeout(() => URL.revokeObjectURL(link.href), 1000);
});

// ---- The loaded models: the locating one's default threshold, and who describes ----

fetch("v1/models")
  .then((reply) => (reply.ok ? reply.json() : Promise.reject(new Error())))
  .then((info) => {
    const models = info.models || [];
    const locating = models.find((model) => model.serves.includes("locate"));
    const describing = models.find((model) => model.serves.includes("describe"));
    if (locating && typeof locating.default_threshold === "number") {
      slider.value = String(locating.default_threshold);
    }
    const named = models.map((model) => `${model.name} (${model.serves.join(", ")})`);
    if (named.length) $("model").textContent = `Model: ${named.join("; ")}`;
    if (!describing) {
      $("describe-mode").disabled = true;
      $("describe-mode").parentElement.append(
        tag("small", "", " (no model here describes: sceneloc serve --describe-model NAME)"));
    }
    render();
  })
  .catch(() => say("Could not read the model's default threshold; the slider starts at 0.50."));
