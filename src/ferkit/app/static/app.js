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
  photoName: "",    // the photo's file name, for the names of its downloads
  video: null,      // finished video job (with results)
  videoTimes: [],   // results[i].time_s, for the binary search
  videoStart: 0,    // seconds: the player's time of the video's first frame (the results count from 0 there)
  videoShown: null,  // results time (s) of the frame the player shows
  videoJob: null,   // the one upload and job followed: {file, xhr, id, sent, ended, timer}
  timeline: null,   // the chart's geometry in CSS pixels, for clicks: {left, width, t0, t1}
  live: null,       // {stream, ws, running, frames, t0}
};

// ------------------------------------------------------------------ API helpers

function authHeaders() {
  return state.apiKey ? { "X-API-Key": state.apiKey } : {};
}

// What the page says when the server refuses the key. The server's own words are for API clients (headers,
// WebSocket subprotocols); on this page there is one thing to do: fill in the box.
function keyRefused() {
  $("key-box").hidden = false;
  return new Error(state.apiKey ? "wrong API key: check the API key box at the top"
    : "this server needs an API key: type it in the API key box at the top");
}

async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: { ...authHeaders(), ...(options.headers || {}) } });
  if (!response.ok) {
    if (response.status === 401) throw keyRefused();
    let message = `${response.status} ${response.statusText}`;
    try { message = (await response.json()).error || message; } catch (e) { /* not JSON */ }
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
// the face at index `highlight` gets a thick box with a white rim. Boxes first, then the tags, placed so that no
// tag covers another (see placeTags).
function drawFaces(ctx, faces, width, highlight = null) {
  const s = Math.max(1, width / 640);
  ctx.save();
  ctx.font = `${Math.round(14 * s)}px system-ui, sans-serif`;
  ctx.textBaseline = "top";
  faces.forEach((f, i) => {
    const [x, y, w, h] = f.box;
    if (i === highlight) {
      ctx.strokeStyle = "#fff";
      ctx.lineWidth = 8 * s;
      ctx.strokeRect(x, y, w, h);
    }
    ctx.strokeStyle = colour(f.label);
    ctx.lineWidth = (i === highlight ? 4 : 2) * s;
    ctx.setLineDash(f.label === UNCERTAIN ? [8 * s, 5 * s] : []);
    ctx.strokeRect(x, y, w, h);
  });
  ctx.setLineDash([]);
  const tags = faces.map((f, i) => faceTag(f, i));
  const sizes = tags.map((t) => [ctx.measureText(t).width + 8 * s, 20 * s]);
  const places = placeTags(faces, sizes, ctx.canvas.width, ctx.canvas.height);
  faces.forEach((f, i) => {
    const [x, y, w, h] = f.box, [tx, ty, tw, th] = places[i];
    const c = colour(f.label);
    if (ty + th < y || ty > y + h) {  // pushed away from its box by the others: a line leads back to it
      ctx.strokeStyle = c;
      ctx.lineWidth = 2 * s;
      ctx.beginPath();
      ctx.moveTo(tx + Math.min(tw, w) / 2, ty < y ? ty + th : ty);
      ctx.lineTo(tx + Math.min(tw, w) / 2, ty < y ? y : y + h);
      ctx.stroke();
    }
    ctx.fillStyle = c;
    ctx.fillRect(tx, ty, tw, th);
    ctx.fillStyle = ["happy", "neutral", "surprise"].includes(f.label) ? "#000" : "#fff";  // uncertain: white on grey
    ctx.fillText(tags[i], tx + 4 * s, ty + 3 * s);
  });
  ctx.restore();
  ctx.canvas.dataset.tags = tags.join("|");  // what the boxes say, for tests and for reading back
  ctx.canvas.dataset.tagBoxes = JSON.stringify(places.map((r) => r.map(Math.round)));  // where they say it
}

// Where each face's tag goes ([x, y, w, h] in image pixels; `sizes`: [w, h] of each tag): touching its box (above
// it, inside its top, below it, inside its bottom; aligned with its left or right edge), else further above or
// below; never over a tag placed before, and over other faces only when nothing else is free. Faces are placed in
// order (left to right), each at the first place that fits.
function placeTags(faces, sizes, width, height) {
  const hits = (a, b) => a[0] < b[0] + b[2] && b[0] < a[0] + a[2] && a[1] < b[1] + b[3] && b[1] < a[1] + a[3];
  const placed = [];
  faces.forEach((f, i) => {
    const [x, y, w, h] = f.box, [tw, th] = sizes[i];
    const rows = [y - th, y, y + h, y + h - th];
    for (let k = 1; k <= faces.length; k++) rows.push(y - th * (k + 1), y + h + th * k);  // further out, in a crowd
    const cols = [x, x + w - tw].map((tx) => Math.max(0, Math.min(tx, width - tw)));
    let best = null, bestCost = Infinity;
    rows.forEach((ty, order) => {
      if (ty < 0 || ty + th > height) return;
      for (const tx of cols) {
        const r = [tx, ty, tw, th];
        if (placed.some((p) => hits(r, p))) continue;
        const cost = 1000 * faces.filter((g, j) => j !== i && hits(r, g.box)).length + order;
        if (cost < bestCost) { best = r; bestCost = cost; }
      }
    });
    placed.push(best || [cols[0], Math.max(0, Math.min(y - th, height - th)), tw, th]);  // nowhere free: as before
  });
  return placed;
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
    clearPhoto();  // the previous photo's boxes and cards would read as this file's answer
    showMessage(`${file.name}: ${e.message}`, true);
    return;
  }
  result.faces = leftToRight(result.faces);  // numbered 1, 2, ... from the left, on the boxes and on the cards
  state.photo = result;
  state.photoName = file.name;
  state.photoHighlight = null;
  // Draw the server's decoded size: the browser applies the same EXIF rotation as OpenCV.
  state.photoBitmap = await createImageBitmap(file, { imageOrientation: "from-image" }).catch(() => null);
  const canvas = $("photo-canvas");
  canvas.width = result.width;
  canvas.height = result.height;
  canvas.style.setProperty("--aspect", String(result.width / result.height));  // the CSS fits it in the window
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

function clearPhoto() {
  state.photo = null;
  state.photoBitmap = null;
  state.photoHighlight = null;
  const canvas = $("photo-canvas");
  canvas.getContext("2d").clearRect(0, 0, canvas.width, canvas.height);
  canvas.dataset.tags = "";
  canvas.dataset.tagBoxes = "[]";
  $("photo-faces").replaceChildren();
  $("photo-summary").textContent = "";
  $("photo-empty").hidden = true;
  const box = $("photo-result");
  box.dataset.count = "";
  box.dataset.labels = "";
  box.hidden = true;
}

// The downloads of a photo are named after it: "crowd.jpg" gives "crowd-faces.csv" and "crowd-faces.json".
function photoDownloadName(ext) {
  const stem = state.photoName.replace(/\.[^.]*$/, "").replace(/[^\w.-]+/g, "_") || "photo";
  return `${stem}-faces.${ext}`;
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

// One video job at a time: a new upload, or Cancel, ends the one before it (its upload aborted, or its job
// deleted on the server, and its polling stopped), so the status and the results on the page are always those of
// the latest upload.
function uploadVideo(file) {
  if (!file) return;
  endVideoJob();
  clearVideo();
  const p = choice();
  p.set("detect_every", $("detect-every").value || "1");
  p.set("smooth", $("smooth").value || "0");
  $("video-job").hidden = false;
  if (file.type.startsWith("image/")) {  // a photo would go up as a one-frame video no player shows
    setProgress(0, `${file.name} is a photo, not a video: this tab expects ${VIDEO_EXPECTED}. ` +
      "Recognise photos in the Photo tab.", "failed");
    return;
  }
  const xhr = new XMLHttpRequest();  // XHR rather than fetch: it reports upload progress
  const job = { file, xhr, id: null, sent: false, ended: false, timer: null };
  state.videoJob = job;
  setProgress(0, `Uploading ${file.name}…`, "uploading");
  xhr.open("POST", `v1/videos?${p}`);
  for (const [k, v] of Object.entries(authHeaders())) xhr.setRequestHeader(k, v);
  xhr.upload.onprogress = (e) => {
    if (e.lengthComputable && !job.ended) {
      setProgress(e.loaded / e.total, `Uploading ${file.name}: ${pct(e.loaded / e.total)}`, "uploading");
    }
  };
  xhr.upload.onload = () => { job.sent = true; };
  xhr.onload = () => {
    let body = {};
    try { body = JSON.parse(xhr.responseText); } catch (e) { /* not JSON */ }
    if (job.ended) {  // cancelled or replaced while the server made the job: it is not wanted
      if (xhr.status === 202 && body.id) deleteVideoJob(body.id);
      return;
    }
    if (xhr.status !== 202) {
      job.ended = true;
      const why = xhr.status === 401 ? keyRefused().message : body.error || xhr.statusText;
      setProgress(0, `${file.name}: ${why}`, "failed");
      return;
    }
    job.id = body.id;
    pollJob(job);
  };
  xhr.onerror = () => { if (!job.ended) { job.ended = true; setProgress(0, `${file.name}: upload failed`, "failed"); } };
  const form = new FormData();
  form.append("file", file);
  xhr.send(form);
}

// Stop following the current job; a job still uploading or running is cancelled. True when there was one.
function endVideoJob() {
  const job = state.videoJob;
  if (!job || job.ended) return false;
  job.ended = true;
  clearTimeout(job.timer);
  if (job.id) deleteVideoJob(job.id);
  else if (!job.sent) job.xhr.abort();  // a job the server is making now is deleted when its id comes (onload)
  return true;
}

function deleteVideoJob(id) {
  api(`v1/videos/${id}`, { method: "DELETE" }).catch(() => { /* gone already: expired or deleted */ });
}

function cancelVideo() {
  const job = state.videoJob;
  if (!endVideoJob()) return;
  setProgress(0, `Cancelled ${job.file.name}. Choose a video to start again.`, "cancelled");
  $("video-input").focus();  // the Cancel button is gone: the focus goes to what there is to do next
}

// Forget the video shown: its results, its picture, its overlay and its chart.
function clearVideo() {
  state.video = null;
  state.videoTimes = [];
  state.videoStart = 0;
  state.videoShown = null;
  $("video-result").hidden = true;
  const player = $("video-player");
  player.pause();
  if (player.src) {
    URL.revokeObjectURL(player.src);
    player.removeAttribute("src");
    player.load();
  }
  const overlay = $("video-overlay");
  overlay.getContext("2d").clearRect(0, 0, overlay.width, overlay.height);
  overlay.dataset.frame = "";
  overlay.dataset.tags = "";
}

function setProgress(fraction, text, stateName) {
  $("video-progress").hidden = !["uploading", "queued", "running", "done"].includes(stateName);  // no empty bar under an error
  const bar = $("video-progress-bar");
  bar.classList.toggle("indeterminate", fraction === null);
  bar.style.width = fraction === null ? "" : `${(100 * fraction).toFixed(1)}%`;
  const status = $("video-status");
  status.textContent = text;
  status.dataset.state = stateName;
  status.dataset.job = (state.videoJob && state.videoJob.id) || "";  // which job these words are about
  const cancel = $("video-cancel");
  const hide = !["uploading", "queued", "running"].includes(stateName);
  if (hide && document.activeElement === cancel) $("video-input").focus();
  cancel.hidden = hide;
}

async function pollJob(job) {
  let s;
  try {
    s = await (await api(`v1/videos/${job.id}?results=false`)).json();
  } catch (e) {
    if (!job.ended) { job.ended = true; setProgress(0, `Video job: ${e.message}`, "failed"); }
    return;
  }
  if (job.ended) return;  // cancelled, or replaced by a newer upload, while the answer was on its way
  if (s.status === "queued" || s.status === "running") {
    const of = s.frames_total ? ` of ${s.frames_total}` : "";
    setProgress(s.progress, `${job.file.name}: ${s.status}, frame ${s.frames_done}${of}`, s.status);
    job.timer = setTimeout(() => pollJob(job), 600);
    return;
  }
  job.ended = true;
  if (s.status !== "done") {
    setProgress(0, `${job.file.name}: video job ${s.status}${s.error ? `: ${s.error}` : ""}`, s.status);
    return;
  }
  const sum = s.summary || {};
  setProgress(1, `${job.file.name} done: ${sum.frames} frames, ${sum.faces} faces in ${sum.seconds} s (${sum.fps} frames/s)`, "done");
  let full;
  try {
    full = await (await api(`v1/videos/${job.id}`)).json();
  } catch (e) {
    setProgress(0, `${job.file.name}: cannot read the results: ${e.message}`, "failed");
    return;
  }
  if (state.videoJob === job) showVideo(job, full);
}

async function showVideo(job, full) {
  state.video = full;
  state.videoTimes = full.results.map((r) => r.time_s);
  state.videoStart = null;  // known when the player shows its first frame (watchFrames)
  state.videoShown = full.results.length ? full.results[0].time_s : null;
  $("video-result").hidden = false;
  $("timeline-legend").replaceChildren(...full.labels.map((label) => {
    const item = document.createElement("span");
    const sw = document.createElement("span");
    sw.className = "swatch";
    sw.style.background = colour(label);
    item.append(sw, label);
    return item;
  }));
  const player = $("video-player"), overlay = $("video-overlay");
  overlay.width = full.width;
  overlay.height = full.height;
  drawVideoOverlay();
  try {
    // Fetched as a blob (not a plain src) so that an API key travels in a header.
    const blob = await (await api(full.links.source)).blob();
    if (state.videoJob !== job) return;
    if (player.src) URL.revokeObjectURL(player.src);
    player.src = URL.createObjectURL(blob);
    watchFrames(player);
  } catch (e) {
    showMessage(`Cannot load the video for playback: ${e.message}`, true);
  }
}

// The player runs on the stream's own clock: an MP4 whose first frame is stamped 0.852 s shows that frame at
// 0.852 s, while the results count from that first frame (its time_s is 0). So the first frame the player presents
// gives the offset, and each frame it presents says by its own timestamp (mediaTime) which result to draw: the
// overlay is that of the picture shown, not of the clock (which runs ahead of the picture while playing).
const FRAME_EXACT = "requestVideoFrameCallback" in HTMLVideoElement.prototype;

function watchFrames(player) {
  if (!FRAME_EXACT) { state.videoStart = 0; return; }  // an older browser: the clock, from 0
  const src = player.src;
  const onFrame = (now, meta) => {
    if (player.src !== src) return;  // another video since
    if (state.videoStart === null) state.videoStart = meta.mediaTime;  // the first frame: time_s 0 of the results
    state.videoShown = meta.mediaTime - state.videoStart;
    drawVideoOverlay();
    player.requestVideoFrameCallback(onFrame);
  };
  player.requestVideoFrameCallback(onFrame);
}

function fromClock() {  // without requestVideoFrameCallback: the frame at the player's clock
  if (!state.video || FRAME_EXACT) return;
  state.videoShown = $("video-player").currentTime - (state.videoStart || 0);
  drawVideoOverlay();
}

function videoLoop() {
  fromClock();
  if (!$("video-player").paused) requestAnimationFrame(videoLoop);
}

function frameIndexAt(t) {  // the last frame whose time is <= t (binary search), or -1
  const times = state.videoTimes;
  let lo = 0, hi = times.length - 1, best = -1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    if (times[mid] <= t + 1e-3) { best = mid; lo = mid + 1; } else { hi = mid - 1; }
  }
  return best;
}

function frameAt(t) {
  const i = t === null ? -1 : frameIndexAt(t);
  return i < 0 ? null : state.video.results[i];
}

function drawVideoOverlay() {
  const job = state.video;
  if (!job) return;
  const overlay = $("video-overlay");
  const ctx = overlay.getContext("2d");
  ctx.clearRect(0, 0, overlay.width, overlay.height);
  const frame = frameAt(state.videoShown);
  overlay.dataset.frame = frame ? String(frame.frame) : "";  // which result is drawn, for tests and for reading back
  if (frame) drawFaces(ctx, frame.faces, overlay.width);
  else overlay.dataset.tags = "";
  drawTimeline();
}

// Show results frame `i` (clamped): the player seeks into that frame's own span on its clock.
function seekToFrame(i) {
  const times = state.videoTimes;
  if (!times.length) return;
  i = Math.max(0, Math.min(times.length - 1, i));
  seekTo((state.videoStart || 0) + times[i] + 0.001);  // 1 ms in: time_s is rounded to 0.1 ms
}

function seekTo(t) {  // t on the player's clock
  const player = $("video-player");
  player.currentTime = Math.max(0, Number.isFinite(player.duration) ? Math.min(player.duration, t) : t);
  if (!FRAME_EXACT || player.readyState === 0) {  // no picture to follow: move the overlay and the cursor now
    state.videoShown = t - (state.videoStart || 0);
    drawVideoOverlay();
  }
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

function secondsText(t) { return `${Number(t.toFixed(2))} s`; }

// The chart is drawn at the size it is shown (CSS pixels times devicePixelRatio), its text at 12 CSS pixels, on
// the player's clock (so 3 s on the chart is 3 s on the player); the legend is HTML beside it.
function drawTimeline() {
  const job = state.video;
  const canvas = $("timeline");
  const W = canvas.clientWidth, H = canvas.clientHeight;
  if (!W || !H) return;  // not on screen
  const dpr = window.devicePixelRatio || 1;
  if (canvas.width !== Math.round(W * dpr) || canvas.height !== Math.round(H * dpr)) {
    canvas.width = Math.round(W * dpr);
    canvas.height = Math.round(H * dpr);
  }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, W, H);
  if (!job || !job.results.length) return;
  const left = 38, right = 14, top = 10, bottom = 26;
  const pw = W - left - right, ph = H - top - bottom;
  const start = state.videoStart || 0, results = job.results;
  const t0 = start + results[0].time_s, t1 = Math.max(start + results[results.length - 1].time_s, t0 + 1e-3);
  const x = (t) => left + (pw * (t - t0)) / (t1 - t0), y = (p) => top + ph * (1 - p);
  state.timeline = { left, width: pw, t0, t1 };
  ctx.font = "12px system-ui, sans-serif";
  ctx.strokeStyle = "#d9dde5";
  ctx.fillStyle = "#667085";
  ctx.lineWidth = 1;
  ctx.textAlign = "left";  // the context keeps its settings from one drawing to the next: each is set here
  ctx.textBaseline = "middle";
  for (const p of [0, 0.25, 0.5, 0.75, 1]) {  // horizontal grid
    ctx.beginPath(); ctx.moveTo(left, y(p)); ctx.lineTo(left + pw, y(p)); ctx.stroke();
    ctx.fillText(p.toFixed(2), 4, y(p));
  }
  // Time ticks at least 48 CSS pixels apart, at round seconds of the player's clock.
  const step = [0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1200, 1800].find((s) => (pw * s) / (t1 - t0) >= 48) || 3600;
  ctx.textAlign = "center";
  ctx.textBaseline = "alphabetic";
  for (let k = Math.ceil(t0 / step - 1e-9); k * step <= t1 + 1e-9; k++) {
    const t = k * step;
    ctx.fillText(secondsText(t), Math.min(Math.max(x(t), 18), W - 18), H - 8);
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
      if (pen) ctx.lineTo(x(start + pt.t), y(pt.values[j])); else ctx.moveTo(x(start + pt.t), y(pt.values[j]));
      pen = true;
    }
    ctx.stroke();
  });
  const i = state.videoShown === null ? -1 : frameIndexAt(state.videoShown);
  if (i >= 0) {
    const t = start + results[i].time_s;
    ctx.strokeStyle = "#1d2330";
    ctx.lineWidth = 1.5;
    ctx.beginPath(); ctx.moveTo(x(t), top); ctx.lineTo(x(t), top + ph); ctx.stroke();
    canvas.setAttribute("aria-valuenow", t.toFixed(3));
    canvas.setAttribute("aria-valuetext", `${secondsText(t)}, frame ${results[i].frame}`);
  }
  canvas.setAttribute("aria-valuemin", t0.toFixed(3));
  canvas.setAttribute("aria-valuemax", t1.toFixed(3));
}

