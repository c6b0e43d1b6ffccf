// ferkit web UI: photos, videos and a live camera against the /v1 API of the same server.
// Plain JavaScript, no libraries, no network beyond this server. Overlays are drawn on canvases
// from the JSON results; the emotion timeline is a hand-drawn canvas chart.
"use strict";

const COLOURS = {  // the same palette as ferkit.infer.render (there in BGR)
  angry: "#dc2828", disgust: "#288c28", fear: "#963ca0", happy: "#ffd200", sad: "#1e78c8",
  surprise: "#ff8c00", neutral: "#aaaaaa", contempt: "#8c5a3c",
  uncertain: "#606060",  // below the server's --min-confidence: no answer given (dashed box, "?" tag)
};
const UNCERTAIN = "uncertain";

function colour(name) {
  if (COLOURS[name]) return COLOURS[name];
  let h = 0;
  for (const ch of name) h = (h * 31 + ch.charCodeAt(0)) >>> 0;
  return `hsl(${h % 360}, 55%, 50%)`;
}

const $ = (id) => document.getElementById(id);
const state = {
  apiKey: localStorage.getItem("ferkit-api-key") || "",
  photo: null,      // last /v1/predict answer, its faces ordered left to right
  photoBitmap: null,  // the photo, to redraw it when a face is highlighted
  photoHighlight: null,  // index of the face whose box and card are highlighted
  video: null,      // finished video job (with results)
  videoTimes: [],   // results[i].time_s, for the binary search
  live: null,       // {stream, ws, running, frames, t0}
};

// ------------------------------------------------------------------ API helpers

function authHeaders() {
  return state.apiKey ? { "X-API-Key": state.apiKey } : {};
}

async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: { ...authHeaders(), ...(options.headers || {}) } });
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try { message = (await response.json()).error || message; } catch (e) { /* not JSON */ }
    if (response.status === 401) $("key-box").hidden = false;
    throw new Error(message);
  }
  return response;
}

function choice() {
  const p = new URLSearchParams();
  if ($("model-select").value) p.set("model", $("model-select").value);
  if ($("detector-select").value) p.set("detector", $("detector-select").value);
  return p;
}

function showMessage(text, isError = false) {
  const m = $("message");
  m.textContent = text;
  m.classList.toggle("error", isError);
  m.hidden = !text;
}

function saveBlob(blob, name) {
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob);
  a.download = name;
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 10000);
}

async function loadModels() {
  try {
    const info = await (await api("v1/models")).json();
    const ms = $("model-select"), ds = $("detector-select");
    ms.replaceChildren(...info.models.map((m) => new Option(`${m.name} (${m.labels.length} classes)`, m.name, m.default, m.default)));
    ds.replaceChildren(new Option(`auto (${info.default_detector})`, "auto", true, true),
      ...info.detectors.map((d) => new Option(d, d)));
    showMessage("");
  } catch (e) {
    showMessage(`Cannot list the models: ${e.message}`, true);
  }
}

// ------------------------------------------------------------------ drawing

function pct(p) { return `${Math.round(100 * p)}%`; }

// What names a face on its box and on its card: its track (video, live) or its place from the left (photo).
function faceName(face, index) {
  return face.track_id === null || face.track_id === undefined ? `${index + 1}` : `#${face.track_id}`;
}

// The top probability and its class (also when the label is "uncertain", whose probabilities are still given).
function topClass(face) {
  let best = null;
  for (const [k, p] of Object.entries(face.probs)) if (best === null || p > face.probs[best]) best = k;
  return best;
}

function faceText(face) {
  const top = topClass(face);
  const q = face.low_quality ? ", low quality" : "";
  return face.label === UNCERTAIN ? `uncertain (${top}? ${pct(face.probs[top])}${q})` : `${face.label} ${pct(face.probs[top])}${q}`;
}

function faceTag(face, index) {
  const top = topClass(face);
  const what = face.label === UNCERTAIN ? `? ${pct(face.probs[top])}` : `${face.label} ${pct(face.probs[top])}`;
  return `${faceName(face, index)} ${what}${face.low_quality ? " !" : ""}`;
}

