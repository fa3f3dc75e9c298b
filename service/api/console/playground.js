// Playground: pick a model, ask it what its endpoints answer, see the answers with scores.
import { api } from "./api.js";
import { errorBox, h, replace, score, table } from "./ui.js";

const TRIED = ["text-classification", "extractive-qa", "fill-mask"]; // what a form here asks

export async function playgroundPage(chosen) {
  const models = (await api("/v1/models")).data.filter((m) => m.endpoints.some((e) => TRIED.includes(e)));
  const picker = h(
    "select", { id: "pg-model" },
    models.map((m) => h("option", { value: m.id, selected: m.id === chosen }, `${m.id} (${m.task})`)),
  );
  const task = h("select", { id: "pg-task" });
  const form = h("div");
  const out = h("div", { id: "pg-result", "aria-live": "polite" });
  const model = () => models.find((m) => m.id === picker.value);
  const show = () => {
    replace(out);
    replace(form, model() ? formFor(model(), task.value, out) : h("p", { class: "muted" }, "No model to try."));
  };
  picker.addEventListener("change", () => {
    // a base encoder answers zero-shot classification and QA (sentence selection)
    const endpoints = model() ? model().endpoints.filter((e) => TRIED.includes(e)) : [];
    replace(task, endpoints.map((e) => h("option", { value: e }, e)));
    show();
  });
  task.addEventListener("change", show);
  picker.dispatchEvent(new Event("change"));
  return h(
    "section", {}, h("h1", {}, "Playground"),
    h("label", { class: "field" }, h("span", {}, "model"), picker),
    h("label", { class: "field" }, h("span", {}, "task"), task), form, out,
  );
}

function formFor(model, endpoint, out) {
  const build = { "text-classification": classify, "extractive-qa": qa, "fill-mask": fillMask }[endpoint];
  const [controls, request, render] = build(model);
  const form = h("form", { id: "pg-form", class: "card" }, controls, h("button", { type: "submit" }, "Run"));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    replace(out, "…");
    try {
      const [path, body] = request();
      replace(out, render(await api(path, { method: "POST", json: body }), body));
    } catch (err) {
      replace(out, errorBox(err));
    }
  });
  return form;
}

const lines = (text) => text.split("\n").map((t) => t.trim()).filter(Boolean);

function classify(model) {
  const texts = h("textarea", { id: "pg-texts", rows: 4, placeholder: "one text a line" });
  const labels = h("input", { id: "pg-labels", placeholder: "positive, negative", size: 40 });
  const controls = [h("label", { class: "field" }, h("span", {}, "texts"), texts)];
  if (model.zero_shot) controls.push(h("label", { class: "field" }, h("span", {}, "labels (zero-shot)"), labels));
  const request = () => {
    const body = { model: model.id, inputs: lines(texts.value) };
    if (model.zero_shot) body.labels = labels.value.split(",").map((l) => l.trim()).filter(Boolean);
    return ["/v1/classify", body];
  };
  const render = (answer, body) =>
    answer.results.map((r, i) =>
      h("div", { class: "card result" },
        h("p", {}, h("q", {}, body.inputs[i])),
        h("p", {}, "→ ", h("strong", { class: "label" }, r.label)),
        table([["label", ([l]) => l], ["score", ([, s]) => score(s)]],
          Object.entries(r.scores).sort((a, b) => b[1] - a[1]))));
  return [controls, request, render];
}

function qa(model) {
  const context = h("textarea", { id: "pg-context", rows: 5, placeholder: "the text to find the answer in" });
  const question = h("input", { id: "pg-question", size: 60 });
  const controls = [
    h("label", { class: "field" }, h("span", {}, "context"), context),
    h("label", { class: "field" }, h("span", {}, "question"), question),
  ];
  const request = () => ["/v1/qa", { model: model.id, question: question.value, context: context.value }];
  const render = (answer) =>
    answer.results.map((r) =>
      h("div", { class: "card result" }, h("p", {}, "→ ", h("strong", { class: "label" }, r.answer || "(no answer)")),
        h("p", {}, `characters ${r.start}-${r.end}, score `, score(r.score))));
  return [controls, request, render];
}

function fillMask(model) {
  const texts = h("textarea", { id: "pg-texts", rows: 3, placeholder: "The whale swam in the [MASK]." });
  const request = () => ["/v1/fill-mask", { model: model.id, inputs: lines(texts.value) }];
  const render = (answer) =>
    answer.results.map((r) =>
      h("div", { class: "card result" }, r.masks.map((tokens) =>
        table([["token", (t) => t.token_str], ["score", (t) => score(t.score)], ["filled", (t) => t.sequence]], tokens))));
  return [[h("label", { class: "field" }, h("span", {}, "texts with [MASK]"), texts)], request, render];
}
