// The web page's script: no build step, no library. Everything from the API is untrusted text (model
// output above all): it reaches the page only through textContent and attribute setters, never as HTML.
"use strict";

const KEY = "selfinstruct.apiKey";
const POLL_MS = 1500;
const STAGES = ["instructions", "classification", "instances", "export"];
const body = document.body;
const $ = (selector) => document.querySelector(selector);

// el("a", {href: url}, "text", child, ...): attributes via setAttribute, children as text nodes or nodes.
function el(tag, attrs, ...children) {
  const node = tag.startsWith("svg:")
    ? document.createElementNS("http://www.w3.org/2000/svg", tag.slice(4))
    : document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value !== null && value !== undefined && value !== false) node.setAttribute(name, String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function show(node, visible) {
  node.hidden = !visible;
}

const uiBase = "/ui";
const jobUrl = (id) => `${uiBase}/jobs/${encodeURIComponent(id)}`;
const decisionUrl = (job, id) => `${jobUrl(job)}/decisions/${encodeURIComponent(id)}`;

// --- the API ---

class ApiError extends Error {
  constructor(status, problem) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
  }
}

async function api(path, options = {}) {
  const headers = new Headers(options.headers || {});
  headers.set("Authorization", `Bearer ${sessionStorage.getItem(KEY) || ""}`);
  const response = await fetch(path, { ...options, headers, credentials: "omit", cache: "no-store" });
  if (response.status === 401 && !options.signingIn) {
    signOut("Your API key was not accepted any more; sign in again.");
  }
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = { title: text.slice(0, 200) };
  }
  if (!response.ok) throw new ApiError(response.status, data || {});
  return data;
}

function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== "" && v !== null && v !== undefined) q.set(k, v);
  const s = q.toString();
  return s ? `?${s}` : "";
}

// A problem+json as a list: the title, then every field (and line) at fault.
function problemNode(error) {
  const box = el("div", {}, el("p", {}, error.message));
  const errors = (error.problem && error.problem.errors) || [];
  if (errors.length) {
    box.append(
      el(
        "ul",
        {},
        ...errors.map((e) => el("li", {}, `${e.field || ""}${e.line ? ` (line ${e.line})` : ""}: ${e.message}`)),
      ),
    );
  }
  return box;
}

function flash(message) {
  const node = $("#flash");
  node.textContent = message;
  show(node, Boolean(message));
}

// --- signing in ---

function signOut(message) {
  sessionStorage.removeItem(KEY);
  stopPolling();
  show($("#content"), false);
  show($("#sign-out"), false);
  show($("#sign-in"), true);
  const err = $("#sign-in-error");
  err.textContent = message || "";
  show(err, Boolean(message));
  $("#api-key").focus();
}

async function signIn(event) {
  event.preventDefault();
  const input = $("#api-key");
  const err = $("#sign-in-error");
  const key = input.value.trim();
  input.value = "";
  sessionStorage.setItem(KEY, key);
  try {
    await api("/v1/jobs?limit=1", { signingIn: true });
  } catch (e) {
    sessionStorage.removeItem(KEY);
    err.textContent =
      e.status === 401 ? "This API key was not accepted: it is unknown or revoked." : `Could not sign in: ${e.message}`;
    show(err, true);
    input.focus();
    return;
  }
  show(err, false);
  start();
}

let timer = null;
function stopPolling() {
  clearTimeout(timer);
  timer = null;
}

// Call `fn` now and then every POLL_MS after each call has finished, until it returns false.
function poll(fn) {
  stopPolling();
  const tick = async () => {
    let again = true;
    try {
      again = (await fn()) !== false;
      flash("");
    } catch (e) {
      if (e.status !== 401) flash(`Could not refresh: ${e.message}`);
    }
    if (again && sessionStorage.getItem(KEY)) timer = setTimeout(tick, POLL_MS);
  };
  return tick();
}

// --- formatting ---

const number = (n) => (n === null || n === undefined ? "" : Number(n).toLocaleString("en"));
const when = (iso) => (iso ? new Date(iso).toLocaleString("en-GB") : "");
const percent = (done, total) => (total ? `${Math.round((100 * done) / total)}%` : "");
// a job's cost so far (null when its profile has no prices)
const money = (cost) => (cost ? `${Number(cost.total).toFixed(6)} ${cost.currency}` : "");

function bar(value, max, label) {
  return el("progress", { value: Math.min(value, max || 0), max: max || 1, "aria-label": label }, percent(value, max));
}

