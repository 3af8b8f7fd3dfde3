// Castframe playground: plain JavaScript, no build step. The API key stays in localStorage.
"use strict";
const $ = (id) => document.getElementById(id);
const state = { key: localStorage.getItem("castframe.key") || "", reference: null, polling: null };
const TERMINAL = ["COMPLETED", "FAILED", "CANCELLED"];
const EXTENSIONS = { "image/png": "png", "image/jpeg": "jpg", "image/webp": "webp" };

function headers(json = true) {
  const h = { "X-API-Key": state.key };
  if (json) h["Content-Type"] = "application/json";
  return h;
}

async function api(path, options = {}) {
  const response = await fetch(path, options);
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    // Error bodies: {"error": message, "code", "details": {"json.path": [messages]}}.
    const detail = Object.entries(body.details || {})
      .map(([path, messages]) => `${path}: ${[].concat(messages).join(", ")}`).join("; ");
    throw new Error(`${body.code || response.status}: ${body.error || "request failed"}${detail ? " (" + detail + ")" : ""}`);
  }
  return body;
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

async function loadAccount() {
  if (!state.key) { $("account").textContent = ""; return; }
  try {
    const me = await api("/v2/me", { headers: headers(false) });
    $("account").textContent = `${me.team.name} · ${me.apiKey.mode} · ${me.team.credits} credits available`;
    loadHistory();
  } catch (error) {
    $("account").textContent = error.message;
  }
}

async function uploadFile(file) {
  showError("");
  $("preview").src = URL.createObjectURL(file);
  $("preview").hidden = false;
  $("drop-hint").hidden = true;
  const form = new FormData();
  form.append("file", file);
  try {
    const upload = await api("/v2/uploads", { method: "POST", headers: headers(false), body: form });
    // The upload's signed url works in any image field until upload.expiresAt.
    state.reference = upload.url;
    $("reference").value = upload.url;
  } catch (error) {
    showError(error.message);
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

async function submit(event) {
  event.preventDefault();
  showError("");
  if (!state.key) { showError("Paste an API key first (a test key works with the sandbox)."); return; }
  if (!$("reference").value.trim()) { showError("Add a character reference image."); return; }
  const body = { prompt: $("prompt").value, model: "ideogram-character", ideogramParams: params() };
  $("submit").disabled = true;
  try {
    const { jobId } = await api("/v2/images/generate", {
      method: "POST", headers: { ...headers(), "Idempotency-Key": crypto.randomUUID() },
      body: JSON.stringify(body),
    });
    watch(jobId);
  } catch (error) {
    showError(error.message);
  } finally {
    $("submit").disabled = false;
  }
}

function watch(jobId) {
  clearTimeout(state.polling);
  $("images").innerHTML = "";
  $("progress").hidden = false;
  const tick = async () => {
    try {
      const job = await api(`/v2/jobs/${jobId}`, { headers: headers(false) });
      render(job);
      if (TERMINAL.includes(job.status)) { loadHistory(); loadAccount(); return; }
    } catch (error) {
      showError(error.message);
    }
    state.polling = setTimeout(tick, 500);
  };
  tick();
}

function render(job) {
  $("status").textContent = `${job.id.slice(0, 8)} · ${job.status} · ${job.progress}% · ${job.creditCost} credits`;
  $("status").dataset.status = job.status;
  $("progress").value = job.progress;
  $("progress").hidden = TERMINAL.includes(job.status);
  // A job's error is its message; errorCode (Castframe's) the stable code.
  showError(job.error ? (job.errorCode ? `${job.errorCode}: ${job.error}` : job.error) : "");
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
    if (info.consistency) {
      const badge = document.createElement("span");
      const same = info.consistency.sameCharacter;
      badge.className = `badge ${same ? "same" : "drift"}`;
      badge.textContent = same ? "same character ✓" : info.consistency.faceDetected ? "character drift" : "no face found";
      caption.append(badge, " ");
    }
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
      item.textContent = (job.input && job.input.prompt || "").slice(0, 80);
      const meta = document.createElement("span");
      meta.textContent = `${job.status} · ${new Date(job.createdAt).toLocaleTimeString()}`;
      item.appendChild(meta);
      item.onclick = () => { render(job); if (!TERMINAL.includes(job.status)) watch(job.id); };
      $("history").appendChild(item);
    }
  } catch (error) {
    showError(error.message);
  }
}

function init() {
  $("api-key").value = state.key;
  $("api-key").addEventListener("change", (e) => {
    state.key = e.target.value.trim();
    localStorage.setItem("castframe.key", state.key);
    loadAccount();
  });
  $("file").addEventListener("change", (e) => e.target.files[0] && uploadFile(e.target.files[0]));
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    if (e.dataTransfer.files[0]) uploadFile(e.dataTransfer.files[0]);
  });
  $("form").addEventListener("submit", submit);
  $("refresh").addEventListener("click", loadHistory);
  loadAccount();
}

init();
