// The try-it page of the mtc gateway: lists the tasks of GET /v1/models and calls
// POST /v1/{task}/predict with text, a photo or a recording (or /v1/{task}/predict-s3 with
// the S3 URI of one). No framework and no build step; everything shown is set with
// textContent, never parsed as HTML.
"use strict";

// MediaPipe Pose landmarks joined into a skeleton (names as the pose service sends them).
const SKELETON = [
  ["left_shoulder", "right_shoulder"], ["left_hip", "right_hip"],
  ["left_shoulder", "left_hip"], ["right_shoulder", "right_hip"],
  ["left_shoulder", "left_elbow"], ["left_elbow", "left_wrist"],
  ["right_shoulder", "right_elbow"], ["right_elbow", "right_wrist"],
  ["left_wrist", "left_index"], ["left_wrist", "left_pinky"], ["left_wrist", "left_thumb"],
  ["right_wrist", "right_index"], ["right_wrist", "right_pinky"], ["right_wrist", "right_thumb"],
  ["left_hip", "left_knee"], ["left_knee", "left_ankle"],
  ["right_hip", "right_knee"], ["right_knee", "right_ankle"],
  ["left_ankle", "left_heel"], ["left_heel", "left_foot_index"],
  ["right_ankle", "right_heel"], ["right_heel", "right_foot_index"],
  ["nose", "left_eye"], ["left_eye", "left_ear"], ["nose", "right_eye"], ["right_eye", "right_ear"],
  ["mouth_left", "mouth_right"],
];
const MIN_VISIBILITY = 0.5;
const CANVAS_MAX_SIDE = 480;
// Browsers record WebM or Ogg Opus, which the audio service does not read: recordings are
// sent as 16-bit mono WAV at the rate speech models use.
const WAV_SAMPLE_RATE = 16000;

const state = { models: [], task: null, recording: null, recorder: null };

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

// ---------------------------------------------------------------- tasks

async function loadModels() {
  const status = element("models-status");
  try {
    const response = await fetch("/v1/models", { headers: apiHeaders() });
    if (!response.ok) throw new Error(await describeError(response));
    state.models = (await response.json()).models;
  } catch (error) {
    status.textContent = `Could not list the models: ${error.message}`;
    status.classList.add("error");
    return;
  }
  const nav = element("tasks");
  nav.replaceChildren();
  for (const model of state.models) {
    const button = make("button", model.ready ? "" : "not-ready", model.task);
    button.type = "button";
    button.dataset.task = model.task;
    button.title = model.ready ? `${model.kind || "text"} model` : `not ready: ${model.status}`;
    button.addEventListener("click", () => selectTask(model.task));
    nav.append(button);
  }
  status.textContent = state.models.length
    ? "Pick a task, give it something to classify."
    : "The gateway serves no task.";
  if (state.models.length) selectTask(state.models[0].task);
}

function selectTask(task) {
  const model = state.models.find((entry) => entry.task === task);
  if (!model) return;
  state.task = model;
  for (const button of element("tasks").children) {
    button.setAttribute("aria-pressed", String(button.dataset.task === task));
  }
  const kind = model.kind || "text";
  element("task-panel").hidden = false;
  element("task-title").textContent = task;
  element("task-model").textContent = describeModel(model);
  element("text-form").hidden = kind !== "text";
  element("image-form").hidden = kind !== "image";
  element("audio-form").hidden = kind !== "audio";
  // A kind this page has no form of its own for: its route's JSON body, typed by hand.
  element("json-form").hidden = ["text", "image", "audio"].includes(kind);
  clearResult();
}

function describeModel(model) {
  if (!model.name) return `No model answer yet (${model.status}${model.reason ? `: ${model.reason}` : ""}).`;
  const labels = model.labels ? ` Labels: ${model.labels.join(", ")}.` : "";
  const readiness = model.ready ? "" : ` Not ready: ${model.status}.`;
  return `Model ${model.name}, version ${model.version}.${labels}${readiness}`;
}

// ---------------------------------------------------------------- calling the API

