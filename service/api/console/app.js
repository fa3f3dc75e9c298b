// The console's router: #/jobs, #/jobs/<id>, #/models, #/models/<id>, #/playground, #/files.
import { api, apiKey } from "./api.js";
import { filesPage } from "./files.js";
import { jobPage } from "./job.js";
import { jobsPage } from "./jobs.js";
import { modelPage, modelsPage } from "./models.js";
import { playgroundPage } from "./playground.js";
import { errorBox, replace } from "./ui.js";

const main = document.getElementById("main");
let shown = 0; // which render is current: a page's timers stop once another is shown

function route() {
  const [path, query] = (location.hash.replace(/^#/, "") || "/jobs").split("?");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  const params = new URLSearchParams(query || "");
  // each page: (alive) => a promise of its element; it may keep updating it while alive()
  const pages = {
    jobs: (alive) => (parts[1] ? jobPage(parts[1], alive) : jobsPage(alive)),
    models: () => (parts[1] ? modelPage(parts.slice(1).join("/")) : modelsPage()),
    playground: () => playgroundPage(params.get("model")),
    files: () => filesPage(),
  };
  const page = pages[parts[0]] || pages.jobs;
  for (const a of document.querySelectorAll("nav a")) {
    a.classList.toggle("active", a.dataset.nav === (pages[parts[0]] ? parts[0] : "jobs"));
  }
  const me = ++shown;
  const alive = () => me === shown;
  replace(main, "Loading…");
  Promise.resolve()
    .then(() => page(alive))
    .then((el) => alive() && replace(main, el))
    .catch((err) => alive() && replace(main, errorBox(err)));
}

async function checkKey() {
  const state = document.getElementById("key-state");
  try {
    await api("/v1/models");
    state.textContent = apiKey.get() ? "key accepted" : "no key needed";
    state.className = "ok";
  } catch (err) {
    state.textContent = err.message;
    state.className = "bad";
  }
}

document.getElementById("key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const input = document.getElementById("api-key");
  apiKey.set(input.value.trim());
  input.value = "";
  checkKey();
  route();
});
document.getElementById("forget-key").addEventListener("click", () => {
  apiKey.set("");
  checkKey();
  route();
});
window.addEventListener("hashchange", route);
checkKey();
route();
