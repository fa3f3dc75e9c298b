// A job's page: status, what fine-tuning bought, the loss and validation curves (redrawn as
// events arrive), checkpoints, the timeline of events, and a cancel button.
import { api, enc, listAll } from "./api.js";
import { lineChart } from "./chart.js";
import { TERMINAL, jobDuration } from "./jobs.js";
import { badge, errorBox, every, facts, h, link, num, replace, table, time } from "./ui.js";

// an evaluation event's data: these are facts about the run, the rest are its scores
const RUN_FACTS = ["step", "epoch", "loss", "resumed_from_step", "workers", "train_samples_per_s"];

export async function jobPage(id, alive) {
  const parts = {
    head: h("div"), report: h("div"), charts: h("div", { class: "charts" }),
    checkpoints: h("div"), events: h("div"),
  };
  const page = h(
    "section", { class: "job" }, parts.head, parts.report, parts.charts,
    h("h2", {}, "Checkpoints"), parts.checkpoints, h("h2", {}, "Events"), parts.events,
  );
  const events = new Map(); // id -> event, merged across polls
  const seq = (e) => Number(e.id.split("-").pop());
  let job = await api(`/v1/fine_tuning/jobs/${enc(id)}`);
  for (const e of await listAll(`/v1/fine_tuning/jobs/${enc(id)}/events`)) events.set(e.id, e);
  let checkpoints = [];
  // the checkpoints are read again only when events came in: one is saved at an evaluation,
  // and a job always records events after its last one (at the latest, when it ends)
  let seen = -1;
  const draw = async () => {
    if (events.size !== seen) {
      seen = events.size;
      checkpoints = await listAll(`/v1/fine_tuning/jobs/${enc(id)}/checkpoints`, { limit: 100, maxPages: 5 });
    }
    const ordered = [...events.values()].sort((a, b) => seq(a) - seq(b));
    replace(parts.head, header(job, () => cancel(id, parts.head)));
    replace(parts.report, report(job));
    replace(parts.charts, ...charts(ordered));
    replace(parts.checkpoints, checkpointTable(checkpoints));
    replace(parts.events, timeline(ordered));
  };
  await draw();
  every(1500, () => alive() && !TERMINAL.includes(job.status), async () => {
    job = await api(`/v1/fine_tuning/jobs/${enc(id)}`);
    const newest = await api(`/v1/fine_tuning/jobs/${enc(id)}/events?limit=100`);
    for (const e of newest.data) events.set(e.id, e);
    if (alive()) await draw();
  });
  return page;
}

async function cancel(id, where) {
  try {
    await api(`/v1/fine_tuning/jobs/${enc(id)}/cancel`, { method: "POST" });
  } catch (err) {
    where.append(errorBox(err));
  }
}

function header(job, onCancel) {
  const model = job.fine_tuned_model;
  return h(
    "div",
    {},
    h("h1", {}, `Job ${job.id} `, badge(job.status)),
    TERMINAL.includes(job.status) ? null : h("button", { id: "cancel-job", class: "danger", onclick: onCancel }, "Cancel job"),
    job.error ? h("div", { class: "error", role: "alert" }, `${job.error.code}: ${job.error.message}`) : null,
    facts([
      ["task", job.task],
      ["method", job.training_method],
      ["base", link(`#/models/${enc(job.model)}`, job.model)],
      ["model", model ? link(`#/models/${enc(model)}`, model) : null],
      ["training file", job.training_file],
      ["validation file", job.validation_file],
      ["hyperparameters", JSON.stringify(job.spec?.hyperparameters || job.hyperparameters)],
      ["created", time(job.created_at)],
      ["finished", time(job.finished_at)],
      ["duration", jobDuration(job)],
      ["estimated finish", job.estimated_finish ? time(job.estimated_finish) : null],
      ["attempt", job.attempt > 1 ? String(job.attempt) : null],
    ]),
  );
}

// What fine-tuning bought: the model's scores beside its base's zero-shot on the same data.
export function report(job) {
  const r = job.report;
  if (!r) return h("p", { class: "muted" }, "What fine-tuning bought shows here once the job succeeds.");
  const names = Object.keys(r.metrics).filter((k) => k in r.baseline);
  return h(
    "div", { class: "card" },
    h("h2", {}, "What fine-tuning bought"),
    table(
      [
        ["metric", (k) => k],
        ["fine-tuned", (k) => num(r.metrics[k])],
        ["base zero-shot", (k) => num(r.baseline[k])],
        ["gain", (k) => `${r.improvement[k] >= 0 ? "+" : ""}${num(r.improvement[k])}`],
      ],
      names,
      { id: "report" },
    ),
  );
}

function charts(events) {
  const loss = [];
  const validation = {};
  let zeroShot = {}; // the base's zero-shot scores on the same validation data, when known
  for (const e of events) {
    const d = e.data;
    if (d && d.zero_shot) zeroShot = d.zero_shot;
    if (e.type !== "metrics" || !d) continue;
    if ("total_steps" in d && typeof d.train_loss === "number") loss.push([d.step, d.train_loss]);
    else if (!("total_steps" in d)) {
      for (const [k, v] of Object.entries(d)) {
        if (!RUN_FACTS.includes(k) && typeof v === "number") (validation[k] ||= []).push([d.step, v]);
      }
    }
  }
  const lossChart = lineChart("training loss", [{ name: "loss", points: loss }]);
  lossChart.id = "loss-chart";
  const series = Object.entries(validation).map(([name, points]) => ({ name, points }));
  // each score's zero-shot value, dashed: where the line is below it, training has not paid yet
  const references = Object.entries(zeroShot)
    .filter(([name, value]) => typeof value === "number" && (name in validation || !series.length))
    .map(([name, value]) => ({ name, value, label: `base zero-shot ${name}` }));
  const validationChart = lineChart("validation", series, { references, note: "dashed: base zero-shot" });
  validationChart.id = "validation-chart";
  return [lossChart, validationChart];
}

function checkpointTable(checkpoints) {
  if (!checkpoints.length) return h("p", { class: "muted" }, "None yet.");
  return table(
    [
      ["step", (c) => String(c.step_number)],
      ["checkpoint", (c) => c.fine_tuned_model_checkpoint],
      ["metrics", (c) => Object.entries(c.metrics).filter(([k, v]) => !RUN_FACTS.includes(k) && v !== null).map(([k, v]) => `${k} ${num(v)}`).join(", ")],
      ["at", (c) => time(c.created_at)],
    ],
    checkpoints,
  );
}

function timeline(events) {
  return h(
    "ol", { class: "timeline", reversed: true },
    [...events].slice(-300).reverse().map((e) =>
      h("li", { class: `level-${e.level}` }, h("time", {}, time(e.created_at)), " ", e.message)),
  );
}
