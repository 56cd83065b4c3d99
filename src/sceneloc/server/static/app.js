// sceneloc page: choose an image, type queries, see each query's best box.
//
// The model is asked once per Locate, with threshold 0 and a generous top_k, so the
// threshold slider can re-filter the answer here without asking the model again: a query
// counts as found when its best candidate's score is at least the slider's value.
"use strict";

// The same Tableau 10 colours as sceneloc.results.PALETTE, one per query in order.
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
const locateButton = $("locate");
const message = $("message");
const output = $("output");
const slider = $("threshold");
const sliderValue = $("threshold-value");
const downloadButton = $("download");
const picture = $("picture");
const boxes = $("boxes");
const list = $("results");

let file = null; // the chosen image (a File)
let answer = null; // the last /v1/locate response, as it came (threshold 0)

function say(text, isError = false) {
  message.textContent = text;
  message.classList.toggle("error", isError);
}

// ---- Choosing an image: the file input, or a file dropped on its label ----

function choose(chosen) {
  if (!chosen) return;
  file = chosen;
  answer = null;
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

// ---- Asking the server ----

form.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
    event.preventDefault();
    form.requestSubmit();
  }
});

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const texts = queries.value.split("\n").map((line) => line.trim()).filter(Boolean);
  if (!file) return say("Choose an image first.", true);
  if (!texts.length) return say("Type at least one query.", true);

  const body = new FormData();
  body.append("image", file);
  for (const text of texts) body.append("queries", text);
  body.append("threshold", "0");
  body.append("top_k", String(TOP_K));

  const asked = file;
  locateButton.disabled = true;
  say("Locating…");
  try {
    const reply = await fetch("v1/locate", { method: "POST", body });
    const data = await reply.json().catch(() => ({}));
    if (!reply.ok) throw new Error(data.error || `The server answered ${reply.status}.`);
    if (asked !== file) return; // another image was chosen meanwhile
    answer = data;
    say(`Answered ${texts.length} ${texts.length === 1 ? "query" : "queries"}` +
        ` in ${Math.round(data.timing_ms)} ms.`);
  } catch (error) {
    answer = null;
    say(error instanceof TypeError ? "The server cannot be reached." : error.message, true);
  } finally {
    locateButton.disabled = false;
    render();
  }
});

// ---- Showing the answer at the slider's threshold ----

// The answer as the server would have given it at the slider's threshold: weaker
// candidates dropped, box and score null where none is left. This is also what
// "Download JSON" saves, with the threshold used.
function filtered() {
  const threshold = Number(slider.value);
  const results = answer.results.map((result) => {
    const candidates = result.candidates.filter((c) => c.score >= threshold);
    const best = candidates[0]; // candidates come best first
    return { ...result, box: best ? best.box : null, score: best ? best.score : null, candidates };
  });
  return { ...answer, threshold, results };
}

function render() {
  sliderValue.value = Number(slider.value).toFixed(2);
  boxes.replaceChildren();
  list.replaceChildren();
  downloadButton.disabled = !answer;
  if (!answer) return;

  const { width, height } = answer.image;
  filtered().results.forEach((result, index) => {
    const colour = PALETTE[index % PALETTE.length];
    const item = document.createElement("li");
    item.style.borderLeft = `4px solid ${colour}`;
    item.append(
      tag("span", "swatch", String(index + 1), colour),
      tag("span", "query", result.query),
      result.box
        ? tag("span", "score", `score ${result.score.toFixed(2)}`)
        : tag("span", "missing", "not found"),
    );
    if (result.box) {
      boxes.append(drawBox(result.box, width, height, colour, index + 1));
      item.append(crop(result.box, width, height));
    }
    list.append(item);
  });
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

// ---- Download JSON: the answer at the current threshold ----

downloadButton.addEventListener("click", () => {
  const text = JSON.stringify(filtered(), null, 2);
  const link = document.createElement("a");
  link.href = URL.createObjectURL(new Blob([text], { type: "application/json" }));
  link.download = `${file.name.replace(/\.[^.]*$/, "")}.sceneloc.json`;
  link.click();
  setTimeout(() => URL.revokeObjectURL(link.href), 1000);
});

// ---- The loaded model and its default threshold ----

fetch("v1/models")
  .then((reply) => (reply.ok ? reply.json() : Promise.reject(new Error())))
  .then((info) => {
    const model = Array.isArray(info.models) ? info.models[0] : info;
    if (model && typeof model.default_threshold === "number") {
      slider.value = String(model.default_threshold);
    }
    if (model && model.name) $("model").textContent = `Model: ${model.name}`;
    render();
  })
  .catch(() => say("Could not read the model's default threshold; the slider starts at 0.50."));
