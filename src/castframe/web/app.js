// Castframe playground: plain JavaScript, no build step. The API key stays in localStorage.
"use strict";
const $ = (id) => document.getElementById(id);
const state = {
  key: localStorage.getItem("castframe.key") || "",
  polling: null,
  job: null,          // the job shown in the Result panel while it runs
  formKey: null,      // the Idempotency-Key of the form as it is now (see submit)
  submitting: false,
  uploading: false,
};
const TERMINAL = ["COMPLETED", "FAILED", "CANCELLED"];
const EXTENSIONS = { "image/png": "png", "image/jpeg": "jpg", "image/webp": "webp" };
const FIELDS = ["reference", "prompt", "aspect_ratio", "style_type", "rendering_speed",
  "magic_prompt_option", "num_images", "seed", "negative_prompt"];

// What a person can do about each error, in plain words; other codes show the server's message.
const PLAIN = {
  missing_api_key: "Paste an API key above first (`make run` prints one; a test key uses the free sandbox).",
  invalid_api_key: "This API key is not valid. Check it, or create one with `castframe keys create`.",
  api_key_inactive: "This API key is deactivated. Reactivate it with `castframe keys activate`.",
  insufficient_credits: "The account has too few credits for this job. Top it up with `castframe accounts topup`, or ask for fewer images or a faster speed.",
  rate_limited: "Too many submissions in a short time. Wait a moment and try again.",
  too_many_active_jobs: "This account has too many jobs running. Wait for one to finish, or cancel one.",
  idempotency_key_in_use: "The same job is still being submitted. Wait a second.",
  network: "Cannot reach the Castframe server. Is it still running?",
};

class ApiProblem extends Error {
  constructor(code, message, details = {}) {
    super(message);
    this.code = code;
    this.details = details;
  }
}

function headers(json = true) {
  const h = { "X-API-Key": state.key };
  if (json) h["Content-Type"] = "application/json";
  return h;
}

async function api(path, options = {}) {
  let response;
  try {
    response = await fetch(path, options);
  } catch (error) {
    throw new ApiProblem("network", PLAIN.network);
  }
  const body = await response.json().catch(() => ({}));
  // Error bodies: {"error": message, "code", "details": {"json.path": [messages]}}.
  if (!response.ok) throw new ApiProblem(body.code || `http_${response.status}`, body.error || `The server answered ${response.status}.`, body.details || {});
  return body;
}

function sentence(text) {
  const t = String(text || "").trim();
  return t ? t[0].toUpperCase() + t.slice(1) + (/[.!?)]$/.test(t) ? "" : ".") : "";
}

// A detail's JSON path -> the form field it is about (null: the form as a whole).
function fieldOf(path) {
  if (path === "file" || path === "ideogramParams.character_reference_image" || path === "character_reference_image") return "reference";
  const name = path.replace(/^ideogramParams\./, "");
  return FIELDS.includes(name) ? name : null;
}

function setFieldError(field, message) {
  const box = $(`${field}-error`);
  box.textContent = message;
  box.hidden = !message;
  if (message) $(field).setAttribute("aria-invalid", "true");
  else $(field).removeAttribute("aria-invalid");
}

function clearErrors() {
  showError("");
  FIELDS.forEach((field) => setFieldError(field, ""));
}

function showError(message, code = "") {
  $("error").textContent = message;
  $("error").hidden = !message;
  $("error").dataset.code = code;
}

// An API problem shown where it belongs: beside its fields, or under the form.
function showProblem(problem) {
  if (problem.code === "missing_api_key" || problem.code === "invalid_api_key" || problem.code === "api_key_inactive") {
    showAccount(PLAIN[problem.code], true);
  }
  let placed = false;
  let first = null;
  for (const [path, messages] of Object.entries(problem.details || {})) {
    const field = fieldOf(path);
    if (!field) continue;
    setFieldError(field, [].concat(messages).map(sentence).join(" "));
    first = first || field;
    placed = true;
  }
  if (first) $(first).focus();
  if (!placed) showError(PLAIN[problem.code] || sentence(problem.message), problem.code);
}

function showAccount(text, bad) {
  $("account").textContent = text;
  $("account").classList.toggle("error", Boolean(bad));
  if (bad) $("api-key").setAttribute("aria-invalid", "true");
  else $("api-key").removeAttribute("aria-invalid");
}

async function loadAccount() {
  if (!state.key) { showAccount("", false); return; }
  try {
    const me = await api("/v2/me", { headers: headers(false) });
    showAccount(`${me.team.name} · ${me.apiKey.mode} · ${me.team.credits} credits available`, false);
    if (["missing_api_key", "invalid_api_key", "api_key_inactive", "network"].includes($("error").dataset.code)) showError("");
    loadHistory();
  } catch (error) {
    showAccount(PLAIN[error.code] || sentence(error.message), true);
  }
}