function safeHref(url) {
  try {
    const parsed = new URL(url, location.href);
    return parsed.protocol === "http:" || parsed.protocol === "https:" ? parsed.href : null;
  } catch {
    return null;
  }
}

// --- jobs ---

function jobRow(job) {
  const p = job.progress;
  return [
    el("a", { href: jobUrl(job.id), class: "job-link" }, job.id),
    el("span", { class: `state state-${job.state}` }, job.state),
    job.stage || "",
    el(
      "span",
      { class: "progress" },
      bar(p.instructions_kept, p.instructions_target, "instructions kept"),
      ` ${number(p.instructions_kept)} / ${number(p.instructions_target)}`,
    ),
    number(p.prompt_tokens + p.completion_tokens),
    money(job.cost),
    when(job.created_at),
  ];
}

async function jobsPage() {
  const tbody = $("#jobs tbody");
  const filter = $("#state-filter");
  let shown = "";
  const refresh = async () => {
    const page = await api(`/v1/jobs${query({ limit: 100, state: filter.value })}`);
    const ids = page.items.map((j) => j.id).join(",");
    if (ids !== shown) {
      // another set of jobs: rebuild; otherwise update the cells in place, keeping focus where it is
      tbody.replaceChildren(...page.items.map((j) => el("tr", { "data-id": j.id }, ...jobRow(j).map(() => el("td")))));
      shown = ids;
    }
    page.items.forEach((job, i) => {
      const row = tbody.rows[i];
      jobRow(job).forEach((value, c) => {
        // the link cell is built once: replacing it would lose the keyboard focus on every refresh
        if (c > 0 || !row.cells[0].firstChild) row.cells[c].replaceChildren(value);
      });
      row.dataset.state = job.state;
    });
    show($("#jobs-empty"), page.items.length === 0);
  };
  jobsPageRefresh = refresh;
  filter.addEventListener("change", () => poll(refresh));
  await poll(refresh);
  jobForm();
}

async function jobForm() {
  const [profiles, seedSets] = await Promise.all([api("/v1/profiles"), api("/v1/seed-sets?limit=100")]);
  $("#profile").replaceChildren(
    ...profiles.map((p) => el("option", { value: p.name, selected: p.default }, `${p.name} (${p.model})`)),
  );
  $("#seed-set").append(
    ...seedSets.items.map((s) => el("option", { value: s.id }, `${s.name || s.id.slice(0, 12)} (${s.task_count} tasks)`)),
  );
  // the form as a job's body (uploading the seed file first, when one is chosen)
  const formBody = async () => {
    let decoding = {};
      const raw = $("#decoding").value.trim();
      if (raw) {
        try {
          decoding = JSON.parse(raw);
        } catch (e) {
          throw new ApiError(422, { title: "the decoding overrides are not valid JSON", errors: [{ field: "decoding", message: e.message }] });
        }
      }
    let seedSetId = $("#seed-set").value;
    const file = $("#seed-file").files[0];
    if (file) {
      const form = new FormData();
      form.append("file", file);
      form.append("name", file.name.replace(/\.[^.]*$/, "").slice(0, 100));
      seedSetId = (await api("/v1/seed-sets", { method: "POST", body: form })).id;
    } else if (!seedSetId) {
      throw new ApiError(422, { title: "choose a seed set file to upload, or one uploaded before" });
    }
    return {
      seed_set_id: seedSetId,
      profile: $("#profile").value || undefined,
      num_instructions: Number($("#count").value),
      seed: Number($("#seed").value),
      judge_threshold: $("#judge").value ? Number($("#judge").value) : undefined,
      decoding,
    };
  };
  const out = $("#job-form-error");
  $("#preview-button").addEventListener("click", async () => {
    show(out, false);
    try {
      const { num_instructions: full, ...body } = await formBody();
      $("#preview-summary").textContent = "Running the preview...";
      show($("#preview"), true);
      const json = { method: "POST", headers: { "Content-Type": "application/json" } };
      let preview = await api("/v1/previews", { ...json, body: JSON.stringify({ ...body, full_num_instructions: full }) });
      while (preview.state === "queued" || preview.state === "running") {
        await new Promise((resolve) => setTimeout(resolve, 1000));
        preview = await api(`/v1/previews/${encodeURIComponent(preview.id)}`);
      }
      showPreview(preview);
    } catch (e) {
      out.replaceChildren(problemNode(e));
      show(out, true);
    }
  });
  $("#job-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    show(out, false);
    try {
      const body = await formBody();
      await api("/v1/jobs", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
      $("#job-form").reset();
      $("#new-job").open = false;
      $("#state-filter").value = "";
      await poll(jobsPageRefresh);
    } catch (e) {
      out.replaceChildren(problemNode(e));
      show(out, true);
    }
  });
}