async function predict(body, contentType, route = "predict") {
  const headers = apiHeaders();
  if (contentType) headers["Content-Type"] = contentType;
  setStatus("Classifying…");
  const started = performance.now();
  const response = await fetch(`/v1/${encodeURIComponent(state.task.task)}/${route}`, {
    method: "POST",
    headers,
    body,
  });
  if (!response.ok) throw new Error(await describeError(response));
  const answer = await response.json();
  const timings = [
    ["model", response.headers.get("x-inference-time")],
    ["gateway total", response.headers.get("x-total-time")],
  ]
    .filter(([, value]) => value !== null)
    .map(([name, value]) => `${name} ${Number(value).toFixed(1)} ms`);
  const round = `${(performance.now() - started).toFixed(0)} ms round trip`;
  setStatus(
    `${answer.model.name} version ${answer.model.version}: ${[...timings, round].join(", ")}`,
  );
  return answer;
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

function guarded(handler) {
  return async (event) => {
    event.preventDefault();
    const buttons = document.querySelectorAll(".task-form button");
    buttons.forEach((button) => { button.disabled = true; });
    clearResult();
    try {
      await handler();
    } catch (error) {
      setStatus(error.message, true);
    } finally {
      buttons.forEach((button) => { button.disabled = false; });
    }
  };
}

// ---------------------------------------------------------------- text

async function classifyText() {
  const texts = element("text-input").value.split("\n").map((line) => line.trim()).filter(Boolean);
  if (!texts.length) throw new Error("Type at least one text.");
  const answer = await predict(JSON.stringify({ text: texts }), "application/json");
  answer.predictions.forEach((scores, index) => {
    const card = make("article", "prediction");
    card.append(make("h3", "", texts[index]), scoreBars(scores));
    element("result-items").append(card);
  });
}

async function classifyJson() {
  const answer = await predict(element("json-input").value, "application/json");
  answer.predictions.forEach((scores, index) => {
    const card = make("article", "prediction");
    card.append(make("h3", "", `item ${index + 1}`), scoreBars(scores));
    element("result-items").append(card);
  });
}

// ---------------------------------------------------------------- photos

async function classifyImage() {
  const file = element("image-input").files[0];
  if (!file) throw new Error("Choose a photo.");
  const form = new FormData();
  form.append("image", file, file.name);
  const answer = await predict(form);
  const card = make("article", "prediction");
  card.append(make("h3", "", file.name), scoreBars(answer.predictions[0]));
  element("result-items").append(card);
  const keypoints = answer.keypoints ? answer.keypoints[0] : null;
  const canvas = make("canvas", "skeleton");
  card.append(canvas);
  await drawSkeleton(canvas, file, keypoints);
  if (answer.keypoints && !keypoints) card.append(make("p", "muted", "No person found."));
}

async function drawSkeleton(canvas, file, keypoints) {
  const url = URL.createObjectURL(file);
  try {
    const image = new Image();
    image.src = url;
    await image.decode();
    const scale = Math.min(1, CANVAS_MAX_SIDE / Math.max(image.naturalWidth, image.naturalHeight));
    canvas.width = Math.round(image.naturalWidth * scale);
    canvas.height = Math.round(image.naturalHeight * scale);
    const context = canvas.getContext("2d");
    context.drawImage(image, 0, 0, canvas.width, canvas.height);
    if (!keypoints) return;
    const points = new Map(
      keypoints
        .filter((point) => point.visibility >= MIN_VISIBILITY)
        .map((point) => [point.name, [point.x * canvas.width, point.y * canvas.height]]),
    );
    context.lineWidth = Math.max(2, canvas.width / 160);
    context.strokeStyle = "#00e676";
    for (const [from, to] of SKELETON) {
      if (!points.has(from) || !points.has(to)) continue;
      context.beginPath();
      context.moveTo(...points.get(from));
      context.lineTo(...points.get(to));
      context.stroke();
    }
    context.fillStyle = "#ff1744";
    for (const [x, y] of points.values()) {
      context.beginPath();
      context.arc(x, y, context.lineWidth * 1.5, 0, 2 * Math.PI);
      context.fill();
    }
  } finally {
    URL.revokeObjectURL(url);
  }
}

// ---------------------------------------------------------------- audio

async function toggleRecording() {
  const button = element("record-button");
  const status = element("record-status");
  if (state.recorder) {
    state.recorder.stop();
    return;
  }
  if (!navigator.mediaDevices || !window.MediaRecorder) {
    status.textContent = "This browser cannot record here (recording needs https or localhost).";
    return;
  }
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ audio: true });
  } catch (error) {
    status.textContent = `No microphone: ${error.message}`;
    return;
  }
  const chunks = [];
  const recorder = new MediaRecorder(stream);
  recorder.addEventListener("dataavailable", (event) => chunks.push(event.data));
  recorder.addEventListener("stop", async () => {
    stream.getTracks().forEach((track) => track.stop());
    state.recorder = null;
    button.textContent = "Record again";
    try {
      state.recording = await asWav(new Blob(chunks, { type: recorder.mimeType }));
    } catch (error) {
      status.textContent = `Could not read the recording: ${error.message}`;
      return;
    }
    status.textContent = `Recorded ${(state.recording.size / 1024).toFixed(0)} KB.`;
    element("audio-input").value = "";
    const preview = element("audio-preview");
    if (preview.src) URL.revokeObjectURL(preview.src);
    preview.src = URL.createObjectURL(state.recording);
    preview.hidden = false;
  });
  state.recorder = recorder;
  recorder.start();
  button.textContent = "Stop";
  status.textContent = "Recording…";
}