// Keys on the focused chart: arrows move 1 s (with Shift one frame), Page Up/Down 10 s, Home and End to the ends.
function timelineKey(e) {
  if (!state.video || !state.videoTimes.length) return;
  const i = Math.max(0, frameIndexAt(state.videoShown === null ? 0 : state.videoShown));
  const here = (state.videoStart || 0) + state.videoTimes[i];
  const seconds = { ArrowRight: 1, ArrowUp: 1, ArrowLeft: -1, ArrowDown: -1, PageUp: 10, PageDown: -10 }[e.key];
  if (e.key === "Home") seekToFrame(0);
  else if (e.key === "End") seekToFrame(state.videoTimes.length - 1);
  else if (seconds && e.shiftKey && Math.abs(seconds) === 1) seekToFrame(i + seconds);
  else if (seconds) seekToFrame(frameIndexAt(here + seconds - (state.videoStart || 0)));
  else return;
  e.preventDefault();
}

function timelineClick(e) {
  const g = state.timeline;
  if (!state.video || !g) return;
  const r = e.currentTarget.getBoundingClientRect();
  const f = Math.max(0, Math.min(1, (e.clientX - r.left - g.left) / g.width));
  seekTo(g.t0 + f * (g.t1 - g.t0));
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
  const focused = document.activeElement === $("live-start");
  $("live-start").disabled = true;
  $("live-stop").disabled = false;
  if (focused) $("live-stop").focus();  // a disabled button drops the focus to the page: it goes to Stop instead
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
    if (result.status === 401) { showMessage(keyRefused().message, true); return; }
    if (result.status === 422) { showMessage(result.error, true); return; }
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
  const focused = document.activeElement === $("live-stop");
  $("live-start").disabled = false;
  $("live-stop").disabled = true;
  if (focused) $("live-start").focus();
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
  for (const b of document.querySelectorAll(".tab-button")) {
    const on = b.dataset.tab === name;
    b.classList.toggle("active", on);
    b.setAttribute("aria-selected", String(on));
    b.tabIndex = on ? 0 : -1;  // one tab stop for the tab list; the arrow keys move within it
  }
  for (const s of document.querySelectorAll(".tab")) s.hidden = s.id !== `tab-${name}`;
  if (name !== "live") stopLive();
  if (name === "video") drawTimeline();  // sized to its box, which a hidden tab does not have
}