// A preview's candidates with their decisions, and the kept ones with their instances; all as text.
function showPreview(preview) {
  const r = preview.result;
  if (preview.state !== "succeeded" || !r) {
    $("#preview-summary").textContent = `The preview ${preview.state}: ${preview.error || ""}`;
    return;
  }
  const job = r.estimate && r.estimate.full_job;
  const cost = r.cost ? `, cost ${money(r.cost)}` : "";
  const priced = job && job.cost !== null ? `, ${Number(job.cost).toFixed(6)} ${r.estimate.currency}` : "";
  const full = job ? `; the full job of ${number(job.num_instructions)}: about ${number(job.prompt_tokens + job.completion_tokens)} tokens${priced}` : "";
  $("#preview-summary").textContent = `${r.kept.length} kept of ${r.candidates.length} candidates; ${number(r.tokens.prompt + r.tokens.completion)} tokens${cost}${full}`;
  $("#preview-candidates tbody").replaceChildren(
    ...r.candidates.map((d) =>
      el("tr", { "data-rule": d.rule }, el("td", {}, d.text), el("td", {}, d.rule), el("td", { class: "num" }, d.detail && d.detail.score !== undefined ? Number(d.detail.score).toFixed(3) : ""), el("td", {}, d.nearest_text || "")),
    ),
  );
  $("#preview-kept").replaceChildren(
    ...r.kept.map((k) =>
      el(
        "li",
        {},
        el("p", {}, `${k.text} (classification: ${(k.classification && k.classification.label) || "?"})`),
        el("ul", {}, ...k.instances.map((i) => el("li", { class: "instance" }, i.input ? `${i.input} -> ${i.output}` : i.output))),
      ),
    ),
  );
}

// The jobs list's refresher, for the form to restart polling after a submission.
let jobsPageRefresh = () => {};

// --- one job ---

function fact(list, term, value) {
  list.append(el("dt", {}, term), el("dd", {}, value));
}

function stageItems(job) {
  const p = job.progress;
  const finished = job.state === "succeeded" || job.stage === "done";
  const at = STAGES.indexOf(job.stage);
  return STAGES.map((stage, i) => {
    let status = "pending";
    if (finished || (at >= 0 && i < at)) status = "done";
    else if (i === at) status = job.state === "running" ? "running" : job.state;
    let progress = null;
    if (stage === "instructions") {
      progress = [p.instructions_kept, p.instructions_target, `${number(p.instructions_kept)} / ${number(p.instructions_target)} instructions kept`];
    } else if (status === "running") {
      progress = [p.stage_done, p.stage_total, `${number(p.stage_done)} / ${number(p.stage_total)}`];
    } else if (stage === "instances" && status === "done") {
      progress = [1, 1, `${number(p.instances_kept)} instances kept`];
    }
    return el(
      "li",
      { class: `stage-${status}`, "data-stage": stage },
      el("span", { class: "stage-name" }, stage),
      el("span", { class: "stage-status" }, status),
      progress ? bar(progress[0], progress[1], `${stage} progress`) : null,
      progress ? el("span", {}, progress[2]) : null,
    );
  });
}

async function ruleChart(jobId) {
  const rules = await api("/v1/rules");
  const counts = await Promise.all(
    rules.map((r) => api(`/v1/jobs/${encodeURIComponent(jobId)}/decisions${query({ rule: r.name, stage: r.stage, limit: 1 })}`)),
  );
  const rows = rules.map((r, i) => ({ ...r, total: counts[i].total })).filter((r) => r.total > 0);
  const most = Math.max(1, ...rows.map((r) => r.total));
  const width = 640;
  const label = 200;
  const rowHeight = 22;
  const svg = el("svg:svg", {
    viewBox: `0 0 ${width} ${rowHeight * rows.length + 4}`,
    width,
    height: rowHeight * rows.length + 4,
    role: "img",
    "aria-label": "decisions per rule",
    class: "chart",
  });
  rows.forEach((r, i) => {
    const y = i * rowHeight + 2;
    const w = Math.max(1, ((width - label - 60) * r.total) / most);
    const link = el("svg:a", { href: `${jobUrl(jobId)}/decisions${query({ stage: r.stage, rule: r.name })}` });
    link.append(
      el("svg:title", {}, `${r.stage} · ${r.name}: ${r.description}`),
      el("svg:text", { x: label - 6, y: y + 15, "text-anchor": "end", class: "chart-label" }, `${r.stage === "instance" ? "instance " : ""}${r.name}`),
      el("svg:rect", { x: label, y: y + 3, width: w, height: rowHeight - 6, class: r.name === "kept" ? "bar-kept" : "bar-dropped" }),
      el("svg:text", { x: label + w + 6, y: y + 15, class: "chart-count" }, number(r.total)),
    );
    svg.append(link);
  });
  $("#rule-chart").replaceChildren(rows.length ? svg : el("p", {}, "No decisions yet."));
}

