// Jobs: the list, refreshed while any job is unfinished, and the form that starts one.
import { api, listAll } from "./api.js";
import { badge, duration, errorBox, every, h, link, replace, table, time } from "./ui.js";

export const TERMINAL = ["succeeded", "failed", "cancelled"];

export function jobDuration(job) {
  const end = job.finished_at || Date.now() / 1000;
  return duration(end - job.created_at);
}

export async function jobsPage(alive) {
  const list = h("div", { id: "job-list" });
  const page = h("section", {}, h("h1", {}, "Fine-tuning jobs"), await newJobForm(), list);
  const refresh = async () => {
    const jobs = await listAll("/v1/fine_tuning/jobs", { maxPages: 5 });
    replace(list, jobs.length ? jobTable(jobs) : h("p", { class: "muted" }, "No jobs yet."));
    return jobs.some((j) => !TERMINAL.includes(j.status));
  };
  let running = await refresh();
  every(3000, () => alive() && running, async () => {
    running = await refresh();
  });
  return page;
}

function jobTable(jobs) {
  return table(
    [
      ["job", (j) => link(`#/jobs/${encodeURIComponent(j.id)}`, j.id)],
      ["status", (j) => badge(j.status)],
      ["task", (j) => j.task],
      ["method", (j) => j.training_method || "—"],
      ["base", (j) => j.model],
      ["model", (j) => (j.fine_tuned_model ? link(`#/models/${encodeURIComponent(j.fine_tuned_model)}`, j.fine_tuned_model) : "")],
      ["created", (j) => time(j.created_at)],
      ["duration", (j) => jobDuration(j)],
    ],
    jobs,
    { class: "jobs" },
  );
}

function select(name, options, attrs = {}) {
  return h("select", { name, ...attrs }, options.map(([value, text]) => h("option", { value }, text)));
}

function field(text, control) {
  return h("label", { class: "field" }, h("span", {}, text), control);
}

// The form a job is started from: the same fields as POST /v1/fine_tuning/jobs.
async function newJobForm() {
  const [files, models] = await Promise.all([listAll("/v1/files"), api("/v1/models")]);
  const fileOptions = files.map((f) => [f.id, `${f.filename} (${f.rows} rows, ${f.purpose})`]);
  const encoders = models.data.filter((m) => m.endpoints.includes("embeddings"));
  const status = h("div", { class: "form-status" });
  const form = h(
    "form",
    { id: "new-job", class: "card" },
    field("training file", select("training_file", fileOptions, { required: true })),
    field("validation file", select("validation_file", [["", "none: held out from training"], ...fileOptions])),
    field("start from", select("model", encoders.map((m) => [m.id, m.id]))),
    field("task", select("task", [["", "from the file"], ["text-classification", "text-classification"], ["extractive-qa", "extractive-qa"], ["masked-lm", "masked-lm (pretrain)"]])),
    field("method", select("training_method", [["auto", "auto"], ["head", "head (seconds, kilobytes)"], ["full", "full (every weight)"]])),
    field("epochs", h("input", { name: "n_epochs", placeholder: "auto", size: 6 })),
    field("suffix", h("input", { name: "suffix", placeholder: "optional", pattern: "[A-Za-z0-9_-]{1,40}" })),
    field("more hyperparameters (JSON)", h("textarea", { name: "hyperparameters", rows: 2, placeholder: '{"learning_rate_multiplier": 2}' })),
    h("button", { type: "submit" }, "Start job"),
    status,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      const job = await api("/v1/fine_tuning/jobs", { method: "POST", json: jobRequest(new FormData(form)) });
      location.hash = `#/jobs/${encodeURIComponent(job.id)}`;
    } catch (err) {
      replace(status, errorBox(err));
    }
  });
  const empty = files.length === 0 ? h("p", { class: "muted" }, "Upload a training file first (Files).") : null;
  return h("details", { class: "new-job", open: files.length > 0 }, h("summary", {}, "Start a job"), empty, form);
}

function jobRequest(data) {
  const extra = (data.get("hyperparameters") || "").trim();
  let hyperparameters = {};
  if (extra) {
    try {
      hyperparameters = JSON.parse(extra);
    } catch (err) {
      throw Object.assign(new Error(`more hyperparameters: not JSON (${err.message})`), { status: 0 });
    }
  }
  const epochs = (data.get("n_epochs") || "").trim();
  if (epochs) hyperparameters.n_epochs = epochs === "auto" ? "auto" : Number(epochs);
  const body = {
    model: data.get("model"),
    training_file: data.get("training_file"),
    training_method: data.get("training_method"),
    hyperparameters,
  };
  for (const name of ["validation_file", "task", "suffix"]) {
    if (data.get(name)) body[name] = data.get(name);
  }
  return body;
}