// The tab list's keys (WAI-ARIA tabs): Left/Right move to the previous/next tab and show it, Home/End the ends.
function tabKey(e) {
  const tabs = Array.from(document.querySelectorAll(".tab-button"));
  const i = tabs.indexOf(e.target);
  const to = { ArrowRight: i + 1, ArrowLeft: i - 1, Home: 0, End: tabs.length - 1 }[e.key];
  if (i < 0 || to === undefined) return;
  const tab = tabs[(to + tabs.length) % tabs.length];
  showTab(tab.dataset.tab);
  tab.focus();
  e.preventDefault();
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
  $("tabs").addEventListener("keydown", tabKey);
  showTab("photo");
  dropZone($("photo-drop"), $("photo-input"), predictPhoto);
  dropZone($("video-drop"), $("video-input"), uploadVideo);
  $("photo-json").addEventListener("click", () => {
    if (!state.photo) return;
    saveBlob(new Blob([JSON.stringify({ file: state.photoName, ...state.photo }, null, 1)], { type: "application/json" }),
      photoDownloadName("json"));
  });
  $("photo-csv").addEventListener("click", () => {
    if (state.photo) saveBlob(new Blob([facesCsv(state.photo.faces.map((face) => ({ face })))], { type: "text/csv" }), photoDownloadName("csv"));
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
  player.addEventListener("seeked", fromClock);
  player.addEventListener("loadeddata", fromClock);
  player.addEventListener("error", () => { if (player.getAttribute("src")) showMessage(
    "This browser cannot play this video's format; the timeline and the downloads still work.", true); });
  $("video-cancel").addEventListener("click", cancelVideo);
  $("timeline").addEventListener("click", timelineClick);
  $("timeline").addEventListener("keydown", timelineKey);
  new ResizeObserver(() => drawTimeline()).observe($("timeline"));  // a phone turned, a window resized
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