// A histogram as vertical bars: [[label, count], ...], each bar titled with its label and count.
function histogram(name, bins) {
  const width = 640;
  const height = 120;
  const most = Math.max(1, ...bins.map(([, n]) => n));
  const w = width / Math.max(1, bins.length);
  const svg = el("svg:svg", { viewBox: `0 0 ${width} ${height + 16}`, width, height: height + 16, role: "img", "aria-label": name, class: "chart" });
  bins.forEach(([label, n], i) => {
    const h = (height * n) / most;
    svg.append(
      el("svg:rect", { x: i * w + 1, y: height - h, width: Math.max(1, w - 2), height: h, class: "bar-kept", "data-count": n }, el("svg:title", {}, `${label}: ${n}`)),
    );
  });
  svg.append(
    el("svg:text", { x: 0, y: height + 14, class: "chart-label" }, String(bins.length ? bins[0][0] : "")),
    el("svg:text", { x: width, y: height + 14, "text-anchor": "end", class: "chart-label" }, String(bins.length ? bins[bins.length - 1][0] : "")),
  );
  return el("figure", {}, el("figcaption", {}, name), svg);
}

// The quality report (report.json): Table 1 beside the paper's, and Figures 3 and 4 from its data.
async function qualityReport(jobId) {
  const report = await api(`/v1/jobs/${encodeURIComponent(jobId)}/report`);
  const rows = report.table1.map((r) =>
    el("tr", {}, el("td", {}, r.statistic.replaceAll("_", " ")), el("td", { class: "num" }, number(r.this_dataset)), el("td", { class: "num" }, number(r.paper))),
  );
  const ipi = report.instances_per_instruction;
  rows.push(el("tr", {}, el("td", {}, "instances per instruction"), el("td", { class: "num" }, number(ipi.this_dataset)), el("td", { class: "num" }, number(ipi.paper))));
  $("#table1 tbody").replaceChildren(...rows);
  const rouge = report.rouge_l_to_nearest_seed;
  const figures = [
    histogram(
      "Figure 3: ROUGE-L of each kept instruction against its most similar seed instruction",
      rouge.counts.map((n, i) => [(i * rouge.bin_width).toFixed(2), n]),
    ),
  ];
  for (const [key, name] of [["instruction_words", "instructions"], ["non_empty_input_words", "non-empty inputs"], ["output_words", "outputs"]]) {
    const counts = Object.entries(report.lengths[key] || {}).sort((a, b) => Number(a[0]) - Number(b[0]));
    figures.push(histogram(`Figure 4: length of ${name} in words`, counts));
  }
  const judge = report.judge_scores;
  if (judge) {
    const title = `LLM judge: instances per score, 1 to 5 (mean ${judge.mean ?? "none"}; ${judge.unscored} unscored)`;
    figures.push(histogram(title, Object.entries(judge.counts)));
  }
  $("#report-figures").replaceChildren(...figures);
  selectionTable(report.classification_selection);
  show($("#report"), true);
  show($("#report-note"), false);
}

// classification_method auto's choice: each method on the seed tasks outside the demonstrations.
function selectionTable(selection) {
  const note = $("#selection-note");
  show($("#selection"), Boolean(selection && selection.methods));
  show(note, Boolean(selection));
  if (!selection) return;
  if (!selection.methods) {
    note.textContent = `Classification method: ${selection.chosen || "knn"}, chosen without a comparison (${selection.skipped}).`;
    return;
  }
  note.textContent = `Classification method: ${selection.chosen}, the cheapest within ${selection.margin ?? 0} of the best balanced accuracy on the ${selection.tasks} seed tasks outside the demonstrations (${selection.classification_tasks} of them classification), each answered without its own label.`;
  const rows = Object.entries(selection.methods).map(([method, r]) =>
    el(
      "tr",
      { "data-method": method, class: method === selection.chosen ? "chosen" : null },
      el("td", {}, method),
      el("td", { class: "num" }, r.balanced_accuracy.toFixed(3)),
      ...["tp", "fn", "tn", "fp"].map((k) => el("td", { class: "num" }, String(r[k]))),
    ),
  );
  for (const [method, why] of Object.entries(selection.unavailable || {})) {
    rows.push(el("tr", { "data-method": method }, el("td", {}, method), el("td", { colspan: 5 }, `not available: ${why}`)));
  }
  $("#selection tbody").replaceChildren(...rows);
}

