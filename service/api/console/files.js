// Files: upload (with what validation found: the lines at fault), list, delete.
import { api, enc, listAll } from "./api.js";
import { errorBox, h, replace, table, time } from "./ui.js";

export async function filesPage() {
  const list = h("div", { id: "file-list" });
  const status = h("div", { id: "upload-status", "aria-live": "polite" });
  const refresh = async () => {
    const files = await listAll("/v1/files");
    replace(list, files.length ? fileTable(files, refresh, status) : h("p", { class: "muted" }, "No files yet."));
  };
  const form = h(
    "form", { id: "upload", class: "card" },
    h("label", { class: "field" }, h("span", {}, "file"), h("input", { type: "file", name: "file", required: true })),
    h("label", { class: "field" }, h("span", {}, "purpose"),
      h("select", { name: "purpose" }, h("option", { value: "fine-tune" }, "fine-tune (JSON Lines or SQuAD JSON)"),
        h("option", { value: "pretrain" }, "pretrain (text)"))),
    h("button", { type: "submit" }, "Upload"),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    replace(status, "Uploading and checking…");
    try {
      const f = await api("/v1/files", { method: "POST", form: new FormData(form) });
      const labels = f.labels ? `; labels: ${f.labels.join(", ")}` : "";
      form.reset();
      await refresh(); // the list holds the file by the time the page says it was accepted
      replace(status, h("div", { class: "ok" }, `${f.filename} accepted as ${f.id}: ${f.format}, ${f.rows} rows${labels}`));
    } catch (err) {
      replace(status, errorBox(err));
    }
  });
  await refresh();
  return h("section", {}, h("h1", {}, "Files"), form, status, list);
}

function fileTable(files, refresh, status) {
  const remove = (f) => async () => {
    if (!confirm(`Delete ${f.filename} (${f.id})?`)) return;
    try {
      await api(`/v1/files/${enc(f.id)}`, { method: "DELETE" });
      await refresh();
    } catch (err) {
      replace(status, errorBox(err));
    }
  };
  return table(
    [
      ["file", (f) => f.id],
      ["name", (f) => f.filename],
      ["purpose", (f) => f.purpose],
      ["format", (f) => f.format],
      ["rows", (f) => String(f.rows)],
      ["labels", (f) => (f.labels || []).join(", ")],
      ["bytes", (f) => String(f.bytes)],
      ["created", (f) => time(f.created_at)],
      ["", (f) => h("button", { class: "danger", onclick: remove(f), "data-file": f.id }, "Delete")],
    ],
    files,
    { class: "files" },
  );
}
