// pcnn-fer web page: upload a photo or take a webcam snapshot, POST it to /predict, draw the faces. Live mode sends
// webcam frames one after another in a session: the server gives each person an id and a smoothed expression.
"use strict";

const REGION_SHORT = { left_eye: "LE", right_eye: "RE", left_cheek: "LC", right_cheek: "RC", mouth: "M" };
const REGION_NAMES = {
  left_eye: "left eye", right_eye: "right eye", left_cheek: "left cheek", right_cheek: "right cheek", mouth: "mouth",
};
const model = { colors: {}, classes: [], maxUploadMb: 10 };
const COVERED = 0.5; // an occlusion score from here on marks the region as covered
let stream = null;
let photoUrl = null;
let live = null; // {session, started}: the live webcam mode while it runs

const $ = (id) => document.getElementById(id);
const colorOf = (name) => model.colors[name] || "#a0a0a0";
const pct = (p) => `${Math.round(p * 100)}%`;

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "style") Object.assign(node.style, value);
    else if (key === "vars") for (const [k, v] of Object.entries(value)) node.style.setProperty(k, v);
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

function setStatus(text, kind = "") {
  const status = $("status");
  status.textContent = text;
  status.className = kind;
}

async function loadHealth() {
  try {
    const response = await fetch("/health");
    const health = await response.json();
    model.colors = health.colors || {};
    model.classes = health.classes || [];
    model.maxUploadMb = health.max_upload_mb || 10;
    $("model").textContent = `${health.backend} backend · ${health.classes.length} classes: ` +
      `${health.classes.join(", ")} · ${health.input_size}×${health.input_size} faces · uploads up to ` +
      `${model.maxUploadMb} MB · confidences ${health.calibration ? `calibrated (${health.calibration})` :
        "not calibrated"}` + (health.occlusion ? " · per-region occlusion" : "");
    if (health.min_confidence !== null && health.min_confidence !== undefined) {
      $("min-confidence").value = Math.round(health.min_confidence * 100);
    }
  } catch (err) {
    $("model").textContent = `cannot reach the server (${err})`;
  }
}

function topClass(probabilities) {
  let best = null;
  for (const [name, p] of Object.entries(probabilities)) if (best === null || p > best[1]) best = [name, p];
  return best || ["?", 0];
}

function bar(label, value, color, note) {
  const row = el("div", { class: "bar" },
    el("span", { class: "name" }, label),
    el("div", { class: "track" }, el("div", { class: "fill", style: { width: pct(value) }, vars: { "--c": color } })),
    el("span", { class: "value" }, pct(value)));
  if (note) row.append(el("span", { class: "note" }, note));
  return row;
}