async function datasetTable(jobId) {
  const manifest = await api(`/v1/jobs/${encodeURIComponent(jobId)}/dataset`);
  $("#dataset tbody").replaceChildren(
    ...manifest.files.map((f) => {
      const href = safeHref(f.url);
      return el(
        "tr",
        {},
        el("td", {}, href ? el("a", { href, download: f.name, class: "download" }, f.name) : f.name),
        el("td", {}, f.format || ""),
        el("td", {}, number(f.records)),
        el("td", {}, number(f.bytes)),
        el("td", {}, el("code", {}, (f.sha256 || "").slice(0, 16))),
      );
    }),
  );
  $("#dataset-note").textContent = `Download links are valid for ${Math.round(manifest.expires_in / 60)} minutes.`;
  show($("#dataset"), true);
}

async function jobPage() {
  const jobId = body.dataset.job;
  $("#job-id").textContent = jobId;
  let chartAt = 0;
  let last = null;
  const cancel = $("#cancel");
  cancel.addEventListener("click", async () => {
    try {
      await api(`/v1/jobs/${encodeURIComponent(jobId)}/cancel`, { method: "POST" });
    } catch (e) {
      flash(`Could not cancel: ${e.message}`);
    }
  });
  await poll(async () => {
    const job = await api(`/v1/jobs/${encodeURIComponent(jobId)}`);
    const p = job.progress;
    const facts = $("#job-facts");
    facts.replaceChildren();
    fact(facts, "State", el("span", { class: `state state-${job.state}`, id: "job-state" }, job.state));
    fact(facts, "Stage", job.stage || "");
    fact(facts, "Profile", job.profile);
    fact(facts, "Created", when(job.created_at));
    fact(facts, "Started", when(job.started_at));
    fact(facts, "Finished", when(job.finished_at));
    if (job.eta_seconds !== null && job.state === "running") fact(facts, "Time left", `about ${Math.ceil(job.eta_seconds)} s`);
    fact(facts, "Requests", number(p.requests));
    fact(facts, "Tokens", `${number(p.prompt_tokens)} prompt + ${number(p.completion_tokens)} completion`);
    if (job.cost) {
      const stages = Object.entries(job.cost.by_stage).map(([s, c]) => `${s} ${Number(c).toFixed(6)}`);
      fact(facts, "Cost", el("span", {}, el("span", { id: "job-cost" }, money(job.cost)), ` (${stages.join(", ")})`));
    }
    if (job.stop_reason) fact(facts, "Stopped by", job.stop_reason);
    // lineage: the job this one extends, and the jobs whose instructions it does not repeat
    if (job.config.extends) fact(facts, "Extends", el("a", { href: jobUrl(job.config.extends), id: "job-extends" }, job.config.extends));
    if ((job.config.dedup_against || []).length) {
      fact(facts, "Not repeating", el("span", { id: "job-dedup-against" }, ...job.config.dedup_against.flatMap((id, i) => [i ? ", " : "", el("a", { href: jobUrl(id) }, id)])));
    }
    if (job.notify_url) fact(facts, "Notify URL", el("code", {}, job.notify_url));
    for (const d of job.deliveries || []) fact(facts, "Webhook", deliveryNode(d));
    for (const warning of job.warnings || []) fact(facts, "Warning", warning);
    if (job.error) fact(facts, "Error", job.error);
    show(cancel, (job.state === "queued" || job.state === "running") && !job.cancel_requested);
    $("#stages").replaceChildren(...stageItems(job));
    const active = job.state === "queued" || job.state === "running";
    // one request a rule: every 10 s while the job runs, and once more when it ends
    if (last === null || last.state !== job.state || (active && Date.now() - chartAt > 10000)) {
      chartAt = Date.now();
      await ruleChart(jobId);
    }
    if (job.dataset_available && !(last && last.dataset_available)) {
      await datasetTable(jobId);
      if (job.state === "succeeded") await qualityReport(jobId);
    }
    await moreEvents();
    last = job;
    // a finished job's webhook may still be on its way: keep refreshing until it is delivered or given up
    const deliveries = job.deliveries || [];
    const webhookDue = Boolean(job.notify_url) && (deliveries.length === 0 || deliveries.some((d) => d.pending));
    return active || webhookDue;
  });
}

