"""The web console (/console) in a real browser: Playwright driving Debian's Chromium against
the service as `make run` deploys it (the same Serve application, under a route prefix, with
API keys on), over real HTTP, with real jobs on the session's Ray.

One tenant uploads a file, starts a job, watches its loss chart gain points while it trains,
opens the model, classifies in the playground and cancels a second job; another tenant's key
sees none of it. Every page is saved as a screenshot (TUNESERVE_SCREENSHOTS, default
test-artifacts/console/).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path

import httpx
import pytest
from conftest import app_on_session
from testdata import classification_file

pytestmark = pytest.mark.slow
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ROOT = Path(__file__).resolve().parents[2]
SHOTS = Path(os.environ.get("TUNESERVE_SCREENSHOTS", ROOT / "test-artifacts" / "console"))
ADMIN = "console-admin-key-0123456789"
# a label a hostile tenant might train: the console must show it as text, never run it
HOSTILE = '<img src=x onerror="window.__pwned=1">'
# long enough to watch: 400 rows at 2 a batch, a point every 10 steps
WATCHABLE = {"batch_size": 2, "learning_rate_multiplier": 20, "warmup_ratio": 0.0,
             "log_every_steps": 10, "early_stopping_patience": None, "cv_folds": 0}  # fmt: skip
JOB_TIMEOUT_MS = 300_000


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        missing = "no Chromium: install Debian's `chromium` package (.ci/run does)"
        if os.environ.get("CI"):  # CI installs it: a skip there would hide a broken console
            pytest.fail(missing)
        pytest.skip(missing)
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (dev extra)")
    with sync_api.sync_playwright() as p:
        # as root a sandbox cannot start; the pages are our own, served on loopback
        browser = p.chromium.launch(executable_path=CHROMIUM, chromium_sandbox=False)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def world(ray_session, service_url, store, tmp_path_factory):
    home = tmp_path_factory.mktemp("console")
    shutil.copytree(store / "models" / "base", home / "models" / "base")
    with app_on_session(
        service_url,
        "ui",
        home=home,
        admin_key=ADMIN,
        model_replica_cpus=0.25,
        jobs_poll_s=0.5,
        job_cpus_per_worker=1.0,
    ) as url:
        admin = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {ADMIN}"})
        keys = {
            t: admin.post("/v1/admin/keys", json={"tenant": t}).json()["key"]
            for t in ("acme", "globex")
        }
        yield {"url": url, "keys": keys, "data": tmp_path_factory.mktemp("console-data")}


def _page(browser, world, tenant: str | None):
    """A fresh tab (its own session storage) on the console, with the tenant's key entered."""
    page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("dialog", lambda dialog: dialog.accept())
    page.errors = errors  # type: ignore[attr-defined]
    page.goto(f"{world['url']}/console")  # the bare path redirects to the folder
    assert page.url.endswith("/console/")
    if tenant is not None:
        page.fill("#api-key", world["keys"][tenant])
        page.click("#key-form button[type=submit]")
        page.wait_for_selector("#key-state.ok")
    return page


def _shot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def _points(page) -> int:
    return int(page.get_attribute("#loss-chart", "data-points") or 0)


def _start_job(page, file_id: str, hyperparameters: dict, epochs: int) -> str:
    page.goto(page.url.split("#")[0] + "#/jobs")
    form = page.locator("#new-job")
    form.locator("select[name=training_file]").select_option(file_id)
    form.locator("select[name=training_method]").select_option("full")
    form.locator("input[name=n_epochs]").fill(str(epochs))
    form.locator("textarea[name=hyperparameters]").fill(json.dumps(hyperparameters))
    form.locator("button[type=submit]").click()
    page.wait_for_url(re.compile(r"#/jobs/ftjob-[0-9a-f]{24}$"))
    return page.url.rsplit("/", 1)[1]


def test_the_console_is_our_own_files_under_a_strict_policy(world):
    url = world["url"]
    r = httpx.get(f"{url}/console")
    assert r.status_code == 308 and r.headers["location"] == "console/"
    index = httpx.get(f"{url}/console/")
    assert index.status_code == 200 and "text/html" in index.headers["content-type"]
    policy = index.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "connect-src 'self'" in policy
    assert index.headers["x-content-type-options"] == "nosniff"
    static = ROOT / "service" / "api" / "console"
    for f in static.iterdir():  # nothing is fetched from anywhere else
        text = f.read_text().replace("http://www.w3.org/2000/svg", "")  # a name, not a fetch
        assert not re.search(r"(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}/", text), f.name
        assert httpx.get(f"{url}/console/{f.name}").status_code == 200
    assert httpx.get(f"{url}/console/%2e%2e/%2e%2e/pyproject.toml").status_code == 404
    # the API behind it still wants a key
    assert httpx.get(f"{url}/v1/models").status_code == 401


