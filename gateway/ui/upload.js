// The emergency-call project's upload page, served at /upload: a WAV file goes to
// POST /predict (multipart field `audio_file`), an S3 URI to POST /predict_s3 (form field
// `s3_uri`), and the answer's label and probabilities are shown. The Content Security
// Policy forbids native form submission, so the forms are posted with fetch; everything
// shown is set with textContent, never parsed as HTML.
"use strict";

function element(id) {
  return document.getElementById(id);
}

function make(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function apiHeaders() {
  const key = element("api-key").value.trim();
  return key ? { "X-API-Key": key } : {};
}

async function describeError(response) {
  let body;
  try {
    body = await response.json();
  } catch {
    return `HTTP ${response.status}`;
  }
  if (Array.isArray(body.detail)) {
    const problems = body.detail.map((item) => `${(item.loc || []).join(".")}: ${item.msg}`);
    return `HTTP ${response.status}: ${problems.join("; ")}`;
  }
  const kind = body.error_type ? ` ${body.error_type}` : "";
  return `HTTP ${response.status}${kind}: ${body.detail}`;
}

async function classify(path, body, title) {
  setStatus("Classifying…");
  const response = await fetch(path, { method: "POST", headers: apiHeaders(), body });
  if (!response.ok) throw new Error(await describeError(response));
  const answer = await response.json();
  setStatus(`The call is ${answer.label}.`);
  const card = make("article", "prediction");
  card.dataset.label = answer.label;
  card.append(make("h3", "", title(answer)), probabilityBars(answer.probabilities));
  element("result-items").append(card);
}

async function uploadRecording() {
  const file = element("audio-file").files[0];
  if (!file) throw new Error("Choose a WAV file.");
  const form = new FormData();
  form.append("audio_file", file, file.name);
  const transcript = element("transcript").value.trim();
  if (transcript) form.append("transcript", transcript);
  await classify("/predict", form, (answer) => answer.filename || file.name);
}

async function classifyStoredRecording() {
  const uri = element("s3-uri").value.trim();
  if (!uri) throw new Error("Give the S3 URI of a recording.");
  // A URL-encoded form, as the project's page posted it.
  await classify("/predict_s3", new URLSearchParams({ s3_uri: uri }), (answer) => answer.s3_uri);
}

function probabilityBars(probabilities) {
  const list = make("div", "scores");
  for (const [label, score] of Object.entries(probabilities)) {
    const row = make("div", "score-row");
    row.dataset.label = label;
    const bar = make("span", "bar");
    const fill = make("span", "fill");
    fill.style.width = `${Math.max(0, Math.min(1, score)) * 100}%`;
    bar.append(fill);
    row.append(make("span", "label", label), bar, make("span", "value", `${(score * 100).toFixed(1)}%`));
    list.append(row);
  }
  return list;
}

function setStatus(text, isError = false) {
  const status = element("result-status");
  status.textContent = text;
  status.classList.toggle("error", isError);
}

function guarded(handler) {
  return async (event) => {
    event.preventDefault();
    const buttons = document.querySelectorAll("form button");
    buttons.forEach((button) => { button.disabled = true; });
    setStatus("");
    element("result-items").replaceChildren();
    try {
      await handler();
    } catch (error) {
      setStatus(error.message, true);
    } finally {
      buttons.forEach((button) => { button.disabled = false; });
    }
  };
}

document.addEventListener("DOMContentLoaded", () => {
  element("upload-form").addEventListener("submit", guarded(uploadRecording));
  element("s3-form").addEventListener("submit", guarded(classifyStoredRecording));
});