// A webhook delivery in words: where it got to, after how many attempts, and the last answer.
function deliveryNode(d) {
  const status = d.delivered ? "delivered" : d.pending ? "pending" : "failed";
  const answer = [d.last_status !== null ? `HTTP ${d.last_status}` : null, d.last_error].filter(Boolean).join(", ");
  const tries = `${d.attempts} attempt${d.attempts === 1 ? "" : "s"}`;
  const words = {
    delivered: `delivered (${answer}, ${tries})`,
    pending: d.attempts ? `retrying (${tries}; last: ${answer})` : "queued",
    failed: `not delivered (${tries}; last: ${answer})`,
  }[status];
  return el("span", { class: `delivery delivery-${status}`, "data-event": d.event, "data-status": status }, `${d.event}: ${words}`);
}

// The job's events, oldest first: each refresh asks only for those after the last one shown.
function eventText(e) {
  const d = e.data || {};
  switch (e.type) {
    case "state":
      return [`${d.previous || "new"} -> ${d.state}`, d.stop_reason, d.cancelled_by && `by ${d.cancelled_by}`, d.error]
        .filter(Boolean)
        .join("; ");
    case "stage_started":
    case "stage_ended":
      return d.stage || "";
    case "warning":
      return d.message || "";
    case "batch":
      return `${d.stage} round ${d.round}${d.attempt ? ` (attempt ${d.attempt + 1})` : ""}: ${d.batch_id} ${d.status}, ${d.requests} requests`;
    case "webhook":
      return [
        `${d.event} attempt ${d.attempt}`,
        d.status !== null && d.status !== undefined ? `HTTP ${d.status}` : null,
        d.error,
        d.delivered ? "delivered" : d.final ? "given up" : `next attempt in ${d.next_attempt_in} s`,
      ]
        .filter(Boolean)
        .join("; ");
    default:
      return Object.entries(d).map(([k, v]) => `${k} ${typeof v === "object" ? JSON.stringify(v) : v}`).join(", ");
  }
}

let eventsCursor = null;
async function moreEvents() {
  const jobId = body.dataset.job;
  const list = $("#events");
  for (;;) {
    const page = await api(`/v1/jobs/${encodeURIComponent(jobId)}/events${query({ limit: 200, cursor: eventsCursor })}`);
    for (const e of page.items) {
      const at = new Date(e.at * 1000).toLocaleTimeString("en-GB");
      list.append(el("li", { class: `event event-${e.type}`, "data-type": e.type }, `${at} ${e.type}: ${eventText(e)}`));
    }
    if (page.next_cursor) eventsCursor = page.next_cursor;
    show($("#events-empty"), list.children.length === 0);
    if (page.items.length < 200) return;
  }
}

// --- decisions ---

function scoreOf(d) {
  return d.detail && typeof d.detail.score === "number" ? d.detail.score.toFixed(4) : "";
}

