// Castframe playground: plain JavaScript, no build step. The API key stays in localStorage.
"use strict";
const $ = (id) => document.getElementById(id);
const state = { key: localStorage.getItem("castframe.key") || "", reference: null, polling: null };

function headers(json = true) {
  const h = { "X-API-Key": state.key };
  if (json) h["Content-Type"] = "application/json";
  return h;
}

async function api(path, options = {}) {
  const response = await fetch(path, options);
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    const detail = (body.details || []).map((d) => `${d.field}: ${d.message}`).join("; ");
    throw new Error(`${body.code || response.status}: ${body.message || "request failed"}${detail ? " (" + detail + ")" : ""}`);
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
    const account = await api("/v2/account", { headers: headers(false) });
    $("account").textContent = `${account.name} · ${account.mode} · ${account.available} credits available`;
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
    state.reference = upload.reference;
    $("reference").value = upload.reference;
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
  const body = {
    prompt: $("prompt").value, model: "ideogram-character",
    aspect_ratio: $("aspect_ratio").value, num_images: Number($("num_images").value),
    ideogramParams: params(),
  };
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
      if (["COMPLETED", "FAILED", "CANCELED"].includes(job.status)) { loadHistory(); loadAccount(); return; }
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
  if (job.error) showError(`${job.error.code}: ${job.error.message}`);
  if (!job.result) return;
  $("progress").hidden = true;
  $("images").innerHTML = "";
  job.result.images.forEach((image, index) => {
    const figure = document.createElement("figure");
    const img = document.createElement("img");
    img.src = image.url;
    img.alt = image.prompt;
    img.className = "result";
    const caption = document.createElement("figcaption");
    const score = image.consistency ? (image.consistency.sameCharacter ? " · same character ✓" : " · character drift") : "";
    caption.textContent = `${image.width}×${image.height} · seed ${image.seed}${score} · ${image.prompt} `;
    const link = document.createElement("a");
    link.href = image.url;
    link.download = `${job.id}-${index}.png`;
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
      item.onclick = () => { render(job); if (!job.result) watch(job.id); };
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