async function asWav(recorded) {
  const context = new AudioContext();
  let decoded;
  try {
    decoded = await context.decodeAudioData(await recorded.arrayBuffer());
  } finally {
    context.close();
  }
  // Rendering into one channel at the target rate downmixes and resamples in one step.
  const frames = Math.max(1, Math.ceil(decoded.duration * WAV_SAMPLE_RATE));
  const offline = new OfflineAudioContext(1, frames, WAV_SAMPLE_RATE);
  const source = offline.createBufferSource();
  source.buffer = decoded;
  source.connect(offline.destination);
  source.start();
  const samples = (await offline.startRendering()).getChannelData(0);
  return new Blob([wavFile(samples, WAV_SAMPLE_RATE)], { type: "audio/wav" });
}

function wavFile(samples, sampleRate) {
  const dataBytes = samples.length * 2;
  const view = new DataView(new ArrayBuffer(44 + dataBytes));
  const ascii = (offset, text) => {
    for (let index = 0; index < text.length; index += 1) {
      view.setUint8(offset + index, text.charCodeAt(index));
    }
  };
  ascii(0, "RIFF");
  view.setUint32(4, 36 + dataBytes, true);
  ascii(8, "WAVE");
  ascii(12, "fmt ");
  view.setUint32(16, 16, true); // size of the fmt chunk
  view.setUint16(20, 1, true); // PCM
  view.setUint16(22, 1, true); // mono
  view.setUint32(24, sampleRate, true);
  view.setUint32(28, sampleRate * 2, true); // bytes per second
  view.setUint16(32, 2, true); // bytes per frame
  view.setUint16(34, 16, true); // bits per sample
  ascii(36, "data");
  view.setUint32(40, dataBytes, true);
  samples.forEach((sample, index) => {
    view.setInt16(44 + index * 2, Math.max(-1, Math.min(1, sample)) * 0x7fff, true);
  });
  return view.buffer;
}

async function classifyAudio() {
  const transcript = element("transcript-input").value.trim();
  const s3Uri = element("s3-uri-input").value.trim();
  let name;
  let answer;
  if (s3Uri) {
    name = s3Uri;
    const body = transcript ? { s3_uri: s3Uri, transcript } : { s3_uri: s3Uri };
    answer = await predict(JSON.stringify(body), "application/json", "predict-s3");
  } else {
    const file = element("audio-input").files[0];
    const recording = file || state.recording;
    if (!recording) throw new Error("Choose a recording, record one, or give its S3 URI.");
    name = file ? file.name : "recording.wav";
    const form = new FormData();
    form.append("audio", recording, name);
    if (transcript) form.append("transcript", transcript);
    answer = await predict(form);
  }
  answer.predictions.forEach((scores, index) => {
    const card = make("article", "prediction");
    card.append(make("h3", "", name), scoreBars(scores));
    const clip = answer.clips ? answer.clips[index] : null;
    if (clip) {
      const source = { request: "as sent", asr: "transcribed by the service", none: "none" };
      const said = clip.transcript ? `“${clip.transcript}”` : "no transcript";
      card.append(
        make("p", "muted", `${clip.duration_seconds.toFixed(1)} s; ${said} (${source[clip.transcript_source] || clip.transcript_source})`),
      );
      if (clip.audio) card.append(make("h4", "", "From the sound"), scoreBars(clip.audio));
      if (clip.text) card.append(make("h4", "", "From the words"), scoreBars(clip.text));
    }
    element("result-items").append(card);
  });
}

// ---------------------------------------------------------------- results

function scoreBars(scores) {
  const list = make("div", "scores");
  for (const { label, score } of scores) {
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

function clearResult() {
  setStatus("");
  element("result-items").replaceChildren();
}

document.addEventListener("DOMContentLoaded", () => {
  element("text-form").addEventListener("submit", guarded(classifyText));
  element("image-form").addEventListener("submit", guarded(classifyImage));
  element("audio-form").addEventListener("submit", guarded(classifyAudio));
  element("json-form").addEventListener("submit", guarded(classifyJson));
  element("record-button").addEventListener("click", toggleRecording);
  element("audio-input").addEventListener("change", () => {
    element("audio-preview").hidden = true;
    state.recording = null;
    element("s3-uri-input").value = "";
  });
  loadModels();
});