def test_upload_train_watch_open_try_and_cancel(browser, world):
    page = _page(browser, world, "acme")

    # Files: a file that fails validation is refused naming its line; a good one is accepted
    bad = world["data"] / "broken.jsonl"
    bad.write_text('{"text": "fine", "label": "a"}\n{"text": "no label"}\n')
    page.click("nav >> text=Files")
    page.set_input_files("#upload input[type=file]", str(bad))
    page.click("#upload button[type=submit]")
    page.wait_for_selector("#upload-status .error")
    assert "line 2" in page.text_content("#upload-status .error")
    _shot(page, "files-refused")
    rows = [json.loads(line) for line in classification_file(world["data"] / "r.jsonl", rows=400)
            .read_text().splitlines()]  # fmt: skip
    good = world["data"] / "reviews.jsonl"
    good.write_text("".join(json.dumps({**r, "label": r["label"] if r["label"] == "positive"
                                        else HOSTILE}) + "\n" for r in rows))  # fmt: skip
    page.set_input_files("#upload input[type=file]", str(good))
    page.click("#upload button[type=submit]")
    page.wait_for_selector("#upload-status .ok")
    status = page.text_content("#upload-status")
    assert "400 rows" in status and HOSTILE in status, status
    file_id = re.search(r"file-[0-9a-f]{24}", status).group(0)
    assert page.locator(f"#file-list button[data-file='{file_id}']").count() == 1
    _shot(page, "files")
    # another file, deleted from the list (the confirmation is accepted: _page)
    spare = classification_file(world["data"] / "spare.jsonl", rows=20)
    page.set_input_files("#upload input[type=file]", str(spare))
    page.click("#upload button[type=submit]")
    page.wait_for_selector("#upload-status .ok >> text=spare.jsonl")
    spare_id = re.search(r"file-[0-9a-f]{24}", page.text_content("#upload-status")).group(0)
    page.click(f"#file-list button[data-file='{spare_id}']")
    page.wait_for_selector(f"#file-list button[data-file='{spare_id}']", state="detached")
    acme = httpx.Client(base_url=world["url"],
                        headers={"Authorization": f"Bearer {world['keys']['acme']}"})  # fmt: skip
    assert acme.get(f"/v1/files/{spare_id}").status_code == 404

    # Jobs: a job the API refuses shows why, on the form
    page.goto(page.url.split("#")[0] + "#/jobs")
    page.locator("#new-job select[name=training_file]").select_option(file_id)
    page.locator("#new-job input[name=n_epochs]").fill("-1")
    page.locator("#new-job button[type=submit]").click()
    page.wait_for_selector("#new-job .form-status .error")
    assert "n_epochs" in page.text_content("#new-job .form-status .error")
    assert "#/jobs/" not in page.url

    # start one, and watch its loss chart gain points while it runs
    job_id = _start_job(page, file_id, WATCHABLE, epochs=2)
    page.wait_for_function("() => +document.querySelector('#loss-chart')?.dataset.points > 0",
                           timeout=JOB_TIMEOUT_MS)  # fmt: skip
    first = _points(page)
    assert page.get_attribute(".job h1 .badge", "data-status") == "running"
    page.wait_for_function(f"() => +document.querySelector('#loss-chart').dataset.points > {first}",
                           timeout=JOB_TIMEOUT_MS)  # fmt: skip
    assert _points(page) > first
    # the base's zero-shot score, the line each evaluation must clear, is drawn while it trains
    assert int(page.get_attribute("#validation-chart", "data-references")) >= 1
    _shot(page, "job-running")
    page.wait_for_selector(".job h1 .badge[data-status=succeeded]", timeout=JOB_TIMEOUT_MS)
    page.wait_for_selector("#report")  # what fine-tuning bought, beside the base zero-shot
    assert "base zero-shot" in page.text_content("#report")
    assert int(page.get_attribute("#validation-chart", "data-points")) > 0
    assert page.locator("#cancel-job").count() == 0
    saved = page.locator("h2:text-is('Checkpoints') + div tbody tr")
    assert saved.count() >= 1 and "ckpt-step-" in saved.first.text_content()
    _shot(page, "job")

    # Models: the job's model, its lineage and export report
    page.click(".job dl.facts >> a[href^='#/models/ft']")
    page.wait_for_selector(".model h1")
    model = page.text_content(".model h1")
    assert model.startswith("ft:base:")
    text = page.text_content(".model")
    assert job_id in text and "training data sha256" in text and "full" in text
    assert page.locator("#export-report tbody tr").count() >= 2  # fp32, int8 (and fp16)
    _shot(page, "model")
    page.click("nav >> text=Models")
    page.wait_for_selector("table.models")
    # model, task, serves, precision served, kind, base, created
    rows = [
        r.locator("td").all_text_contents() for r in page.locator("table.models tbody tr").all()
    ]
    listed = {r[0]: r for r in rows}
    row = listed[model]
    assert row[1:3] == ["text-classification", "text-classification"], row
    assert re.fullmatch(r"(int8|fp32) on cpu", row[3]) and row[4:6] == ["full", "base"], row
    assert listed["base"][4] == "encoder (zero-shot)", listed["base"]
    _shot(page, "models")

    # Playground: the model classifies; a hostile label comes back as text and runs nothing
    page.goto(page.url.split("#")[0] + f"#/playground?model={model}")
    page.fill("#pg-texts", "wonderful film, loved it\nawful, boring mess")
    page.click("#pg-form button[type=submit]")
    page.wait_for_selector("#pg-result .result >> nth=1")
    labels = page.locator("#pg-result .label").all_text_contents()
    assert len(labels) == 2 and set(labels) <= {"positive", HOSTILE}, labels
    assert HOSTILE in page.text_content("#pg-result")
    assert page.evaluate("() => window.__pwned") is None
    assert page.locator("#pg-result img").count() == 0
    _shot(page, "playground")
    # and base answers zero-shot with the labels given
    page.select_option("#pg-model", "base")
    page.fill("#pg-texts", "the service was slow")
    page.fill("#pg-labels", "complaint, praise")
    page.click("#pg-form button[type=submit]")
    page.wait_for_selector("#pg-result .result")
    assert page.text_content("#pg-result .label") in ("complaint", "praise")
    # and QA (sentence selection): a sentence of the context, with its offsets
    page.select_option("#pg-task", "extractive-qa")
    sentences = ["The tower stands in Paris.", "Refunds take five days."]
    page.fill("#pg-context", " ".join(sentences))
    page.fill("#pg-question", "Where is the tower?")
    page.click("#pg-form button[type=submit]")
    page.wait_for_selector("#pg-result .result")
    assert page.text_content("#pg-result .label") in sentences

    # a second job, cancelled from its page while it trains
    second = _start_job(page, file_id, WATCHABLE, epochs=20)
    page.wait_for_selector(".job h1 .badge[data-status=running]", timeout=JOB_TIMEOUT_MS)
    page.click("#cancel-job")
    page.wait_for_selector(".job h1 .badge[data-status=cancelled]", timeout=60_000)
    assert acme.get(f"/v1/fine_tuning/jobs/{second}").json()["status"] == "cancelled"
    page.click("nav >> text=Jobs")
    page.wait_for_selector("table.jobs")
    assert {job_id, second} <= set(
        page.locator("table.jobs tbody tr td:first-child").all_text_contents()
    )
    _shot(page, "jobs")
    assert page.errors == []  # type: ignore[attr-defined]