function drawFaces(record) {
  const overlay = $("overlay");
  const list = $("faces");
  overlay.replaceChildren();
  list.replaceChildren();
  const img = $("photo");
  const width = img.naturalWidth;
  const height = img.naturalHeight;
  record.faces.forEach((face, i) => {
    const [x1, y1, x2, y2] = face.box;
    const tracked = face.face_id !== undefined && face.face_id !== null;
    const shown = tracked ? face.smooth_label : face.label; // live: the person's smoothed expression
    const shownP = tracked ? face.smooth_probabilities[shown] : face.score;
    const tag = tracked ? `#${face.face_id}` : `#${i + 1}`;
    const color = colorOf(shown);
    const [best] = topClass(face.probabilities); // the most probable class, also for an "uncertain" face
    const covered = (region) => face.occlusion && face.occlusion[region] >= COVERED;
    const strip = el("div", { class: "region-strip" });
    for (const [region, probs] of Object.entries(face.regions)) {
      const [top] = topClass(probs);
      const note = covered(region) ? ` · covered (${pct(face.occlusion[region])})` : "";
      strip.append(el("div", { class: covered(region) ? "row covered" : "row",
        title: `${REGION_NAMES[region] || region}: ${top}${note}` },
        el("span", {}, REGION_SHORT[region] || region),
        el("div", { class: "track" },
          el("div", { class: "fill", style: { width: pct(probs[best] || 0) }, vars: { "--c": colorOf(top) } }))));
    }
    const box = el("div", {
      class: "face-box", "data-label": shown, "data-face-id": tracked ? face.face_id : "", vars: { "--c": color },
      style: {
        left: `${(100 * x1) / width}%`, top: `${(100 * y1) / height}%`,
        width: `${(100 * (x2 - x1)) / width}%`, height: `${(100 * (y2 - y1)) / height}%`,
      },
    },
    el("div", { class: "face-label" },
      el("span", { class: "face-index" }, tag), `${shown} ${pct(shownP)}`),
    strip);
    overlay.append(box);

    const card = el("section", { class: "card face-card", vars: { "--c": color } },
      el("h2", {}, tracked ? `Person ${tag}: ${shown} ${pct(shownP)} (smoothed; this frame: ${face.label} ` +
        `${pct(face.score)})` : `Face ${i + 1}: ${face.label} ${pct(face.score)}` +
        (face.label === "uncertain" ? ` (best guess ${best})` : "")));
    const classes = el("div", { class: "bars" });
    const sorted = Object.entries(face.probabilities).sort((a, b) => b[1] - a[1]);
    for (const [name, p] of sorted) classes.append(bar(name, p, colorOf(name)));
    card.append(el("h3", {}, "expression"), classes);
    const regions = el("div", { class: "bars" });
    for (const [region, probs] of Object.entries(face.regions)) {
      const [top, topP] = topClass(probs);
      const row = bar(REGION_NAMES[region] || region, probs[best] || 0, colorOf(top),
        `P(${best}) · own top: ${top} ${pct(topP)}` +
        (face.occlusion ? ` · covered ${pct(face.occlusion[region])}` : ""));
      if (covered(region)) row.classList.add("covered");
      regions.append(row);
    }
    card.append(el("h3", {}, `regions: P(${best})`), regions);
    if (face.quality) {
      const q = face.quality;
      const pose = q.yaw === null ? "no landmarks" : `yaw ${q.yaw}°, pitch ${q.pitch}°`;
      card.append(el("h3", {}, "face quality"), el("p", { class: "quality" },
        `${q.size_px} px · sharpness ${q.sharpness} · brightness ${pct(q.brightness)} · ${pose}` +
        (q.issues.length ? ` · ${q.issues.join(", ")}` : " · no issue")));
    }
    list.append(card);
  });
}

function showPhoto(blob) {
  return new Promise((resolve, reject) => {
    if (photoUrl) URL.revokeObjectURL(photoUrl);
    photoUrl = URL.createObjectURL(blob);
    const img = $("photo");
    img.onload = () => resolve();
    img.onerror = () => reject(new Error("the browser cannot display this image"));
    img.src = photoUrl;
    $("stage").hidden = false;
  });
}

async function analyse(blob, name, session = null) {
  if (!session) {
    $("overlay").replaceChildren();
    $("faces").replaceChildren();
  }
  if (blob.size > model.maxUploadMb * 1048576) {
    setStatus(`${name} is ${(blob.size / 1048576).toFixed(1)} MB: the limit is ${model.maxUploadMb} MB`, "error");
    return;
  }
  if (!session) setStatus(`analysing ${name}`, "busy");
  const shownEarly = session ? null : showPhoto(blob).catch(() => null); // a photo shows while it is analysed
  const form = new FormData();
  form.append("file", blob, name);
  if (session) {
    form.append("session", session.session);
    form.append("time_s", ((performance.now() - session.started) / 1000).toFixed(3));
  }
  const started = performance.now();
  let response;
  let body;
  try {
    const threshold = Number($("min-confidence").value) / 100;
    const query = threshold > 0 ? `?min_confidence=${threshold}` : "";
    response = await fetch(`/predict${query}`, { method: "POST", body: form });
    body = await response.json();
  } catch (err) {
    setStatus(`request failed: ${err}`, "error");
    return;
  }
  if (session && live !== session) return; // live mode was stopped meanwhile
  await (session ? showPhoto(blob).catch(() => null) : shownEarly); // a live frame shows with its answer
  const ms = Math.round(performance.now() - started);
  if (!response.ok) {
    const detail = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
    setStatus(`error ${response.status}: ${detail}`, "error");
    return;
  }
  if (body.skipped) {
    setStatus(`${name}: skipped (${body.skipped})`, "error");
    return;
  }
  drawFaces(body);
  const n = body.faces.length;
  if (session) {
    const people = body.faces.map((f) => `#${f.face_id} ${f.smooth_label} ${pct(f.smooth_probabilities[f.smooth_label])}`);
    setStatus(`live · ${n ? people.join(", ") : "no face"} · ${ms} ms per frame`);
    document.body.dataset.state = "live";
    return;
  }
  const labels = body.faces.map((f) => `${f.label} ${pct(f.score)}`).join(", ");
  setStatus(n ? `${name}: ${n} face${n === 1 ? "" : "s"} (${labels}) · ${ms} ms` : `${name}: no face found · ${ms} ms`);
  document.body.dataset.state = "done";
}

