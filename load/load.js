// k6 load scenarios for mtc, run against the gateway (or one service for text tasks):
//
//   K6_NO_USAGE_REPORT=true k6 run -e BASE_URL=http://127.0.0.1:8080 -e SCENARIO=sentiment load/load.js
//
// Environment: BASE_URL (default http://127.0.0.1:8080), API_KEY (sent as a bearer token when
// set), SCENARIO (w255, sentiment, disaster, pose, audio, smoke, bench), and the per-scenario
// knobs documented in load/README.md. Thresholds come from the SLO table there.
import http from "k6/http";
import exec from "k6/execution";
import { check, fail } from "k6";
import { SharedArray } from "k6/data";
import { Rate, Trend } from "k6/metrics";
import encoding from "k6/encoding";

const BASE_URL = (__ENV.BASE_URL || "http://127.0.0.1:8080").replace(/\/$/, "");
const API_KEY = __ENV.API_KEY || "";
const SCENARIO = __ENV.SCENARIO || "smoke";
const DATA = __ENV.DATA_DIR || "./data";

// Timing headers the services (x-inference-time, x-queue-time) and the gateway
// (x-total-time) send, in milliseconds: where the time of a request went.
const inferenceTime = new Trend("mtc_inference_time", true);
const queueTime = new Trend("mtc_queue_time", true);
const totalTime = new Trend("mtc_total_time", true);
const failures = new Rate("mtc_failed");

const reviews = new SharedArray("reviews", () => JSON.parse(open(__ENV.REVIEWS_FILE || `${DATA}/reviews.json`)));
const BENCH_EXEC = __ENV.BENCH_EXEC || "bench";
const photos = SCENARIO === "pose" || BENCH_EXEC === "pose" ? [1, 2, 3].map((n) => encoding.b64encode(open(`${DATA}/photos/person-${n}.jpg`, "b"))) : [];
const clips = SCENARIO === "audio" || BENCH_EXEC === "audio" ? [1, 2, 3].map((n) => open(`${DATA}/clips/call-${n}.wav`, "b")) : [];

// The sentences of the w255 scenario: three the same on nearly every request (a cache's best
// case), ten shuffled for the rest.
const W255_THREE = ["I love this movie", "this movie is bad", "the acting was fine, the story was not"];
const W255_TEN = [
  "An absolute triumph, moving and beautifully acted",
  "a tedious, badly written mess",
  "I would watch it again tomorrow",
  "two hours I will never get back",
  "the soundtrack alone is worth the ticket",
  "flat characters and a plot full of holes",
  "funny, warm and surprisingly sharp",
  "it drags in the middle but the ending lands",
  "nothing here you have not seen before",
  "a small film with a big heart",
];

function env(name, fallback) {
  return __ENV[name] || fallback;
}

function num(name, fallback) {
  const value = Number(__ENV[name] || fallback);
  if (!Number.isFinite(value)) fail(`${name} must be a number, got ${__ENV[name]}`);
  return value;
}

// SLO per task (see load/README.md): the arrival rate the scenario offers and the p99 it must
// hold; every scenario also requires no failed request.
const SLO = {
  sentiment: { rate: 20, p99: "500" },
  disaster: { rate: 20, p99: "500" },
  pose: { rate: 4, p99: "1500" },
  audio: { rate: 1, p99: "5000" },
};

function constantRate(task) {
  const slo = SLO[task];
  return {
    executor: "constant-arrival-rate",
    rate: num("RATE", slo.rate),
    timeUnit: "1s",
    duration: env("DURATION", "2m"),
    preAllocatedVUs: num("VUS", 20),
    maxVUs: num("MAX_VUS", 100),
    exec: task === "pose" ? "pose" : task === "audio" ? "audio" : "text",
    env: { TASK: task },
  };
}