function formChanged() {
  // New inputs, new job: the next Generate gets a fresh Idempotency-Key.
  state.formKey = null;
}

function newKey() {
  if (crypto.randomUUID) return crypto.randomUUID();  // secure contexts only (https, localhost)
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

async function uploadFile(file) {
  setFieldError("reference", "");
  // Whatever was there before is no longer the reference: a failed upload leaves none.
  $("reference").value = "";
  formChanged();
  $("preview").src = URL.createObjectURL(file);
  $("preview").hidden = false;
  $("choose").textContent = "choose another file";
  const form = new FormData();
  form.append("file", file);
  state.uploading = true;
  updateButtons();
  try {
    const upload = await api("/v2/uploads", { method: "POST", headers: headers(false), body: form });
    // The upload's signed url works in any image field until upload.expiresAt.
    $("reference").value = upload.url;
  } catch (error) {
    $("preview").hidden = true;
    $("preview").removeAttribute("src");
    if (error.code === "network" || error.code.endsWith("api_key") || error.code === "api_key_inactive") showProblem(error);
    else setFieldError("reference", `${file.name}: ${sentence(error.message)}`);
  } finally {
    state.uploading = false;
    $("file").value = "";  // the same file may be chosen again
    updateButtons();
  }
}

function params() {
  const p = {
    character_reference_image: $("reference").value.trim(),
    style_type: $("style_type").value,
    rendering_speed: $("rendering_speed").value,
    magic_prompt_option: $("magic_prompt_option").value,
    aspect_ratio: $("aspect_ratio").value,
    num_images: Number($("num_images").value),
  };
  if ($("negative_prompt").value.trim()) p.negative_prompt = $("negative_prompt").value.trim();
  if ($("seed").value !== "") p.seed = Number($("seed").value);
  return p;
}

function running() {
  return Boolean(state.job && !TERMINAL.includes(state.job.status));
}

// The Generate button says what is going on; it is ready only when nothing is.
function updateButtons() {
  const busy = state.submitting || state.uploading || running();
  $("submit").disabled = busy;
  $("submit").textContent = state.uploading ? "Uploading…" : state.submitting ? "Submitting…"
    : running() ? `Generating… ${state.job.progress || 0}%` : "Generate";
  $("cancel").hidden = !running();
  $("cancel").disabled = !running();
}

async function submit(event) {
  event.preventDefault();
  if (state.submitting || state.uploading || running()) return;
  clearErrors();
  if (!state.key) { showProblem(new ApiProblem("missing_api_key", PLAIN.missing_api_key)); $("api-key").focus(); return; }
  if (!$("reference").value.trim()) { setFieldError("reference", "Add a character reference: choose or drop a file, or paste an image URL."); $("reference").focus(); return; }
  if (!$("prompt").value.trim()) { setFieldError("prompt", "Describe the picture in the prompt."); $("prompt").focus(); return; }
  const body = { prompt: $("prompt").value, model: "ideogram-character", ideogramParams: params() };
  // One key per form until its inputs change: a second click, a retry after a network error or
  // a reload of the same job replays the first submission instead of charging again.
  state.formKey = state.formKey || newKey();
  state.submitting = true;
  updateButtons();
  try {
    const { jobId } = await api("/v2/images/generate", {
      method: "POST", headers: { ...headers(), "Idempotency-Key": state.formKey },
      body: JSON.stringify(body),
    });
    watch(jobId);
    if (window.matchMedia("(max-width: 800px)").matches) $("current").scrollIntoView({ block: "start" });
  } catch (error) {
    showProblem(error);
  } finally {
    state.submitting = false;
    updateButtons();
  }
}

async function cancel() {
  if (!running()) return;
  $("cancel").disabled = true;
  try {
    render(await api(`/v2/jobs/${state.job.id}/cancel`, { method: "POST", headers: headers(false) }));
  } catch (error) {
    if (error.code !== "job_not_cancelable") showError(sentence(error.message), error.code);
  }
}

function watch(jobId) {
  clearTimeout(state.polling);
  $("images").innerHTML = "";
  $("job-error").hidden = true;
  $("progress").hidden = false;
  state.job = { id: jobId, status: "QUEUED", progress: 0 };
  updateButtons();
  const tick = async () => {
    if (!state.job || state.job.id !== jobId) return;
    try {
      const job = await api(`/v2/jobs/${jobId}`, { headers: headers(false) });
      if (!state.job || state.job.id !== jobId) return;
      render(job);
      if (TERMINAL.includes(job.status)) { loadHistory(); loadAccount(); return; }
    } catch (error) {
      showError(PLAIN[error.code] || sentence(error.message), error.code);
    }
    state.polling = setTimeout(tick, 500);
  };
  tick();
}

function badge(consistency) {
  const element = document.createElement("span");
  const same = consistency.sameCharacter;
  element.className = `badge ${same ? "same" : "drift"}`;
  const distance = typeof consistency.distance === "number" ? ` · distance ${consistency.distance.toFixed(2)}` : "";
  element.textContent = (same ? "same character ✓" : consistency.faceDetected ? "character drift" : "no face found") + distance;
  element.title = "Face distance between the reference and this image (dlib): below 0.6 is the same person; lower is closer.";
  return element;
}

function render(job) {
  if (state.job && state.job.id === job.id) {
    state.job = job;
    if (TERMINAL.includes(job.status)) state.formKey = null;  // done: Generate again = a new job
  }
  $("status").textContent = `${job.id.slice(0, 8)} · ${job.status} · ${job.progress}% · ${job.creditCost} credits`;
  $("status").dataset.status = job.status;
  $("progress").value = job.progress;
  $("progress").hidden = TERMINAL.includes(job.status);
  // A job's error is its message; errorCode (Castframe's) the stable code.
  $("job-error").textContent = job.error ? sentence(job.error) : "";
  $("job-error").dataset.code = job.errorCode || "";
  $("job-error").hidden = !job.error;
  updateButtons();
  if (!job.result) return;
  $("images").innerHTML = "";
  // images are URL strings; imageDetails (same order) has each one's size, seed, prompt, score.
  const details = job.result.imageDetails || [];
  job.result.images.forEach((url, index) => {
    const info = details[index] || {};
    const figure = document.createElement("figure");
    const img = document.createElement("img");
    img.src = url;
    img.alt = info.prompt || job.input?.prompt || "";
    img.className = "result";
    const caption = document.createElement("figcaption");
    const facts = [];
    if (info.width && info.height) facts.push(`${info.width}×${info.height}`);
    if (info.seed !== undefined && info.seed !== null) facts.push(`seed ${info.seed}`);
    caption.append(facts.join(" · ") + " ");
    if (info.consistency) caption.append(badge(info.consistency), " ");
    if (info.prompt) caption.append(`${info.prompt} `);
    const link = document.createElement("a");
    link.href = url;
    link.download = `${job.id}-${index}.${EXTENSIONS[info.contentType] || "png"}`;
    link.textContent = "download";
    caption.appendChild(link);
    figure.append(img, caption);
    $("images").appendChild(figure);
  });
}

async function loadHistory() {
  if (!state.key) return;
  try {
    const { jobs } = await api("/v2/jobs?limit=10", { headers: headers(false) });
    $("history").innerHTML = "";
    for (const job of jobs) {
      const item = document.createElement("li");
      const open = document.createElement("button");
      open.type = "button";
      open.textContent = (job.input && job.input.prompt || "").slice(0, 80);
      const meta = document.createElement("span");
      meta.textContent = `${job.status} · ${new Date(job.createdAt).toLocaleTimeString()}`;
      open.appendChild(meta);
      open.onclick = () => {
        if (TERMINAL.includes(job.status)) { if (!running()) { state.job = null; render(job); } }
        else if (!running()) watch(job.id);
      };
      item.appendChild(open);
      $("history").appendChild(item);
    }
  } catch (error) {
    if (!["invalid_api_key", "api_key_inactive"].includes(error.code)) showError(PLAIN[error.code] || sentence(error.message), error.code);
  }
}

function init() {
  $("api-key").value = state.key;
  $("api-key").addEventListener("change", (e) => {
    state.key = e.target.value.trim();
    localStorage.setItem("castframe.key", state.key);
    formChanged();
    loadAccount();
  });
  $("choose").addEventListener("click", () => $("file").click());
  $("file").addEventListener("change", (e) => e.target.files[0] && uploadFile(e.target.files[0]));
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    if (e.dataTransfer.files[0]) uploadFile(e.dataTransfer.files[0]);
  });
  for (const field of FIELDS) {
    // Editing a field clears what was said about it (and about the form) and starts a new job.
    const changed = () => { setFieldError(field, ""); showError(""); formChanged(); };
    $(field).addEventListener("input", changed);
    $(field).addEventListener("change", changed);
  }
  $("form").addEventListener("submit", submit);
  $("cancel").addEventListener("click", cancel);
  $("refresh").addEventListener("click", loadHistory);
  updateButtons();
  loadAccount();
}

init();