async function startWebcam() {
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    setStatus("this browser offers no webcam access here (it needs https or localhost)", "error");
    return;
  }
  try {
    stream = await navigator.mediaDevices.getUserMedia({ video: { width: { ideal: 1280 } }, audio: false });
  } catch (err) {
    setStatus(`webcam unavailable: ${err.message || err}`, "error");
    return;
  }
  const video = $("video");
  video.srcObject = stream;
  video.hidden = false;
  $("stage").hidden = true;
  $("webcam-start").hidden = true;
  $("webcam-snap").hidden = false;
  $("webcam-live").hidden = false;
  $("webcam-stop").hidden = false;
  setStatus("webcam on: take a snapshot, or go live (ids and smoothed expressions)");
}

function grab(video) {
  const canvas = el("canvas");
  canvas.width = video.videoWidth;
  canvas.height = video.videoHeight;
  canvas.getContext("2d").drawImage(video, 0, 0);
  return new Promise((resolve) => canvas.toBlob(resolve, "image/jpeg", 0.85));
}

async function startLive() {
  const video = $("video");
  if (!stream || !video.videoWidth) return;
  const session = { session: `live-${Math.random().toString(36).slice(2, 12)}`, started: performance.now() };
  live = session;
  video.hidden = true;
  $("webcam-live").hidden = true;
  $("webcam-snap").hidden = true;
  setStatus("live: waiting for the first frame", "busy");
  while (live === session) { // one frame at a time: the next is sent when the answer is drawn
    const blob = await grab(video);
    if (!blob || live !== session) break;
    await analyse(blob, "webcam.jpg", session);
    await new Promise((resolve) => setTimeout(resolve, 40)); // never a tight loop, even when requests fail
  }
}

function stopWebcam() {
  live = null;
  if (stream) stream.getTracks().forEach((t) => t.stop());
  stream = null;
  $("video").hidden = true;
  $("webcam-start").hidden = false;
  $("webcam-snap").hidden = true;
  $("webcam-live").hidden = true;
  $("webcam-stop").hidden = true;
}

function snapshot() {
  const video = $("video");
  if (!video.videoWidth) return;
  const canvas = el("canvas");
  canvas.width = video.videoWidth;
  canvas.height = video.videoHeight;
  canvas.getContext("2d").drawImage(video, 0, 0);
  canvas.toBlob((blob) => {
    stopWebcam();
    if (blob) analyse(blob, "webcam.jpg");
  }, "image/jpeg", 0.92);
}

function init() {
  loadHealth();
  $("file").addEventListener("change", (event) => {
    const file = event.target.files[0];
    if (file) {
      stopWebcam();
      analyse(file, file.name);
    }
    event.target.value = "";
  });
  $("webcam-start").addEventListener("click", startWebcam);
  $("webcam-snap").addEventListener("click", snapshot);
  $("webcam-live").addEventListener("click", startLive);
  $("webcam-stop").addEventListener("click", () => { stopWebcam(); setStatus("webcam off"); });
  document.addEventListener("dragover", (e) => { e.preventDefault(); document.body.classList.add("dragging"); });
  document.addEventListener("dragleave", () => document.body.classList.remove("dragging"));
  document.addEventListener("drop", (e) => {
    e.preventDefault();
    document.body.classList.remove("dragging");
    const file = e.dataTransfer.files[0];
    if (file) {
      stopWebcam();
      analyse(file, file.name);
    }
  });
}

document.addEventListener("DOMContentLoaded", init);
