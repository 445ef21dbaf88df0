"""The web page (/ui/) in a real browser: Debian's Chromium driven by Playwright, against gunicorn, an RQ
worker process, Redis, the S3 endpoint and the scripted LLM endpoint.

Screenshots of the main pages go to $UI_SCREENSHOTS (default .run/ui-screenshots/).
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import os
import re
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from redis import Redis
from rouge_score import rouge_scorer, tokenize
from rq import Queue, Worker

from jobs.method.vocabulary import RULES
from jobs.settings import Profile, Settings
from jobs.tools.local_stack import Process, gunicorn, rq_worker
from tests.conftest import DATA, ROOT, wait_until
from tests.fake_llm import FakeLLM, Script

pytestmark = pytest.mark.browser  # drives the page in Chromium: left out of scripts/test.sh --fast

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"  # Debian's (scripts/setup.sh installs it)
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SHOTS = Path(os.environ.get("UI_SCREENSHOTS", ROOT / ".run" / "ui-screenshots"))
# Model output that would run script if it were ever put in the page as HTML.
HOSTILE = (
    "Explain <script>alert('xss')</script> and <img src=x onerror=alert(1)> to a beginner in plain words"
)
NEAR = "Explain <script>alert('xss')</script> and <img src=x onerror=alert(1)> to a beginner in simple words"
# A near copy with two words moved: their common words are not all in one common subsequence.
POEM = "Write a short poem about the sea for a child at bedtime tonight"
MOVED = "Write a short poem about the sea for a child tonight at bedtime"
TIMEOUT_MS = 60_000


@dataclass
class Stack:
    url: str
    key: str
    env: dict[str, str]
    tmp: Path
    llm: FakeLLM
    http: httpx.Client
    worker: Process | None = None
    jobs: dict[str, str] = field(default_factory=dict)

    def start_worker(self) -> None:
        if self.worker is None:
            self.worker = rq_worker(self.env, self.tmp / "worker.log")

    def stop_worker(self) -> None:
        if self.worker is not None:
            self.worker.stop()
            self.worker = None

    def wait(self, job_id: str, timeout: float = 120) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.http.get(f"/v1/jobs/{job_id}").json()
            if job["state"] in ("succeeded", "failed", "canceled"):
                return job
            time.sleep(0.2)
        raise TimeoutError(job_id)

    def all_decisions(self, job_id: str, **filters: str) -> list[dict]:
        found, cursor = [], None
        while True:
            params = {**filters, "limit": 500, **({"cursor": cursor} if cursor else {})}
            page = self.http.get(f"/v1/jobs/{job_id}/decisions", params=params).json()
            found += page["items"]
            cursor = page["next_cursor"]
            if not cursor:
                return found


@pytest.fixture(scope="module")
def stack(redis_url, s3_endpoint, tmp_path_factory) -> Iterator[Stack]:
    from redis import Redis

    from jobs.blobs.artifacts import Artifacts
    from jobs.store import api_keys

    tmp = tmp_path_factory.mktemp("ui")
    Redis.from_url(redis_url).flushdb()
    with FakeLLM(Script()) as llm:
        settings = Settings(
            redis_url=redis_url,
            s3_endpoint_url=s3_endpoint,
            s3_public_endpoint_url=s3_endpoint,
            s3_bucket=f"ui-{uuid.uuid4().hex[:12]}",
            profiles={
                "fake": Profile.of(
                    "fake",
                    llm.base_url,
                    "fake",
                    timeout=5,
                    max_attempts=4,
                    max_wait=0.2,
                    price_per_million_tokens={"prompt": 1.5, "completion": 4.0},
                ),
                "batch": Profile.of("batch", llm.base_url, "fake", timeout=5, max_attempts=4, mode="batch"),
            },
            batch_poll_seconds=0.2,
            default_profile="fake",
            log_level="INFO",
            webhook_allowed_hosts=("127.0.0.1",),
            webhook_timeout_seconds=30.0,  # a test holds an attempt open while the page looks
        )
        Artifacts(settings).ensure_bucket()
        key = api_keys.create(Redis.from_url(redis_url), "ui", "browser tests")[1]
        env = {
            **settings.to_env(),
            "AWS_ACCESS_KEY_ID": os.environ["AWS_ACCESS_KEY_ID"],
            "AWS_SECRET_ACCESS_KEY": os.environ["AWS_SECRET_ACCESS_KEY"],
        }
        # threads: a browser opens sockets ahead of need and may leave them idle; each would hold a sync
        # worker until gunicorn's timeout, and two of them stall the page for a minute
        api, url = gunicorn(env, tmp / "gunicorn.log")  # threads from service/gunicorn_conf.py
        http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30)
        s = Stack(url, key, env, tmp, llm, http)
        try:
            yield s
        finally:
            s.stop_worker()
            http.close()
            api.stop()


def paper_seed_set(stack: Stack) -> str:
    return stack.http.post(
        "/v1/seed-sets",
        content=(DATA / "seed_tasks.jsonl").read_bytes(),
        headers={"Content-Type": "application/x-ndjson"},
    ).json()["id"]


@pytest.fixture(scope="module")
def job(stack: Stack) -> str:
    """A finished job whose first model response plants a hostile instruction and a near copy of it."""
    stack.llm.script.plant = [HOSTILE, NEAR, POEM, MOVED]
    stack.llm.script.delay = 0.0
    seed_set = paper_seed_set(stack)
    created = stack.http.post("/v1/jobs", json={"seed_set_id": seed_set, "num_instructions": 12, "seed": 3})
    assert created.status_code == 202, created.text
    stack.start_worker()
    done = stack.wait(created.json()["id"])
    assert done["state"] == "succeeded", done
    return done["id"]


@pytest.fixture(scope="module")
def browser() -> Iterator:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield browser
        browser.close()


@dataclass
class Watch:
    """What a page did that it should not: dialogs, CSP violations, script errors."""

    dialogs: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    requests: list[tuple[str, str | None]] = field(default_factory=list)


@pytest.fixture
def page(browser, stack):
    context = browser.new_context(viewport={"width": 1200, "height": 860}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    watch = Watch()

    def dialog(d) -> None:
        watch.dialogs.append(d.message)
        d.dismiss()

    page.on("dialog", dialog)
    page.on("pageerror", lambda e: watch.errors.append(str(e)))
    # script errors and CSP violations; a 4xx answer is logged too, but is part of some scripts' flow
    page.on(
        "console",
        lambda m: (
            m.type == "error"
            and not m.text.startswith("Failed to load resource")
            and watch.errors.append(m.text)
        ),
    )
    page.on("request", lambda r: watch.requests.append((r.url, r.headers.get("authorization"))))
    page.watch = watch
    yield page
    context.close()


def until(page, script: str, arg: object = None, timeout: float = TIMEOUT_MS / 1000) -> None:
    """Wait until the function `script` is true in the page (wait_for_function evaluates a string, which
    the page's Content-Security-Policy forbids, rightly)."""
    deadline = time.monotonic() + timeout
    while not page.evaluate(script, arg):
        if time.monotonic() > deadline:
            raise TimeoutError(script)
        time.sleep(0.05)


def sign_in(page, stack: Stack, path: str = "/ui/") -> None:
    page.goto(stack.url + path)
    page.fill("#api-key", stack.key)
    page.click("#sign-in-form button")
    page.wait_for_selector("#content:not([hidden])")


def shot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def test_sign_in_a_wrong_key_is_refused_clearly_and_the_key_never_leaves_the_header(page, stack):
    response = page.goto(stack.url + "/ui/")
    csp = response.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    page.fill("#api-key", "not-a-key")
    page.click("#sign-in-form button")
    message = page.locator("#sign-in-error")
    message.wait_for(state="visible")
    assert message.inner_text() == "This API key was not accepted: it is unknown or revoked."
    assert page.is_hidden("#content")
    assert page.evaluate("sessionStorage.length") == 0
    shot(page, "sign-in")

    page.fill("#api-key", stack.key)
    page.click("#sign-in-form button")
    page.wait_for_selector("#content:not([hidden])")
    assert page.is_hidden("#sign-in-error")
    page.reload()  # the key stays for the tab's session
    page.wait_for_selector("#content:not([hidden])")
    assert stack.key not in page.content() and stack.key not in page.url
    api_calls = [(url, auth) for url, auth in page.watch.requests if "/v1/" in url]
    assert api_calls and all(auth == f"Bearer {stack.key}" for url, auth in api_calls[1:])
    assert not any(stack.key in url for url, _ in page.watch.requests)
    page.wait_for_selector("#profile option", state="attached")  # the page has loaded all it needs
    page.click("#sign-out")
    assert page.is_visible("#sign-in") and page.evaluate("sessionStorage.length") == 0
    assert not page.watch.errors, page.watch.errors


def test_submit_a_job_and_watch_it_go_from_queued_to_succeeded_without_reloading(page, stack, tmp_path):
    stack.stop_worker()  # nothing takes the job until the page has shown it queued
    stack.llm.script.plant = []
    stack.llm.script.delay = 0.3  # slow enough to be seen running
    sign_in(page, stack)
    page.evaluate("window.notReloaded = true")
    page.click("#new-job summary")
    page.set_input_files("#seed-file", str(DATA / "seed_tasks.jsonl"))
    page.fill("#count", "8")
    page.fill("#decoding", '{"instructions": {"temperature": 0.9}}')
    page.fill("#judge", "3")
    page.click("#job-form button[type=submit]")
    row = page.locator("#jobs tbody tr").first
    until(page, "() => document.querySelector('#jobs tbody tr')?.dataset.state === 'queued'")
    job_id = row.get_attribute("data-id")
    created = stack.http.get(f"/v1/jobs/{job_id}").json()
    assert created["config"]["num_instructions"] == 8 and created["profile"] == "fake"
    decoding = created["config"]["decoding"]  # the recipe's: the form's override over the paper's
    assert decoding["instructions"]["temperature"] == 0.9 and decoding["instances"]["temperature"] == 0.0
    assert created["config"]["judge_threshold"] == 3
    assert "queued" in row.inner_text()
    shot(page, "jobs-queued")

    stack.start_worker()
    seen = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        state = row.get_attribute("data-state")
        if not seen or seen[-1] != state:
            seen.append(state)
        if state in ("succeeded", "failed"):
            break
        time.sleep(0.1)
    assert seen[0] == "queued" and "running" in seen and seen[-1] == "succeeded", seen
    assert page.evaluate("window.notReloaded") is True
    assert row.locator("progress").get_attribute("value") == "8"
    assert "8 / 8" in row.inner_text()
    finished = stack.http.get(f"/v1/jobs/{job_id}").json()
    cost = finished["cost"]
    assert cost["total"] > 0 and f"{cost['total']:.6f} USD" in row.inner_text()
    shot(page, "jobs")

    # filter by state
    page.select_option("#state-filter", "failed")
    page.wait_for_selector("#jobs-empty:not([hidden])")
    page.select_option("#state-filter", "succeeded")
    page.wait_for_selector(f"#jobs tbody tr[data-id='{job_id}']")

    # the job's page: stages all done, the chart's counts are the API's
    page.click(f"a[href='/ui/jobs/{job_id}']")
    page.wait_for_selector("#job-state")
    page.wait_for_selector("#dataset:not([hidden])")
    assert page.inner_text("#job-state") == "succeeded"
    assert page.locator("#stages li.stage-done").count() == 4
    kept = stack.http.get(
        f"/v1/jobs/{job_id}/decisions", params={"stage": "instruction", "rule": "kept", "limit": 1}
    ).json()["total"]
    assert kept == 8
    labels = page.locator("#rule-chart svg text.chart-label").all_text_contents()
    counts = page.locator("#rule-chart svg text.chart-count").all_text_contents()
    assert dict(zip(labels, counts, strict=True))["kept"] == "8"
    assert page.inner_text("#job-cost") == f"{cost['total']:.6f} USD"
    # the events feed: every event the API has, in its order, ending with the job's success
    page.wait_for_selector("#events li[data-type='state']:has-text('running -> succeeded')")
    events = stack.http.get(f"/v1/jobs/{job_id}/events", params={"limit": 1000}).json()["items"]
    assert page.locator("#events li").evaluate_all("items => items.map(i => i.dataset.type)") == [
        e["type"] for e in events
    ]
    # the quality report: Table 1 beside the paper's, and Figure 3's bars, as the API gives them
    page.wait_for_selector("#report:not([hidden])")
    report = stack.http.get(f"/v1/jobs/{job_id}/report").json()
    cells = page.locator("#table1 tbody tr").evaluate_all(
        "rows => rows.map(r => [...r.cells].map(c => c.textContent))"
    )
    assert cells[0] == ["instructions", "8", "52,445"]
    assert [c[1] for c in cells[: len(report["table1"])]] == [
        f"{r['this_dataset']:,}"
        if isinstance(r["this_dataset"], int)
        else f"{r['this_dataset']:,.3f}".rstrip("0").rstrip(".")
        for r in report["table1"]
    ]
    figure3 = page.locator("#report-figures figure").first.locator("rect")
    assert [int(b) for b in figure3.evaluate_all("bars => bars.map(b => b.dataset.count)")] == report[
        "rouge_l_to_nearest_seed"
    ]["counts"]
    assert sum(report["rouge_l_to_nearest_seed"]["counts"]) == 8
    # the LLM judge's scores, the last figure
    judge = page.locator("#report-figures figure").last
    assert "LLM judge" in judge.inner_text()
    bars = judge.locator("rect").evaluate_all("bars => bars.map(b => Number(b.dataset.count))")
    assert bars == list(report["judge_scores"]["counts"].values()) and sum(bars) > 0
    # classification_method auto's table, as the report gives it, the chosen method marked
    selection = report["classification_selection"]
    assert set(selection["methods"]) == {"knn", "text"} and selection["unavailable"]  # no log-probabilities
    rows = page.locator("#selection tbody tr").evaluate_all(
        "rows => rows.map(r => [r.dataset.method, r.className, ...[...r.cells].map(c => c.textContent)])"
    )
    assert rows[: len(selection["methods"])] == [
        [m, "chosen" if m == selection["chosen"] else "", m, f"{r['balanced_accuracy']:.3f}"]
        + [str(r[k]) for k in ("tp", "fn", "tn", "fp")]
        for m, r in selection["methods"].items()
    ]
    assert [r[0] for r in rows[len(selection["methods"]) :]] == list(selection["unavailable"])
    assert f"Classification method: {selection['chosen']}" in page.inner_text("#selection-note")
    shot(page, "job")
    assert not page.watch.errors, page.watch.errors


def test_filter_decisions_by_rule_and_page_to_the_end(page, stack, job):
    sign_in(page, stack, f"/ui/jobs/{job}/decisions")
    page.wait_for_selector("#decisions tbody tr")
    page.select_option("#f-limit", "10")
    page.wait_for_selector("#page-info:has-text('of')")
    page.select_option("#f-stage", "instance")
    page.select_option("#f-rule", "kept")
    until(page, "() => location.search.includes('rule=kept')")
    expected = [d["id"] for d in stack.all_decisions(job, stage="instance", rule="kept")]
    assert len(expected) > 10  # more than one page of 10
    shown: list[str] = []
    while True:
        until(
            page,
            "([n, total]) => document.querySelector('#page-info').textContent.startsWith(`Page ${n}:`) &&"
            " document.querySelector('#page-info').textContent.includes(`of ${total} matching`)",
            [len(shown) // 10 + 1, len(expected)],
        )
        rows = page.locator("#decisions tbody tr")
        assert set(page.locator("#decisions tbody tr td:nth-child(4)").all_inner_texts()) == {"kept"}
        shown += [rows.nth(i).get_attribute("data-id") for i in range(rows.count())]
        if len(shown) == 10:
            shot(page, "decisions")
        if page.is_disabled("#next"):
            break
        page.click("#next")
    assert shown == expected
    assert f"of {len(expected)} matching" in page.inner_text("#page-info")
    # back one page, then a text search through the API, over every page of the filter
    page.click("#prev")
    pages = (len(expected) - 1) // 10 + 1
    until(page, "n => document.querySelector('#page-info').textContent.startsWith(`Page ${n}:`)", pages - 1)
    kept = stack.all_decisions(job, stage="instance", rule="kept")
    words = [re.findall(r"[a-z0-9]+", f"{d['text']} {d['input'] or ''}".lower()) for d in kept]
    # a word some but not all kept instances have, typed in capitals and cut short: a prefix search
    counts = collections.Counter(w for ws in words for w in set(ws) if len(w) > 4)
    word = next(w for w, n in counts.most_common() if n < len(kept))
    found = [d["id"] for d, ws in zip(kept, words, strict=True) if any(w.startswith(word[:-1]) for w in ws)]
    page.fill("#f-q", word[:-1].upper())
    page.press("#f-q", "Enter")
    until(page, "q => location.search.includes(`q=${q}`)", word[:-1].upper())
    info = "n => document.querySelector('#page-info').textContent.includes(`of ${n} matching`)"
    until(page, info, len(found))
    rows = page.locator("#decisions tbody tr").evaluate_all("rows => rows.map(r => r.dataset.id)")
    assert rows == found[:10]
    assert not page.watch.errors, page.watch.errors


def test_a_running_jobs_search_reads_on_through_pages_without_a_match(page, stack, redis_url):
    """12,000 decisions still in Redis, as a running job's are: a page reads at most 5,000, so the
    page reads on by itself to the one match, near the end."""
    from redis import Redis

    from jobs.method.decisions import Decision
    from jobs.store import keyspace
    from jobs.store.decision_log import DecisionLog

    stack.stop_worker()  # the job stays queued, its log in Redis: the decisions below are its own
    created = stack.http.post("/v1/jobs", json={"seed_set_id": paper_seed_set(stack), "num_instructions": 5})
    assert created.status_code == 202, created.text
    job_id = created.json()["id"]
    log = DecisionLog(Redis.from_url(redis_url), job_id)
    texts = [f"Write step {n} of the plan" for n in range(12_000)]
    texts[11_500] = "Explain the zebrafish genome"
    for start in range(0, len(texts), 1000):
        batch = [
            Decision(f"i{n}", "instruction", texts[n], "kept", {"prompt": 0, "completion": 0, "position": n})
            for n in range(start, start + 1000)
        ]
        log.commit(batch, keyspace.checkpoint(job_id), "")
    try:
        sign_in(page, stack, f"/ui/jobs/{job_id}/decisions")
        page.wait_for_selector("#decisions tbody tr")
        page.fill("#f-q", "zebra")
        page.press("#f-q", "Enter")
        until(page, "() => document.querySelector('#page-info').textContent.includes('1 decision matching')")
        assert page.locator("#decisions tbody tr").evaluate_all("rows => rows.map(r => r.dataset.id)") == [
            "i11500"
        ]
        assert "the job is running" in page.inner_text("#page-info") and page.is_disabled("#next")
        page.fill("#f-q", "zebu")
        page.press("#f-q", "Enter")
        until(page, "() => document.querySelector('#page-info').textContent === 'No decisions match.'")
        assert page.locator("#decisions tbody tr").count() == 0
        assert not page.watch.errors, page.watch.errors
    finally:
        assert stack.http.delete(f"/v1/jobs/{job_id}").status_code == 204


def lcs_length(a: list[str], b: list[str]) -> int:
    return rouge_scorer._lcs_table(a, b)[-1][-1]


def test_a_too_similar_decision_shows_the_nearest_item_the_overlap_and_the_score(page, stack, job):
    similar = stack.all_decisions(job, stage="instruction", rule="too_similar")
    near = next(d for d in similar if d["text"] == NEAR)
    moved = next(d for d in similar if d["text"] == MOVED)
    assert moved["detail"]["nearest_text"] == POEM
    others = [d for d in similar if d["text"] not in (NEAR, MOVED) and d["detail"]["score"] < 1]
    sign_in(page, stack)
    for decision in [near, moved, *others[:2]]:
        page.goto(f"{stack.url}/ui/jobs/{job}/decisions/{decision['id']}")
        page.wait_for_selector("#compare:not([hidden])")
        detail = decision["detail"]
        assert page.inner_text("#score") == f"{detail['score']:.4f}"
        assert page.inner_text("#nearest-id") == detail["nearest_id"]
        assert page.locator("#candidate").text_content() == decision["text"]
        assert page.locator("#nearest").text_content() == detail["nearest_text"]
        # the highlighted words are a common subsequence as long as the longest one: an LCS
        marked_a = [tokenize.tokenize(t, None) for t in page.locator("#candidate mark").all_text_contents()]
        marked_b = [tokenize.tokenize(t, None) for t in page.locator("#nearest mark").all_text_contents()]
        assert all(len(t) == 1 for t in marked_a + marked_b)
        a = tokenize.tokenize(decision["text"], None)
        b = tokenize.tokenize(detail["nearest_text"], None)
        assert marked_a == marked_b and len(marked_a) == lcs_length(a, b) > 0
        f = 2 * len(marked_a) / (len(a) + len(b))
        assert f == pytest.approx(detail["score"], abs=1e-6)
        if decision is near:
            shot(page, "decision-too-similar")
    assert not page.watch.errors, page.watch.errors


def test_a_kept_instruction_links_to_its_instances(page, stack, job):
    instances = stack.all_decisions(job, stage="instance")
    kept = [d for d in stack.all_decisions(job, stage="instruction", rule="kept")]
    count = {k["id"]: sum(i["source"]["instruction_id"] == k["id"] for i in instances) for k in kept}
    target = max(kept, key=lambda k: count[k["id"]])
    assert count[target["id"]] > 1
    sign_in(page, stack, f"/ui/jobs/{job}/decisions/{target['id']}")
    page.wait_for_selector("#instances:not([hidden])")
    links = page.locator("#instances a.instance-link")
    expected = [i["id"] for i in instances if i["source"]["instruction_id"] == target["id"]]
    assert links.all_inner_texts() == expected
    links.first.click()
    page.wait_for_selector("#instruction-link")
    assert page.inner_text("#instruction-link") == target["id"]
    assert not page.watch.errors, page.watch.errors


def test_a_hostile_instruction_renders_as_inert_text(page, stack, job):
    planted = {d["text"]: d for d in stack.all_decisions(job, stage="instruction") if "<script>" in d["text"]}
    assert planted[HOSTILE]["rule"] == "kept" and planted[NEAR]["rule"] == "too_similar"
    sign_in(page, stack, f"/ui/jobs/{job}/decisions?stage=instruction&limit=200")
    page.wait_for_selector("#decisions tbody tr")
    cells = page.locator("#decisions td.text").all_text_contents()
    assert HOSTILE in cells and NEAR in cells
    for decision in planted.values():
        page.goto(f"{stack.url}/ui/jobs/{job}/decisions/{decision['id']}")
        page.wait_for_selector("#decision-text")
        assert page.locator("#decision-text").text_content() == decision["text"]
    page.wait_for_selector("#compare:not([hidden])")
    # nothing was made of the text: no element, no handler run, no dialog, nothing for CSP to block
    assert page.locator("#content img, #content script").count() == 0
    assert "&lt;script&gt;" in page.content()
    assert page.watch.dialogs == [] and not page.watch.errors, (page.watch.dialogs, page.watch.errors)


def test_download_a_dataset_file(page, stack, job):
    manifest = {f["name"]: f for f in stack.http.get(f"/v1/jobs/{job}/dataset").json()["files"]}
    sign_in(page, stack, f"/ui/jobs/{job}")
    page.wait_for_selector("#dataset:not([hidden])")
    assert sorted(page.locator("#dataset a.download").all_inner_texts()) == sorted(manifest)
    with page.expect_download() as info:
        page.click("#dataset a.download:text-is('alpaca.json')")
    download = info.value
    assert download.suggested_filename == "alpaca.json"
    body = Path(download.path()).read_bytes()
    assert hashlib.sha256(body).hexdigest() == manifest["alpaca.json"]["sha256"]
    assert not page.watch.errors, page.watch.errors


def focus_on(page, selector: str, limit: int = 60) -> None:
    """Press Tab until `selector` has the focus."""
    for _ in range(limit):
        if page.evaluate("s => document.activeElement?.matches(s) ?? false", selector):
            return
        page.keyboard.press("Tab")
    raise AssertionError(f"Tab never reached {selector}")


def test_keyboard_only_sign_in_to_a_job_to_its_decisions(page, stack, job):
    page.goto(stack.url + "/ui/")
    focus_on(page, "#api-key")
    page.keyboard.type(stack.key)
    page.keyboard.press("Enter")
    page.wait_for_selector(f"#jobs tbody tr[data-id='{job}']")
    focus_on(page, f"a[href='/ui/jobs/{job}']")
    page.keyboard.press("Enter")
    page.wait_for_url(f"**/ui/jobs/{job}", wait_until="commit")
    page.wait_for_selector("#job-state")
    focus_on(page, "#decisions-link")
    page.keyboard.press("Enter")
    page.wait_for_url(f"**/ui/jobs/{job}/decisions", wait_until="commit")
    page.wait_for_selector("#decisions tbody tr")
    focus_on(page, "#f-rule")
    page.keyboard.press("ArrowDown")  # rule: kept (the first rule), applied at once
    until(page, "() => location.search.includes('rule=kept')")
    focus_on(page, "a.decision-link")
    target = page.evaluate("document.activeElement.textContent")
    page.keyboard.press("Enter")
    page.wait_for_url(f"**/decisions/{target}", wait_until="commit")
    page.wait_for_selector("#decision-text")
    assert not page.watch.errors, page.watch.errors


def test_the_key_is_in_no_log_line(page, stack, job):
    sign_in(page, stack, f"/ui/jobs/{job}/decisions")
    page.wait_for_selector("#decisions tbody tr")
    text = "".join(p.read_text() for p in (stack.tmp / "gunicorn.log", stack.tmp / "worker.log"))
    assert f"/v1/jobs/{job}/decisions" in text  # the page's requests were logged
    assert stack.key not in text


def test_lineage_extends_and_dedup_against_link_to_the_earlier_job(page, stack):
    from jobs.method.recipe import Recipe

    stack.start_worker()
    stack.llm.script.plant, stack.llm.script.delay = [], 0.0
    body = {"seed_set_id": paper_seed_set(stack), "num_instructions": 4, "seed": 21}
    first = stack.http.post("/v1/jobs", json=body).json()["id"]
    assert stack.wait(first)["state"] == "succeeded"
    source = stack.all_decisions(first, stage="instruction", rule="kept")[0]
    copy = f"Please {source['text'][0].lower()}{source['text'][1:]}"
    stack.llm.script.plant, stack.llm.script.plant_seed = (
        [copy],
        Recipe(seed=22).derived_seed("instructions", 0),
    )
    later = stack.http.post("/v1/jobs", json={**body, "seed": 22, "dedup_against": [first]}).json()["id"]
    extension = stack.http.post(f"/v1/jobs/{first}/extensions", json={"num_instructions": 6}).json()["id"]
    assert stack.wait(later)["state"] == stack.wait(extension)["state"] == "succeeded"
    stack.llm.script.plant_seed = None
    dropped = next(d for d in stack.all_decisions(later, stage="instruction") if d["text"] == copy)
    assert dropped["detail"]["nearest_job"] == first

    sign_in(page, stack, f"/ui/jobs/{extension}")
    page.wait_for_selector("#job-extends")
    assert page.inner_text("#job-extends") == first
    page.click("#job-extends")
    page.wait_for_url(f"**/ui/jobs/{first}")
    page.goto(f"{stack.url}/ui/jobs/{later}")
    page.wait_for_selector("#job-dedup-against")
    assert page.inner_text("#job-dedup-against") == first
    page.goto(f"{stack.url}/ui/jobs/{later}/decisions/{dropped['id']}")
    page.wait_for_selector("#nearest-link")
    assert page.inner_text("#nearest-link") == source["id"]
    assert page.locator("#nearest").text_content() == source["text"]
    page.click("#nearest-link")
    page.wait_for_url(f"**/ui/jobs/{first}/decisions/{source['id']}")
    page.wait_for_selector("#decision-text")
    assert page.inner_text("#decision-text") == source["text"]
    assert not page.watch.errors, page.watch.errors


def test_a_batch_jobs_batches_are_shown(page, stack):
    """A batch-mode job's events: each batch's states as the API has them, in words."""
    stack.start_worker()
    stack.llm.script.plant, stack.llm.script.delay = [], 0.0
    body = {"seed_set_id": paper_seed_set(stack), "num_instructions": 4, "seed": 31, "profile": "batch"}
    job_id = stack.http.post("/v1/jobs", json=body).json()["id"]
    assert stack.wait(job_id)["state"] == "succeeded"
    events = stack.http.get(f"/v1/jobs/{job_id}/events", params={"limit": 1000}).json()["items"]
    batches = [e["data"] for e in events if e["type"] == "batch"]
    assert batches and batches[-1]["status"] == "completed"
    sign_in(page, stack, f"/ui/jobs/{job_id}")
    page.wait_for_selector("#events li[data-type='state']:has-text('running -> succeeded')")
    shown = page.locator("#events li[data-type='batch']").all_inner_texts()
    assert len(shown) == len(batches)
    last = batches[-1]
    words = (
        f"{last['stage']} round {last['round']}: {last['batch_id']} completed, {last['requests']} requests"
    )
    assert shown[-1].endswith(f"batch: {words}")


def test_a_jobs_webhook_deliveries_are_shown(page, stack):
    from tests.test_webhooks import Receiver

    stack.http.post("/v1/webhook-secret").raise_for_status()
    stack.llm.script.plant = []
    stack.llm.script.delay = 0.0
    seed_set = paper_seed_set(stack)
    gate = threading.Event()
    # the first attempt is held until the page has shown the delivery pending, then fails; the second
    # is delivered: the page goes on refreshing a finished job until its webhook is settled
    with Receiver([503], hook=lambda body: gate.wait(30)) as receiver:
        body = {"seed_set_id": seed_set, "num_instructions": 2, "notify_url": f"{receiver.url}/ci"}
        created = stack.http.post("/v1/jobs", json=body)
        assert created.status_code == 202, created.text
        job_id = created.json()["id"]
        stack.start_worker()
        sign_in(page, stack, f"/ui/jobs/{job_id}")
        page.wait_for_selector(".delivery[data-status='pending']")
        assert page.inner_text(".delivery") == "job.succeeded: queued"
        gate.set()
        page.wait_for_selector(".delivery[data-status='delivered']")
    assert len(receiver.received) == 2
    assert page.inner_text(".delivery") == "job.succeeded: delivered (HTTP 200, 2 attempts)"
    assert f"{receiver.url}/ci" in page.inner_text("#job-facts")
    page.wait_for_selector("#events li[data-type='webhook']:has-text('delivered')")
    webhook_events = page.locator("#events li[data-type='webhook']").all_inner_texts()
    assert (
        len(webhook_events) == 2
        and "HTTP 503" in webhook_events[0]
        and "next attempt in 1 s" in webhook_events[0]
    )
    assert not page.watch.errors, page.watch.errors


def test_preview_from_the_form(page, stack, tmp_path):
    """The form's preview runs on the preview worker and shows each candidate's decision, the kept
    instructions with their instances, and the full job's estimate."""
    settings = Settings.from_env(stack.env)
    preview_worker = rq_worker(stack.env, stack.tmp / "preview-worker.log", settings.preview_queue)
    try:
        # listening on the preview queue before the click: the wait below is for the preview, not start-up
        previews = Queue(settings.preview_queue, connection=Redis.from_url(settings.redis_url))

        def listening() -> bool:
            assert preview_worker.proc.poll() is None, (stack.tmp / "preview-worker.log").read_text()[-3000:]
            return any(w.pid == preview_worker.pid for w in Worker.all(queue=previews))

        wait_until(listening, timeout=60, interval=0.2, what="the preview worker to listen")
        stack.llm.script.plant = []
        stack.llm.script.delay = 0.0
        sign_in(page, stack)
        page.click("#new-job summary")
        page.set_input_files("#seed-file", str(DATA / "seed_tasks.jsonl"))
        page.fill("#count", "50")
        page.click("#preview-button")
        # either outcome ends the wait; a failure is reported with what the page and the worker said
        done = """() => !document.querySelector('#job-form-error').hidden
            || /kept of|^The preview/.test(document.querySelector('#preview-summary').textContent)"""
        with contextlib.suppress(TimeoutError):
            until(page, done, timeout=120)
    finally:
        preview_worker.stop()
    summary = page.inner_text("#preview-summary")
    worker_said = (stack.tmp / "preview-worker.log").read_text()[-3000:]
    said = (summary, page.inner_text("#job-form-error"), worker_said)
    assert "kept of" in summary, said
    assert "the full job of 50" in summary, summary
    rules = page.locator("#preview-candidates tbody tr").evaluate_all("rows => rows.map(r => r.dataset.rule)")
    kept = page.locator("#preview-kept > li").count()
    assert rules and set(rules) <= set(RULES) and rules.count("kept") == kept > 0
    assert summary.startswith(f"{kept} kept of {len(rules)} candidates")
    jobs = stack.http.get("/v1/jobs", params={"limit": 100}).json()["items"]
    assert all(j["config"].get("num_instructions") != 50 for j in jobs)  # a preview makes no job
    shot(page, "preview")
    assert not page.watch.errors, page.watch.errors
