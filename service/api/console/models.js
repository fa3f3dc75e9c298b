// Models: the list the key may use, and a model's page with its lineage and metrics.
import { api, enc } from "./api.js";
import { facts, h, link, num, table, time } from "./ui.js";

export function kind(m) {
  if (m.head_only) return `head-only on ${m.base}`;
  if (m.zero_shot) return "encoder (zero-shot)";
  return "full"; // a classifier of its own method `full`, or a QA model
}

export async function modelsPage() {
  const models = (await api("/v1/models")).data;
  return h(
    "section", {},
    h("h1", {}, "Models"),
    table(
      [
        ["model", (m) => link(`#/models/${enc(m.id)}`, m.id)],
        ["task", (m) => m.task],
        ["serves", (m) => m.endpoints.join(", ")],
        ["precision served", (m) => (m.serving ? `${m.serving.precision} on ${m.serving.device}` : m.head_only ? `base's (${m.base})` : m.precision)],
        ["kind", kind],
        ["base", (m) => m.base || ""],
        ["created", (m) => time(m.created_at)],
      ],
      models,
      { class: "models" },
    ),
  );
}

export async function modelPage(id) {
  const m = await api(`/v1/models/${enc(id)}`);
  let job = null;
  if (m.job && m.job.job_id) {
    job = await api(`/v1/fine_tuning/jobs/${enc(m.job.job_id)}`).catch(() => null);
  }
  return h(
    "section", { class: "model" },
    h("h1", {}, m.id),
    h("p", {}, link(`#/playground?model=${enc(m.id)}`, "Try it in the playground")),
    facts([
      ["task", m.task],
      ["serves", m.endpoints.join(", ")],
      ["kind", kind(m)],
      ["base", m.base ? link(`#/models/${enc(m.base)}`, m.base) : null],
      ["labels", m.labels.length ? m.labels.join(", ") : null],
      ["served as", m.serving ? `${m.serving.precision} on ${m.serving.device}: ${m.serving.reason}` : m.precision],
      ["created", time(m.created_at)],
    ]),
    h("h2", {}, "Lineage"),
    m.job
      ? facts([
          ["job", link(`#/jobs/${enc(m.job.job_id)}`, m.job.job_id)],
          ["trained from", m.job.base_model],
          ["training data sha256", h("code", {}, m.job.dataset_sha256 || "")],
          ["method", job ? job.training_method : null],
          ["hyperparameters", job ? JSON.stringify(job.spec?.hyperparameters || job.hyperparameters) : null],
          ["training file", job ? job.training_file : null],
        ])
      : h("p", { class: "muted" }, "Not made by a job (imported or trained by hand)."),
    h("h2", {}, "Metrics"),
    metricsTable(m),
    h("h2", {}, "Export"),
    exportTable(m.export),
  );
}

function metricsTable(m) {
  const names = Object.keys(m.metrics);
  if (!names.length) return h("p", { class: "muted" }, "No validation metrics (not fine-tuned).");
  return table(
    [
      ["metric", (k) => k],
      ["this model", (k) => num(m.metrics[k])],
      ["base zero-shot", (k) => (k in m.baseline ? num(m.baseline[k]) : "")],
      ["gain", (k) => (k in m.baseline ? num(m.metrics[k] - m.baseline[k]) : "")],
    ],
    names,
    { id: "model-metrics" },
  );
}

// The export's parity report: each ONNX graph against PyTorch on the same inputs.
function exportTable(parity) {
  if (!parity) return h("p", { class: "muted" }, "No export report (a head rides on its base's graphs).");
  const columns = [
    ["max_abs_diff", "max |diff|"], ["mean_cosine", "mean cosine"], ["min_cosine", "min cosine"],
    ["validation_metric", "validation metric"], ["fill_mask_top1", "fill-mask top-1 agreement"],
  ].filter(([key]) => parity[key] && Object.keys(parity[key]).length);
  const precisions = [...new Set(columns.flatMap(([key]) => Object.keys(parity[key])))];
  return h(
    "div", {},
    h("p", { class: "muted" }, `Each graph against PyTorch on ${parity.samples} inputs.`),
    table(
      [["graph", (p) => p], ...columns.map(([key, name]) => [name, (p) => (p in parity[key] ? num(parity[key][p]) : "")])],
      precisions,
      { id: "export-report" },
    ),
  );
}