function buildOptions() {
  const failed = ["rate==0"];
  if (SCENARIO === "w255") {
    return {
      scenarios: {
        w255: {
          executor: "ramping-vus",
          startVUs: 0,
          stages: [
            { duration: env("RAMP_UP", "30s"), target: 10 },
            { duration: env("HOLD", "7m"), target: 10 },
            { duration: env("RAMP_DOWN", "3m"), target: 0 },
          ],
          exec: "w255",
        },
      },
      thresholds: { http_req_duration: ["p(99)<2000"], mtc_failed: failed },
    };
  }
  if (SCENARIO in SLO) {
    return {
      scenarios: { [SCENARIO]: constantRate(SCENARIO) },
      thresholds: {
        http_req_duration: [`p(99)<${env("P99_MS", SLO[SCENARIO].p99)}`],
        mtc_failed: failed,
        dropped_iterations: ["count==0"],
      },
    };
  }
  if (SCENARIO === "smoke") {
    // A few seconds of each kind of call through the gateway: CI checks that the stack
    // answers correctly under concurrent load, not how fast.
    return {
      scenarios: {
        smoke_text: { executor: "constant-vus", vus: 2, duration: env("DURATION", "5s"), exec: "text", env: { TASK: "sentiment" } },
        smoke_bulk: { executor: "constant-vus", vus: 1, duration: env("DURATION", "5s"), exec: "w255" },
      },
      thresholds: { http_req_duration: ["p(99)<5000"], mtc_failed: failed, checks: ["rate==1"] },
    };
  }
  if (SCENARIO === "bench") {
    // Used by `python -m load.bench`: closed loop, CLIENTS concurrent clients, each request
    // one distinct review (so no cache can answer it), against PREDICT_PATH.
    return {
      scenarios: {
        bench: { executor: "constant-vus", vus: num("CLIENTS", 16), duration: env("DURATION", "30s"), exec: BENCH_EXEC },
      },
      // No latency threshold (the benchmark reports latency), but never a failed request.
      thresholds: { mtc_failed: failed },
    };
  }
  fail(`unknown SCENARIO ${SCENARIO}; one of w255, sentiment, disaster, pose, audio, smoke, bench`);
}

const TREND_STATS = ["avg", "min", "med", "p(95)", "p(99)", "max", "count"];

export const options = { summaryTrendStats: TREND_STATS, ...buildOptions() };

function headers(contentType) {
  const result = contentType ? { "Content-Type": contentType } : {};
  if (API_KEY) result.Authorization = `Bearer ${API_KEY}`;
  return result;
}

function record(response) {
  const ok = check(response, {
    "status 200": (r) => r.status === 200,
    "has predictions": (r) => r.status === 200 && Array.isArray(r.json("predictions")),
  });
  failures.add(!ok);
  const timings = [
    ["X-Inference-Time", inferenceTime],
    ["X-Queue-Time", queueTime],
    ["X-Total-Time", totalTime],
  ];
  for (const [name, trend] of timings) {
    const value = Number(response.headers[name]);
    if (response.headers[name] !== undefined && Number.isFinite(value)) trend.add(value);
  }
}

function shuffled(items) {
  const copy = items.slice();
  for (let i = copy.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [copy[i], copy[j]] = [copy[j], copy[i]];
  }
  return copy;
}

export function w255() {
  const text = Math.random() < 0.95 ? W255_THREE : shuffled(W255_TEN);
  record(http.post(`${BASE_URL}/project/bulk-predict`, JSON.stringify({ text }), { headers: headers("application/json") }));
}

export function text() {
  // One review per request, as a client classifying what users write would send.
  const review = reviews[Math.floor(Math.random() * reviews.length)];
  const task = __ENV.TASK;
  record(http.post(`${BASE_URL}/v1/${task}/predict`, JSON.stringify({ text: [review] }), { headers: headers("application/json") }));
}

export function pose() {
  const image = photos[exec.scenario.iterationInTest % photos.length];
  record(http.post(`${BASE_URL}/v1/pose/predict`, JSON.stringify({ images: [image] }), { headers: headers("application/json") }));
}

export function audio() {
  const clip = clips[exec.scenario.iterationInTest % clips.length];
  const body = { audio: http.file(clip, "call.wav", "audio/wav") };
  record(http.post(`${BASE_URL}/v1/audio/predict`, body, { headers: headers(null) }));
}

export function bench() {
  // iterationInTest is unique across VUs, so no two requests carry the same review.
  const review = reviews[exec.scenario.iterationInTest % reviews.length];
  record(http.post(`${BASE_URL}${env("PREDICT_PATH", "/v1/sentiment/predict")}`, JSON.stringify({ text: [review] }), { headers: headers("application/json") }));
}