function leftToRight(faces) {  // the order of the numbers on boxes and cards
  return [...faces].sort((a, b) => a.box[0] - b.box[0] || a.box[1] - b.box[1]);
}

// Boxes and numbered label tags of `faces` (in image pixels) on a context whose canvas has the image's size;
// the face at index `highlight` gets a thick box with a white rim.
function drawFaces(ctx, faces, width, highlight = null) {
  const s = Math.max(1, width / 640);
  ctx.save();
  ctx.font = `${Math.round(14 * s)}px system-ui, sans-serif`;
  ctx.textBaseline = "top";
  const tags = [];
  faces.forEach((f, i) => {
    const [x, y, w, h] = f.box;
    const c = colour(f.label);
    if (i === highlight) {
      ctx.strokeStyle = "#fff";
      ctx.lineWidth = 8 * s;
      ctx.strokeRect(x, y, w, h);
    }
    ctx.strokeStyle = c;
    ctx.lineWidth = (i === highlight ? 4 : 2) * s;
    ctx.setLineDash(f.label === UNCERTAIN ? [8 * s, 5 * s] : []);
    ctx.strokeRect(x, y, w, h);
    ctx.setLineDash([]);
    const tag = faceTag(f, i);
    tags.push(tag);
    const tw = ctx.measureText(tag).width + 8 * s, th = 20 * s;
    const ty = y - th >= 0 ? y - th : y;
    ctx.fillStyle = c;
    ctx.fillRect(x, ty, tw, th);
    ctx.fillStyle = ["happy", "neutral", "surprise"].includes(f.label) ? "#000" : "#fff";  // uncertain: white on grey
    ctx.fillText(tag, x + 4 * s, ty + 3 * s);
  });
  ctx.restore();
  ctx.canvas.dataset.tags = tags.join("|");  // what the boxes say, for tests and for reading back
}

function faceCard(face, index) {
  const card = document.createElement("div");
  card.className = "face-card";
  card.dataset.label = face.label;
  card.dataset.index = String(index);
  card.dataset.name = faceName(face, index);
  const title = document.createElement("div");
  title.className = "face-title";
  const number = document.createElement("span");
  number.className = "face-number";
  number.textContent = faceName(face, index);  // the same number as on the face's box
  const sw = document.createElement("span");
  sw.className = "swatch";
  sw.style.background = colour(face.label);
  const name = face.track_id === null || face.track_id === undefined ? `Face ${index + 1}` : `Track #${face.track_id}`;
  title.append(number, sw, faceText(face));
  title.title = name;
  if (face.label === UNCERTAIN) card.classList.add("uncertain");
  card.setAttribute("aria-label", `${name}: ${faceText(face)}`);
  card.append(title);
  if (face.quality) {
    const q = document.createElement("div");
    q.className = "face-quality" + (face.low_quality ? " low" : "");
    const yaw = face.quality.yaw_deg === null ? "" : `, turned ${Math.round(Math.abs(face.quality.yaw_deg))}°`;
    q.textContent = `${face.low_quality ? "low quality: " : ""}${face.quality.size_px} px, sharpness ${Math.round(face.quality.blur)}${yaw}`;
    card.append(q);
  }
  for (const [label, p] of Object.entries(face.probs)) {
    const row = document.createElement("div");
    row.className = "bar-row";
    const n = document.createElement("span");
    n.textContent = label;
    const bar = document.createElement("span");
    bar.className = "bar";
    const fill = document.createElement("span");
    fill.style.width = `${(100 * p).toFixed(1)}%`;
    fill.style.background = colour(label);
    bar.append(fill);
    const v = document.createElement("span");
    v.className = "bar-val";
    v.textContent = pct(p);
    row.append(n, bar, v);
    card.append(row);
  }
  return card;
}

function showFaceCards(container, faces) {
  container.replaceChildren(...faces.map((f, i) => faceCard(f, i)));
}

