// The demo page: file picker, example photo, webcam, sliders, drawing. Detection itself is in featherface.js.
import * as ort from "onnxruntime-web";
import { FeatherFaceDetector, decodeImage, LANDMARK_NAMES } from "./featherface.js";

const $ = (id) => document.getElementById(id);
const view = $("view"), video = $("video"), statusEl = $("status"), messageEl = $("message");
const LANDMARK_COLOURS = ["#ff3b30", "#34c759", "#007aff", "#ffcc00", "#af52de"];

// Page state, also read by the end-to-end test (tests/test_web.py through web/e2e/run_page.mjs).
const state = (window.featherface = { state: "loading", result: null, error: null, detector: null, source: null, runs: 0 });
let webcamStream = null, busy = false, pending = false;

function setStatus(kind, text) {
  state.state = kind;
  statusEl.dataset.state = kind;
  statusEl.textContent = text;
}
function showMessage(text) {
  state.error = text;
  messageEl.textContent = text;
  messageEl.hidden = false;
}
function clearMessage() {
  state.error = null;
  messageEl.hidden = true;
  messageEl.textContent = "";
}
window.addEventListener("error", (e) => showMessage(`Unexpected error: ${e.message}`));
window.addEventListener("unhandledrejection", (e) => showMessage(`Unexpected error: ${e.reason?.message ?? e.reason}`));

function options() {
  const r = $("resize").value;
  return {
    scoreThreshold: Number($("score").value),
    nmsThreshold: Number($("nms").value),
    longestSide: r === "original" ? null : Number(r),
  };
}

function draw(source, width, height, faces) {
  if (view.width !== width) view.width = width;
  if (view.height !== height) view.height = height;
  const ctx = view.getContext("2d");
  ctx.drawImage(source, 0, 0, width, height);
  const lw = Math.max(2, Math.round(Math.max(width, height) / 320));
  ctx.lineWidth = lw;
  ctx.font = `${Math.max(12, 6 * lw)}px system-ui, sans-serif`;
  ctx.textBaseline = "bottom";
  for (const f of faces) {
    const [x1, y1, x2, y2] = f.box;
    ctx.strokeStyle = "#00e676";
    ctx.strokeRect(x1, y1, x2 - x1, y2 - y1);
    const label = f.score.toFixed(2);
    const tw = ctx.measureText(label).width + 2 * lw;
    const th = Math.max(12, 6 * lw) + lw;
    const ty = y1 - th < 0 ? y1 + th : y1;
    ctx.fillStyle = "#00e676";
    ctx.fillRect(x1 - lw / 2, ty - th, tw, th);
    ctx.fillStyle = "#000";
    ctx.fillText(label, x1 + lw, ty - lw / 2);
    f.landmarks.forEach(([x, y], k) => {
      ctx.fillStyle = LANDMARK_COLOURS[k];
      ctx.beginPath();
      ctx.arc(x, y, 1.5 * lw, 0, 2 * Math.PI);
      ctx.fill();
    });
  }
}

function listFaces(faces) {
  const ol = $("faces");
  ol.replaceChildren(...faces.map((f) => {
    const li = document.createElement("li");
    const pts = f.landmarks.map(([x, y], k) => `${LANDMARK_NAMES[k]} (${x.toFixed(0)}, ${y.toFixed(0)})`).join(", ");
    li.textContent = `score ${f.score.toFixed(3)}  box [${f.box.map((v) => v.toFixed(1)).join(", ")}]  ${pts}`;
    return li;
  }));
}

async function runOnImage() {
  const src = state.source;
  if (!src || src.kind !== "image" || !state.detector) return;
  if (busy) { pending = true; return; }
  busy = true;
  try {
    setStatus("running", "Detecting\u2026");
    const res = await state.detector.detect(src.bitmap, src.width, src.height, options());
    state.result = { ...res, width: src.width, height: src.height, name: src.name };
    state.runs++;
    draw(src.bitmap, src.width, src.height, res.faces);
    listFaces(res.faces);
    setStatus("done", `${res.faces.length} face${res.faces.length === 1 ? "" : "s"} in ${src.name} ` +
      `(${src.width}\u00d7${src.height}, network input ${res.inputWidth}\u00d7${res.inputHeight}) \u2014 ` +
      `${res.ms.toFixed(1)} ms per frame (inference ${res.inferMs.toFixed(1)} ms)`);
  } catch (err) {
    showMessage(`Detection failed: ${err.message || err}`);
    setStatus("error", "Detection failed.");
  } finally {
    busy = false;
    if (pending) { pending = false; runOnImage(); }
  }
}

async function useBlob(blob, name) {
  stopWebcam();
  clearMessage();
  setStatus("decoding", `Reading ${name}\u2026`);
  try {
    const bitmap = await decodeImage(blob);
    state.source?.bitmap?.close?.();
    state.source = { kind: "image", bitmap, width: bitmap.width, height: bitmap.height, name };
  } catch (err) {
    showMessage(err.message || String(err));
    setStatus("error", "No image loaded.");
    return;
  }
  await runOnImage();
}