def test_another_tenants_key_sees_none_of_it(browser, world):
    acme = httpx.Client(base_url=world["url"],
                        headers={"Authorization": f"Bearer {world['keys']['acme']}"})  # fmt: skip
    if not acme.get("/v1/files").json()["data"]:  # run alone: give acme something to hide
        path = classification_file(world["data"] / "alone.jsonl", rows=20)
        with path.open("rb") as f:
            acme.post("/v1/files", files={"file": (path.name, f)}, data={"purpose": "fine-tune"})
    secrets = [f["id"] for f in acme.get("/v1/files").json()["data"]]
    secrets += [j["id"] for j in acme.get("/v1/fine_tuning/jobs").json()["data"]]
    secrets += [m["id"] for m in acme.get("/v1/models").json()["data"] if m["id"] != "base"]

    page = _page(browser, world, "globex")
    for nav, ready in (("Jobs", "#job-list"), ("Models", "table.models"), ("Files", "#file-list")):
        page.click(f"nav >> text={nav}")
        page.wait_for_selector(ready)
        time.sleep(0.3)
        seen = page.text_content("main")
        assert not [s for s in secrets if s in seen], seen
        _shot(page, f"other-tenant-{nav.lower()}")
    job = next((s for s in secrets if s.startswith("ftjob-")), None)
    if job:  # asked for by its id, it does not exist for this key
        page.goto(page.url.split("#")[0] + f"#/jobs/{job}")
        page.wait_for_selector("main .error")
        assert f"no fine-tuning job {job!r}" in page.text_content("main .error")

    # a tab without a key is told to enter one, and shown nothing
    keyless = _page(browser, world, None)
    keyless.wait_for_selector("main .error")
    assert "API key" in keyless.text_content("main .error")
    assert keyless.evaluate("() => sessionStorage.length") == 0
    assert page.evaluate("() => Object.keys(sessionStorage)") == ["tuneserve.apiKey"]