function facesCsv(rows) {  // rows: [{frame?, time_s?, face}]; "face" is the number on the face's box and card
  const labels = rows.length ? Object.keys(rows[0].face.probs) : [];
  const lines = [["frame", "time_s", "face", "track_id", "x", "y", "w", "h", "score", "label", "low_quality", ...labels].join(",")];
  rows.forEach((r, i) => {
    const f = r.face;
    lines.push([r.frame ?? 0, r.time_s ?? 0, i + 1, f.track_id ?? "", ...f.box, f.score, f.label, f.low_quality ?? "",
      ...labels.map((k) => f.probs[k])].join(","));
  });
  return lines.join("\n") + "\n";
}

// ------------------------------------------------------------------ photo

async function predictPhoto(file) {
  if (!file) return;
  showMessage(`Recognising ${file.name}…`);
  const form = new FormData();
  form.append("file", file);
  let result;
  try {
    result = await (await api(`v1/predict?${choice()}`, { method: "POST", body: form })).json();
  } catch (e) {
    showMessage(`${file.name}: ${e.message}`, true);
    return;
  }
  result.faces = leftToRight(result.faces);  // numbered 1, 2, ... from the left, on the boxes and on the cards
  state.photo = result;
  state.photoHighlight = null;
  // Draw the server's decoded size: the browser applies the same EXIF rotation as OpenCV.
  state.photoBitmap = await createImageBitmap(file, { imageOrientation: "from-image" }).catch(() => null);
  const canvas = $("photo-canvas");
  canvas.width = result.width;
  canvas.height = result.height;
  drawPhoto();
  showFaceCards($("photo-faces"), result.faces);
  for (const card of $("photo-faces").children) card.tabIndex = 0;  // focusing a card highlights its box too
  const labels = result.faces.map((f) => f.label);
  const box = $("photo-result");
  box.dataset.count = String(result.faces.length);
  box.dataset.labels = labels.join(",");
  box.hidden = false;
  const n = result.faces.length;
  const found = n ? `${n} face${n === 1 ? "" : "s"}` : "No face found";
  $("photo-summary").textContent = `${found} in ${result.width}×${result.height} · ` +
    `model ${result.model} · detector ${result.detector} · ${result.time_ms} ms`;
  const empty = $("photo-empty");
  empty.hidden = n > 0;
  empty.textContent = n ? "" : noFaceAdvice(result);
  showMessage("");
}

// What to try when the detector found no face: the other detector, a larger image.
function noFaceAdvice(result) {
  const others = Array.from($("detector-select").options).map((o) => o.value)
    .filter((d) => d !== "auto" && d !== result.detector);
  const names = { haar: "the Haar detector", yunet: "the YuNet detector" };
  const other = others.length ? `try ${others.map((d) => names[d] || d).join(" or ")} (Detector, at the top), or ` : "try ";
  return `No face was found in this photo (${result.width}×${result.height}). Small, blurred, turned or covered faces ` +
    `are missed: ${other}a larger image in which each face is at least about 40 pixels wide.`;
}

function drawPhoto() {
  const result = state.photo;
  const canvas = $("photo-canvas");
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  if (state.photoBitmap) ctx.drawImage(state.photoBitmap, 0, 0, result.width, result.height);
  drawFaces(ctx, result.faces, result.width, state.photoHighlight);
  canvas.dataset.highlight = state.photoHighlight === null ? "" : faceName(result.faces[state.photoHighlight], state.photoHighlight);
}

// Highlight face `index` (or none: null) on the photo and its card, so a card can be matched to its box.
function highlightPhotoFace(index) {
  if (!state.photo || state.photoHighlight === index) return;
  state.photoHighlight = index;
  for (const card of $("photo-faces").children) card.classList.toggle("highlight", Number(card.dataset.index) === index);
  drawPhoto();
}

// The face under a mouse event on the photo canvas (the smallest box that holds the point), or null.
function photoFaceAt(event) {
  const canvas = $("photo-canvas"), r = canvas.getBoundingClientRect();
  const x = ((event.clientX - r.left) * canvas.width) / r.width, y = ((event.clientY - r.top) * canvas.height) / r.height;
  let best = null, area = Infinity;
  state.photo.faces.forEach((f, i) => {
    const [bx, by, bw, bh] = f.box;
    if (x >= bx && x <= bx + bw && y >= by && y <= by + bh && bw * bh < area) { best = i; area = bw * bh; }
  });
  return best;
}