async function decisionsPage() {
  const jobId = body.dataset.job;
  const base = `/v1/jobs/${encodeURIComponent(jobId)}/decisions`;
  const form = $("#filters");
  const rules = await api("/v1/rules");
  $("#f-rule").append(...rules.map((r) => el("option", { value: r.name, title: r.description }, r.name)));
  const params = new URLSearchParams(location.search);
  const names = ["stage", "verdict", "rule", "limit", "q"];
  for (const name of names) if (params.get(name)) form.elements[name].value = params.get(name);
  let cursors = [null]; // the cursor of every page seen so far; the last is the current page's
  let next = null;
  let items = [];
  const filters = () => Object.fromEntries(names.map((n) => [n, form.elements[n].value.trim()]));

  const renderRows = () => {
    $("#decisions tbody").replaceChildren(
      ...items.map((d) =>
        el(
          "tr",
          { "data-id": d.id },
          el("td", {}, el("a", { href: decisionUrl(jobId, d.id), class: "decision-link" }, d.id)),
          el("td", {}, d.stage),
          el("td", {}, el("span", { class: `verdict-${d.verdict}` }, d.verdict)),
          el("td", {}, d.rule),
          el("td", { class: "num" }, scoreOf(d)),
          el("td", { class: "text" }, d.input ? `${d.input} → ${d.text}` : d.text),
        ),
      ),
    );
  };

  let loads = 0; // a newer load (another search, another page) makes an older one's answers moot
  const load = async () => {
    const mine = ++loads;
    const f = filters();
    let page = await api(`${base}${query({ ...f, cursor: cursors[cursors.length - 1] })}`);
    // a running job's text search reads the log in bounded steps: an empty page with a cursor means
    // "nothing found yet, read on"; read on (40 steps at most) and show the first page with a match
    for (let hops = 0; mine === loads && !page.items.length && page.next_cursor && hops < 40; hops++) {
      cursors[cursors.length - 1] = page.next_cursor;
      page = await api(`${base}${query({ ...f, cursor: page.next_cursor })}`);
    }
    if (mine !== loads) return;
    items = page.items;
    next = page.next_cursor;
    renderRows();
    const start = (cursors.length - 1) * Number(f.limit);
    $("#page-info").textContent =
      page.total === null
        ? items.length
          ? `Page ${cursors.length}: ${number(items.length)} ${items.length === 1 ? "decision" : "decisions"} matching (the job is running: the total comes when it ends)`
          : next
            ? "No match yet; Next page reads on."
            : "No decisions match."
        : items.length
          ? `Page ${cursors.length}: decisions ${number(start + 1)}–${number(start + items.length)} of ${number(page.total)} matching`
          : `No decisions match (${number(page.total)}).`;
    $("#next").disabled = !next;
    $("#prev").disabled = cursors.length < 2;
    $("#first").disabled = cursors.length < 2;
    performance.mark("decisions-rendered");
  };
  const run = async (fn) => {
    try {
      fn();
      await load();
      flash("");
    } catch (e) {
      flash(`Could not load decisions: ${e.message}`);
    }
  };
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    history.replaceState(null, "", query(filters()) || location.pathname);
    run(() => (cursors = [null]));
  });
  form.addEventListener("change", (event) => event.target.name !== "q" && form.requestSubmit());
  $("#next").addEventListener("click", () => run(() => cursors.push(next)));
  $("#prev").addEventListener("click", () => run(() => cursors.pop()));
  $("#first").addEventListener("click", () => run(() => (cursors = [null])));
  await run(() => {});
}

// --- one decision ---

// ROUGE-L's tokens (rouge-score's tokenizer, no stemming): lower-cased runs of [a-z0-9]; every token
// keeps the span of the original text it came from, for highlighting.
function tokens(text) {
  const out = [];
  let current = null;
  for (let i = 0; i < text.length; ) {
    const ch = String.fromCodePoint(text.codePointAt(i));
    const lower = ch.toLowerCase();
    for (const c of lower) {
      if (/[a-z0-9]/.test(c)) {
        if (!current) current = { token: "", start: i, end: i };
        current.token += c;
        current.end = i + ch.length;
      } else if (current) {
        out.push(current);
        current = null;
      }
    }
    i += ch.length;
  }
  if (current) out.push(current);
  return out;
}

// One longest common subsequence of two token lists: the indexes of its tokens in each.
function lcs(a, b) {
  const table = Array.from({ length: a.length + 1 }, () => new Uint16Array(b.length + 1));
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      table[i][j] = a[i - 1] === b[j - 1] ? table[i - 1][j - 1] + 1 : Math.max(table[i - 1][j], table[i][j - 1]);
    }
  }
  const inA = new Set();
  const inB = new Set();
  for (let i = a.length, j = b.length; i > 0 && j > 0; ) {
    if (a[i - 1] === b[j - 1]) {
      inA.add(--i);
      inB.add(--j);
    } else if (table[i - 1][j] >= table[i][j - 1]) i--;
    else j--;
  }
  return [inA, inB];
}

// The text, with the tokens at `marked` wrapped in <mark> (built as nodes, never as HTML).
function highlighted(target, text, toks, marked) {
  const nodes = [];
  let at = 0;
  toks.forEach((t, i) => {
    if (!marked.has(i)) return;
    if (t.start > at) nodes.push(document.createTextNode(text.slice(at, t.start)));
    nodes.push(el("mark", {}, text.slice(t.start, t.end)));
    at = t.end;
  });
  if (at < text.length) nodes.push(document.createTextNode(text.slice(at)));
  target.replaceChildren(...nodes);
}

