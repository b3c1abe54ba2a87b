// The elit serve page: plain JS against the server's own API (/v1/models, /v1/images, /v1/status).
"use strict";
const $ = (id) => document.getElementById(id);
let model = null;          // the first model of GET /v1/models
const textModel = () => model.condition === "text";
let waitSeconds = 0;       // the server's predicted queue wait, from /v1/status
let correction = 1;        // its cost model's measured / calibrated ratio now, over the one in `model`

function headers() {
  const key = $("apikey").value;
  localStorage.setItem("elit-api-key", key);
  return key ? { "X-API-Key": key, "Content-Type": "application/json" } : { "Content-Type": "application/json" };
}

async function api(path, body) {
  const response = await fetch(path, body === undefined ? { headers: headers() }
    : { method: "POST", headers: headers(), body: JSON.stringify(body) });
  if (!response.ok) {
    let message = response.status + " " + response.statusText;
    try { const e = (await response.json()).error; message = (e.field ? e.field + ": " : "") + e.message; } catch (_) {}
    throw new Error(message);
  }
  return response;
}

const budgetRow = () => model.budgets[Number($("budget").value)];
const deadlineMode = () => document.querySelector("input[name=mode]:checked").value === "deadline";

function showBudget() {
  // What the slider's budget costs: GFLOPs per image for the whole run, and queue wait + compute.
  // The server gives both at its default steps; a run's cost grows with its steps.
  const row = budgetRow();
  const guidance = Number($("scale").value) === 0 ? "none" : $("guidance").value;
  const ratio = (Number($("steps").value) || model.defaults.steps) / model.defaults.steps;
  const gflops = row.gflops_per_image[guidance], seconds = row.predicted_seconds[guidance];
  $("budget-label").textContent = "budget " + (row.budget === null ? "full" : row.budget);
  $("gflops").textContent = gflops === null ? "not valid with " + guidance : Number((gflops * ratio).toPrecision(4)) + " GFLOPs";
  $("latency").textContent = seconds === null ? "predicted -"
    : "predicted " + Math.round(1000 * (waitSeconds + seconds * ratio * correction)) + " ms";
}

function request(budget) {
  const body = { seed: Number($("seed").value), steps: Number($("steps").value), guidance: $("guidance").value };
  if (textModel()) {
    body.prompt = $("prompt").value;
    const negative = $("negative").value;
    if (negative && (body.guidance === "cfg" || body.guidance === "ccfg")) body.negative_prompt = negative;
  } else if (model.classes.length) body.label = Number($("class").value);
  if (body.guidance !== "none") body.scale = Number($("scale").value);
  if (budget !== undefined) body.budget = budget;
  else if (deadlineMode()) body.deadline_ms = Number($("deadline").value);
  else body.budget = budgetRow().budget === null ? "full" : budgetRow().budget;
  return body;
}

function describe(r) {
  const h = (name) => r.headers.get("X-Elit-" + name);
  const text = h("Text-Tokens") ? `, ${h("Text-Tokens")} text tokens` : "";
  return `budget ${h("Budget")}, ${h("Steps")} steps, ${h("Guidance")}\n${h("GFLOPs-Per-Image")} GFLOPs/image${text}\n` +
         `queue ${h("Queue-Wait-Ms")} ms + compute ${h("Compute-Ms")} ms (batch of ${h("Batch-Images")})`;
}

async function generate() {
  $("error").textContent = "";
  try {
    const r = await api("/v1/images", request());
    $("image").src = URL.createObjectURL(await r.blob());
    $("image").hidden = false;
    $("meta").textContent = describe(r);
  } catch (e) { $("error").textContent = e.message; }
}

async function compare() {
  // The same seed at every budget (at most 8, evenly spread, lowest and full included), side by side.
  $("error").textContent = "";
  const rows = model.budgets, pick = [];
  const n = Math.min(8, rows.length);
  for (let i = 0; i < n; i++) pick.push(rows[Math.round(i * (rows.length - 1) / Math.max(1, n - 1))]);
  $("compare-row").replaceChildren();
  for (const row of pick) {
    try {
      const r = await api("/v1/images", request(row.budget === null ? "full" : row.budget));
      const figure = document.createElement("figure"), img = document.createElement("img");
      img.src = URL.createObjectURL(await r.blob());
      const caption = document.createElement("figcaption");
      caption.textContent = `budget ${r.headers.get("X-Elit-Budget")}: ${r.headers.get("X-Elit-GFLOPs-Per-Image")} GFLOPs, ` +
                            `${r.headers.get("X-Elit-Compute-Ms")} ms`;
      figure.append(img, caption);
      $("compare-row").append(figure);
    } catch (e) { $("error").textContent = e.message; return; }
  }
}

async function poll() {
  try {
    const s = (await (await api("/v1/status")).json()).models[model.name];
    waitSeconds = s.predicted_wait_s;
    correction = s.cost_model.correction / model.cost_model.correction;
    const running = s.running ? `running ${s.running.images} images at budget ${s.running.budget}` : "idle";
    $("status").textContent = `${running}; queue ${s.queued_images} images, predicted wait ` +
      `${Math.round(1000 * s.predicted_wait_s)} ms; ${s.images} images served`;
    const full = model.budgets[model.budgets.length - 1].budget || 1;
    $("recent").replaceChildren(...s.recent.map((b) => {
      const bar = document.createElement("div");
      bar.style.height = Math.max(4, 60 * (b.budget || full) / full) + "px";
      bar.title = `budget ${b.budget}, ${b.steps} steps, ${b.images} images`;
      return bar;
    }));
    showBudget();
  } catch (e) { $("status").textContent = "status: " + e.message; }
}

async function start() {
  $("apikey").value = localStorage.getItem("elit-api-key") || "";
  try {
    model = (await (await api("/v1/models")).json()).models[0];
  } catch (e) { $("error").textContent = e.message + " (an API key may be needed)"; return; }
  $("model-name").textContent = `${model.name}: ${model.backbone}${textModel() ? " (text-to-image)" : ""}, budgets ` +
    (model.elastic ? `${model.budgets[0].budget}..${model.budgets[model.budgets.length - 1].budget}` : "full only");
  $("class").replaceChildren(...model.classes.map((c) => new Option(`${c.id}: ${c.name}`, c.id)));
  // a text model takes a prompt where a class model takes a class (the GFLOPs shown assume its text length)
  $("class-row").hidden = textModel() || !model.classes.length;
  $("prompt-row").hidden = !textModel();
  if (textModel()) $("prompt").maxLength = $("negative").maxLength = model.text.max_prompt_chars;
  $("guidance").replaceChildren(...model.guidance_modes.map((g) => new Option(g, g)));
  $("steps").value = model.defaults.steps;
  $("steps").max = model.limits.max_steps;
  $("budget").max = model.budgets.length - 1;
  $("budget").value = model.budgets.length - 1;
  for (const id of ["budget", "guidance", "scale", "steps"]) $(id).addEventListener("input", showBudget);
  const negativeUsed = () => { $("negative-row").hidden = !textModel() || !["cfg", "ccfg"].includes($("guidance").value); };
  $("guidance").addEventListener("input", negativeUsed);
  negativeUsed();
  $("generate").addEventListener("click", generate);
  $("compare").addEventListener("click", compare);
  $("apikey").addEventListener("change", start);
  showBudget();
  poll();
  setInterval(poll, 1000);
}

start();