// ------------------------------------------------------------------ video

const VIDEO_EXPECTED = "a video file (MP4, MOV, WebM, MKV, AVI, …)";

function uploadVideo(file) {
  if (!file) return;
  const p = choice();
  p.set("detect_every", $("detect-every").value || "1");
  p.set("smooth", $("smooth").value || "0");
  $("video-result").hidden = true;
  $("video-job").hidden = false;
  if (file.type.startsWith("image/")) {  // a photo would go up as a one-frame video no player shows
    setProgress(0, `${file.name} is a photo, not a video: this tab expects ${VIDEO_EXPECTED}. ` +
      "Recognise photos in the Photo tab.", "failed");
    return;
  }
  setProgress(0, `Uploading ${file.name}…`, "uploading");
  const xhr = new XMLHttpRequest();  // XHR rather than fetch: it reports upload progress
  xhr.open("POST", `v1/videos?${p}`);
  for (const [k, v] of Object.entries(authHeaders())) xhr.setRequestHeader(k, v);
  xhr.upload.onprogress = (e) => {
    if (e.lengthComputable) setProgress(e.loaded / e.total, `Uploading ${file.name}: ${pct(e.loaded / e.total)}`, "uploading");
  };
  xhr.onload = () => {
    let body = {};
    try { body = JSON.parse(xhr.responseText); } catch (e) { /* not JSON */ }
    if (xhr.status !== 202) {
      if (xhr.status === 401) $("key-box").hidden = false;
      setProgress(0, `${file.name}: ${body.error || xhr.statusText}`, "failed");
      return;
    }
    pollJob(body.id);
  };
  xhr.onerror = () => setProgress(0, `${file.name}: upload failed`, "failed");
  const form = new FormData();
  form.append("file", file);
  xhr.send(form);
}

function setProgress(fraction, text, stateName) {
  $("video-progress").hidden = stateName === "failed";  // an empty bar under an error says nothing
  const bar = $("video-progress-bar");
  bar.classList.toggle("indeterminate", fraction === null);
  bar.style.width = fraction === null ? "" : `${(100 * fraction).toFixed(1)}%`;
  $("video-status").textContent = text;
  $("video-status").dataset.state = stateName;
}

async function pollJob(id) {
  let job;
  try {
    job = await (await api(`v1/videos/${id}?results=false`)).json();
  } catch (e) {
    setProgress(0, `Video job: ${e.message}`, "failed");
    return;
  }
  if (job.status === "queued" || job.status === "running") {
    const of = job.frames_total ? ` of ${job.frames_total}` : "";
    setProgress(job.progress, `${job.status}: frame ${job.frames_done}${of}`, job.status);
    setTimeout(() => pollJob(id), 600);
    return;
  }
  if (job.status !== "done") {
    setProgress(0, `Video job ${job.status}: ${job.error || ""}`, job.status);
    return;
  }
  const s = job.summary || {};
  setProgress(1, `done: ${s.frames} frames, ${s.faces} faces in ${s.seconds} s (${s.fps} frames/s)`, "done");
  const full = await (await api(`v1/videos/${id}`)).json();
  showVideo(full);
}

async function showVideo(job) {
  state.video = job;
  state.videoTimes = job.results.map((r) => r.time_s);
  $("video-result").hidden = false;
  const player = $("video-player"), overlay = $("video-overlay");
  overlay.width = job.width;
  overlay.height = job.height;
  try {
    // Fetched as a blob (not a plain src) so that an API key travels in a header.
    const blob = await (await api(job.links.source)).blob();
    if (player.src) URL.revokeObjectURL(player.src);
    player.src = URL.createObjectURL(blob);
  } catch (e) {
    showMessage(`Cannot load the video for playback: ${e.message}`, true);
  }
  drawTimeline();
  drawVideoOverlay();
}

function frameAt(t) {  // the last frame whose time is <= t (binary search)
  const times = state.videoTimes;
  let lo = 0, hi = times.length - 1, best = -1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    if (times[mid] <= t + 1e-3) { best = mid; lo = mid + 1; } else { hi = mid - 1; }
  }
  return best < 0 ? null : state.video.results[best];
}