// ----------------------------------------------------------------------------------------------------- webcam
function stopWebcam() {
  if (!webcamStream) return;
  webcamStream.getTracks().forEach((t) => t.stop());
  webcamStream = null;
  video.srcObject = null;
  $("webcam").textContent = "Start webcam";
}

async function startWebcam() {
  clearMessage();
  if (!navigator.mediaDevices?.getUserMedia) {
    showMessage("This browser gives no camera access here (the page must be served from localhost or https).");
    return;
  }
  setStatus("camera", "Asking for the camera\u2026");
  try {
    webcamStream = await navigator.mediaDevices.getUserMedia({ video: { width: { ideal: 640 }, height: { ideal: 480 } }, audio: false });
  } catch (err) {
    webcamStream = null;
    const why = {
      NotAllowedError: "Camera access was denied. Allow the camera for this page in the browser's site settings, or pick an image instead.",
      NotFoundError: "No camera was found on this device. Pick an image instead.",
      NotReadableError: "The camera is in use by another program.",
      OverconstrainedError: "The camera cannot deliver a usable video size.",
    }[err.name] ?? `The camera could not be started: ${err.message || err.name}`;
    showMessage(why);
    setStatus("error", "Webcam not started.");
    return;
  }
  video.srcObject = webcamStream;
  await video.play();
  state.source = { kind: "webcam" };
  $("webcam").textContent = "Stop webcam";
  webcamLoop();
}

async function webcamLoop() {
  let avg = null;
  while (webcamStream && state.source?.kind === "webcam") {
    await new Promise((r) => requestAnimationFrame(r));
    if (video.readyState < 2 || !video.videoWidth) continue;
    const w = video.videoWidth, h = video.videoHeight;
    try {
      const t0 = performance.now();
      const res = await state.detector.detect(video, w, h, options());
      draw(video, w, h, res.faces);
      const frame = performance.now() - t0;
      avg = avg == null ? frame : 0.9 * avg + 0.1 * frame;
      state.result = { ...res, width: w, height: h, name: "webcam" };
      state.runs++;
      setStatus("webcam", `Webcam ${w}\u00d7${h}: ${res.faces.length} face${res.faces.length === 1 ? "" : "s"} \u2014 ` +
        `${frame.toFixed(1)} ms per frame (average ${avg.toFixed(1)} ms, inference ${res.inferMs.toFixed(1)} ms)`);
    } catch (err) {
      showMessage(`Detection failed on the webcam frame: ${err.message || err}`);
      stopWebcam();
      setStatus("error", "Webcam stopped.");
    }
  }
}

// ------------------------------------------------------------------------------------------------------- setup
function wireControls(config) {
  for (const [id, out] of [["score", "score-value"], ["nms", "nms-value"]]) {
    $(id).addEventListener("input", () => {
      $(out).textContent = Number($(id).value).toFixed(2);
      runOnImage();
    });
  }
  $("resize").addEventListener("change", runOnImage);
  $("file").addEventListener("change", (e) => {
    const f = e.target.files?.[0];
    if (f) useBlob(f, f.name);
    e.target.value = "";
  });
  $("example").addEventListener("click", async () => {
    try {
      const r = await fetch(config.example);
      if (!r.ok) throw new Error(`HTTP ${r.status}`);
      await useBlob(await r.blob(), "example photo");
    } catch (err) {
      showMessage(`Could not load the example photo: ${err.message || err}`);
    }
  });
  $("webcam").addEventListener("click", () => (webcamStream ? (stopWebcam(), setStatus("ready", "Webcam stopped.")) : startWebcam()));
}

async function main() {
  const config = await (await fetch("/config.json")).json();
  const d = config.defaults ?? {};
  if (d.score_threshold != null) $("score").value = d.score_threshold;
  if (d.nms_threshold != null) $("nms").value = d.nms_threshold;
  $("score-value").textContent = Number($("score").value).toFixed(2);
  $("nms-value").textContent = Number($("nms").value).toFixed(2);
  ort.env.wasm.wasmPaths = "/ort/";
  const threads = self.crossOriginIsolated ? Math.min(4, navigator.hardwareConcurrency || 1) : 1;
  ort.env.wasm.numThreads = threads;
  wireControls(config);
  const t0 = performance.now();
  state.detector = await FeatherFaceDetector.create(ort, config.model, { preprocessing: config.metadata?.preprocessing });
  state.config = config;
  state.threads = threads;
  $("model-line").textContent = `Model ${config.model_name} (${config.model_file}) loaded in ${(performance.now() - t0).toFixed(0)} ms \u2014 ` +
    `WASM, ${threads} thread${threads === 1 ? "" : "s"}${self.crossOriginIsolated ? " (cross-origin isolated)" : " (not cross-origin isolated)"}`;
  for (const id of ["file", "example", "webcam"]) $(id).disabled = false;
  setStatus("ready", "Pick an image, try the example photo or start the webcam.");
}

main().catch((err) => {
  showMessage(`The detector could not start: ${err.message || err}`);
  setStatus("error", "Not ready.");
});