async function instancesOf(jobId, instructionId) {
  // an instance's id is "<instruction id>:<k>" (k from 0), or ":x" for an unparseable response
  const found = [];
  for (let k = 0; k < 100; k++) {
    try {
      found.push(await api(`/v1/jobs/${encodeURIComponent(jobId)}/decisions/${encodeURIComponent(`${instructionId}:${k}`)}`));
    } catch (e) {
      if (e.status !== 404) throw e;
      break;
    }
  }
  if (!found.length) {
    try {
      found.push(await api(`/v1/jobs/${encodeURIComponent(jobId)}/decisions/${encodeURIComponent(`${instructionId}:x`)}`));
    } catch (e) {
      if (e.status !== 404) throw e;
    }
  }
  return found;
}

async function decisionPage() {
  const jobId = body.dataset.job;
  const id = body.dataset.decision;
  $("#decision-id").textContent = id;
  const [d, rules] = await Promise.all([
    api(`/v1/jobs/${encodeURIComponent(jobId)}/decisions/${encodeURIComponent(id)}`),
    api("/v1/rules"),
  ]);
  const rule = rules.find((r) => r.name === d.rule);
  const facts = $("#decision-facts");
  fact(facts, "Stage", d.stage);
  fact(facts, "Verdict", el("span", { class: `verdict-${d.verdict}` }, d.verdict));
  fact(facts, "Rule", `${d.rule}${rule ? ` (${rule.description})` : ""}`);
  fact(facts, d.stage === "instance" ? "Output" : "Instruction", el("span", { class: "text", id: "decision-text" }, d.text));
  if (d.input !== null && d.input !== undefined) fact(facts, "Input", el("span", { class: "text" }, d.input));
  const src = d.source || {};
  if (d.stage === "instance") {
    fact(facts, "Task", el("a", { href: decisionUrl(jobId, src.instruction_id), id: "instruction-link" }, src.instruction_id));
    fact(facts, "Position", src.position === -1 ? "the response as a whole" : `instance ${src.position + 1} of the response`);
  } else {
    fact(
      facts,
      "Source",
      `prompt ${src.prompt}, completion ${src.completion}, candidate ${src.position + 1} of the response`,
    );
  }
  const detail = d.detail || {};
  for (const [k, v] of Object.entries(detail)) {
    if (!["nearest_text", "score", "nearest_id", "nearest_job"].includes(k)) fact(facts, k, typeof v === "string" ? v : JSON.stringify(v));
  }
  if (typeof detail.nearest_text === "string") {
    const a = tokens(d.text);
    const b = tokens(detail.nearest_text);
    const [inA, inB] = lcs(
      a.map((t) => t.token),
      b.map((t) => t.token),
    );
    highlighted($("#candidate"), d.text, a, inA);
    highlighted($("#nearest"), detail.nearest_text, b, inB);
    $("#nearest-id").textContent = detail.nearest_id || "";
    if (detail.nearest_job) {
      // an earlier job's instruction (dedup_against): its decision, in that job
      $("#nearest-id").replaceChildren(
        el("a", { href: decisionUrl(detail.nearest_job, detail.nearest_id), id: "nearest-link" }, detail.nearest_id),
        ` in job ${detail.nearest_job}`,
      );
    }
    $("#score").textContent = typeof detail.score === "number" ? detail.score.toFixed(4) : "";
    $("#lcs-info").textContent = `${inA.size} common of ${a.length} and ${b.length} words`;
    show($("#compare"), true);
  }
  if (d.stage === "instruction" && d.verdict === "kept") {
    const found = await instancesOf(jobId, d.id);
    $("#instances tbody").replaceChildren(
      ...found.map((i) =>
        el(
          "tr",
          {},
          el("td", {}, el("a", { href: decisionUrl(jobId, i.id), class: "instance-link" }, i.id)),
          el("td", {}, i.verdict),
          el("td", {}, i.rule),
          el("td", { class: "text" }, i.input || ""),
          el("td", { class: "text" }, i.text),
        ),
      ),
    );
    if (!found.length) $("#instances tbody").append(el("tr", {}, el("td", { colspan: 5 }, "None (yet).")));
    show($("#instances"), true);
  }
}

// --- start ---

const PAGES = { jobs: jobsPage, job: jobPage, decisions: decisionsPage, decision: decisionPage };

async function start() {
  show($("#sign-in"), false);
  show($("#content"), true);
  show($("#sign-out"), true);
  try {
    await PAGES[body.dataset.page]();
  } catch (e) {
    if (e.status !== 401) {
      flash(e.status === 404 ? `Not found: ${e.message}` : `Something went wrong: ${e.message}`);
    }
  }
}

$("#sign-in-form").addEventListener("submit", signIn);
$("#sign-out").addEventListener("click", () => signOut(""));
if (sessionStorage.getItem(KEY)) start();
else signOut("");