function drawVideoOverlay() {
  const job = state.video;
  if (!job) return;
  const player = $("video-player"), overlay = $("video-overlay");
  const ctx = overlay.getContext("2d");
  ctx.clearRect(0, 0, overlay.width, overlay.height);
  const frame = frameAt(player.currentTime || 0);
  if (frame) drawFaces(ctx, frame.faces, overlay.width);
  drawTimeline(player.currentTime || 0);
}

function videoLoop() {
  drawVideoOverlay();
  if (!$("video-player").paused) requestAnimationFrame(videoLoop);
}

// Mean probability of each class over the faces of each frame, bucketed to at most `columns` points.
function timelineSeries(job, columns) {
  const labels = job.labels, n = job.results.length;
  const per = Math.max(1, Math.ceil(n / columns));
  const points = [];
  for (let i = 0; i < n; i += per) {
    const sums = labels.map(() => 0);
    let faces = 0;
    for (const r of job.results.slice(i, i + per)) {
      for (const f of r.faces) { labels.forEach((k, j) => { sums[j] += f.probs[k] || 0; }); faces += 1; }
    }
    points.push({ t: job.results[i].time_s, values: faces ? sums.map((v) => v / faces) : null });
  }
  return points;
}

function drawTimeline(cursor = null) {
  const job = state.video;
  const canvas = $("timeline");
  const ctx = canvas.getContext("2d");
  const W = canvas.width, H = canvas.height;
  const left = 40, right = 110, top = 10, bottom = 26;
  const pw = W - left - right, ph = H - top - bottom;
  ctx.clearRect(0, 0, W, H);
  if (!job || !job.results.length) return;
  const tEnd = Math.max(job.results[job.results.length - 1].time_s, 1e-3);
  const x = (t) => left + (pw * t) / tEnd, y = (p) => top + ph * (1 - p);
  ctx.font = "11px system-ui, sans-serif";
  ctx.strokeStyle = "#d9dde5";
  ctx.fillStyle = "#667085";
  ctx.lineWidth = 1;
  for (const p of [0, 0.25, 0.5, 0.75, 1]) {  // horizontal grid
    ctx.beginPath(); ctx.moveTo(left, y(p)); ctx.lineTo(left + pw, y(p)); ctx.stroke();
    ctx.fillText(p.toFixed(2), 4, y(p) + 4);
  }
  const step = [0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600].find((s) => tEnd / s <= 10) || 1200;
  for (let t = 0; t <= tEnd + 1e-9; t += step) {  // time ticks
    ctx.fillText(`${t}s`, x(t) - 8, H - 8);
    ctx.beginPath(); ctx.moveTo(x(t), top + ph); ctx.lineTo(x(t), top + ph + 4); ctx.stroke();
  }
  const series = timelineSeries(job, pw);
  job.labels.forEach((label, j) => {
    ctx.strokeStyle = colour(label);
    ctx.lineWidth = 1.6;
    ctx.beginPath();
    let pen = false;
    for (const pt of series) {
      if (!pt.values) { pen = false; continue; }  // no face: a gap in the line
      if (pen) ctx.lineTo(x(pt.t), y(pt.values[j])); else ctx.moveTo(x(pt.t), y(pt.values[j]));
      pen = true;
    }
    ctx.stroke();
    ctx.fillStyle = colour(label);  // legend
    ctx.fillRect(W - right + 12, top + j * 16 + 2, 10, 10);
    ctx.fillStyle = "#1d2330";
    ctx.fillText(label, W - right + 27, top + j * 16 + 11);
  });
  if (cursor !== null) {
    ctx.strokeStyle = "#1d2330";
    ctx.lineWidth = 1;
    ctx.beginPath(); ctx.moveTo(x(cursor), top); ctx.lineTo(x(cursor), top + ph); ctx.stroke();
  }
}

async function downloadVideo(kind) {
  const job = state.video;
  if (!job) return;
  const base = `ferkit-${job.id.slice(0, 8)}`;
  if (kind === "json") {
    const { results, ...meta } = job;
    saveBlob(new Blob([JSON.stringify({ ...meta, results }, null, 1)], { type: "application/json" }), `${base}.json`);
    return;
  }
  try {
    const blob = await (await api(job.links[kind])).blob();
    const names = { csv: "faces.csv", jsonl: "results.jsonl", timeline: "timeline.csv", video: "annotated.mp4" };
    saveBlob(blob, `${base}-${names[kind]}`);
  } catch (e) {
    showMessage(`Download failed: ${e.message}`, true);
  }
}

// ------------------------------------------------------------------ live camera

async function startLive() {
  if (state.live) return;
  showMessage("Starting the camera…");
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ video: { width: { ideal: 640 }, height: { ideal: 480 } }, audio: false });
  } catch (e) {
    showMessage(`No camera: ${e.message}`, true);
    return;
  }
  const video = $("live-video");
  video.srcObject = stream;
  await video.play();
  const p = choice();
  const url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}${location.pathname.replace(/[^/]*$/, "")}v1/live?${p}`;
  // The key travels as a subprotocol, never in the URL (URLs end up in logs and in the browser's history).
  const ws = new WebSocket(url, state.apiKey ? ["ferkit", `ferkit.key.${base64url(state.apiKey)}`] : ["ferkit"]);
  const live = { stream, ws, running: true, frames: 0, t0: performance.now(), sent: document.createElement("canvas") };
  state.live = live;
  $("live-start").disabled = true;
  $("live-stop").disabled = false;
  setLiveStatus("Connecting…", "starting");
  ws.onopen = () => { showMessage(""); sendFrame(live); };
  ws.onmessage = (event) => onLiveResult(live, JSON.parse(event.data));
  ws.onclose = () => { if (state.live === live) stopLive(); };
  ws.onerror = () => showMessage("The live connection failed", true);
}

function sendFrame(live) {
  if (!live.running || live.ws.readyState !== WebSocket.OPEN) return;
  const video = $("live-video");
  if (!video.videoWidth) { setTimeout(() => sendFrame(live), 50); return; }
  const scale = Math.min(1, 640 / video.videoWidth);
  const c = live.sent;  // keeps the frame that was sent, so its boxes are drawn on the same picture
  c.width = Math.round(video.videoWidth * scale);
  c.height = Math.round(video.videoHeight * scale);
  c.getContext("2d").drawImage(video, 0, 0, c.width, c.height);
  c.toBlob((blob) => { if (blob && live.running) live.ws.send(blob); }, "image/jpeg", 0.85);
}

function onLiveResult(live, result) {
  if (result.error) {
    if (result.status === 401 || result.status === 422) { showMessage(result.error, true); return; }
    showMessage(`frame ${result.frame}: ${result.error}`, true);
  } else {
    if (!live.running) return;  // an answer that arrived after Stop
    const canvas = $("live-canvas");
    canvas.width = live.sent.width;
    canvas.height = live.sent.height;
    const ctx = canvas.getContext("2d");
    ctx.drawImage(live.sent, 0, 0);
    const faces = leftToRight(result.faces);
    drawFaces(ctx, faces, canvas.width);
    showFaceCards($("live-faces"), faces);
    $("live-result").hidden = false;  // shown once there is a picture in it
    live.frames += 1;
    const st = $("live-status");
    st.dataset.frames = String(live.frames);
    st.dataset.labels = faces.map((f) => f.label).join(",");
    const fps = live.frames / ((performance.now() - live.t0) / 1000);
    const n = faces.length;
    setLiveStatus(`${live.frames} frames · ${fps.toFixed(1)} frames/s · ${n} face${n === 1 ? "" : "s"} · ` +
      `${result.time_ms} ms on the server`, "running");
  }
  requestAnimationFrame(() => sendFrame(live));  // one frame in flight: the server is never flooded
}

function setLiveStatus(text, stateName) {
  const st = $("live-status");
  st.textContent = text;
  st.dataset.state = stateName;
}

function stopLive() {
  const live = state.live;
  if (!live) return;
  live.running = false;
  state.live = null;
  try { live.ws.close(); } catch (e) { /* already closed */ }
  live.stream.getTracks().forEach((t) => t.stop());
  $("live-video").srcObject = null;
  $("live-start").disabled = false;
  $("live-stop").disabled = true;
  // No stale picture: the last frame and its faces go, and the status says the camera is off.
  const canvas = $("live-canvas");
  canvas.getContext("2d").clearRect(0, 0, canvas.width, canvas.height);
  $("live-faces").replaceChildren();
  $("live-result").hidden = true;
  setLiveStatus(`Stopped after ${live.frames} frame${live.frames === 1 ? "" : "s"}. Start the camera again to continue.`,
    "stopped");
}

function base64url(text) {  // UTF-8, base64url without padding: what a WebSocket subprotocol may hold
  const bytes = new TextEncoder().encode(text);
  return btoa(String.fromCharCode(...bytes)).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

// ------------------------------------------------------------------ wiring

function showTab(name) {
  for (const b of document.querySelectorAll(".tab-button")) b.classList.toggle("active", b.dataset.tab === name);
  for (const s of document.querySelectorAll(".tab")) s.hidden = s.id !== `tab-${name}`;
  if (name !== "live") stopLive();
}

function dropZone(zone, input, handler) {
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    if (e.dataTransfer.files.length) handler(e.dataTransfer.files[0]);
  });
  input.addEventListener("change", () => { if (input.files.length) handler(input.files[0]); input.value = ""; });
}

document.addEventListener("DOMContentLoaded", () => {
  for (const b of document.querySelectorAll(".tab-button")) b.addEventListener("click", () => showTab(b.dataset.tab));
  dropZone($("photo-drop"), $("photo-input"), predictPhoto);
  dropZone($("video-drop"), $("video-input"), uploadVideo);
  $("photo-json").addEventListener("click", () => {
    if (state.photo) saveBlob(new Blob([JSON.stringify(state.photo, null, 1)], { type: "application/json" }), "ferkit-photo.json");
  });
  $("photo-csv").addEventListener("click", () => {
    if (state.photo) saveBlob(new Blob([facesCsv(state.photo.faces.map((face) => ({ face })))], { type: "text/csv" }), "ferkit-photo.csv");
  });
  // A card and its box light up together: hover (or focus) a card, or hover a box.
  const cards = $("photo-faces");
  for (const [type, on] of [["mouseover", true], ["focusin", true], ["mouseout", false], ["focusout", false]]) {
    cards.addEventListener(type, (e) => {
      const card = e.target.closest(".face-card");
      if (!card) return;
      if (on) highlightPhotoFace(Number(card.dataset.index));
      else if (!card.contains(e.relatedTarget)) highlightPhotoFace(null);
    });
  }
  $("photo-canvas").addEventListener("mousemove", (e) => { if (state.photo) highlightPhotoFace(photoFaceAt(e)); });
  $("photo-canvas").addEventListener("mouseleave", () => highlightPhotoFace(null));
  for (const b of document.querySelectorAll("[data-download]")) b.addEventListener("click", () => downloadVideo(b.dataset.download));
  const player = $("video-player");
  player.addEventListener("play", () => requestAnimationFrame(videoLoop));
  player.addEventListener("seeked", drawVideoOverlay);
  player.addEventListener("loadeddata", drawVideoOverlay);
  player.addEventListener("error", () => showMessage(
    "This browser cannot play this video's format; the timeline and the downloads still work.", true));
  $("timeline").addEventListener("click", (e) => {
    const job = state.video;
    if (!job || !job.results.length) return;
    const canvas = e.currentTarget, r = canvas.getBoundingClientRect();
    const px = ((e.clientX - r.left) * canvas.width) / r.width;
    const tEnd = job.results[job.results.length - 1].time_s;
    player.currentTime = Math.max(0, Math.min(tEnd, ((px - 40) / (canvas.width - 150)) * tEnd));
  });
  $("live-start").addEventListener("click", startLive);
  $("live-stop").addEventListener("click", stopLive);
  $("api-key").value = state.apiKey;
  $("api-key").addEventListener("change", () => {
    state.apiKey = $("api-key").value.trim();
    localStorage.setItem("ferkit-api-key", state.apiKey);
    loadModels();
  });
  loadModels();
});
