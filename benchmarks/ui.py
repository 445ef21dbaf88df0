"""The web page's decisions view in a real browser (Chromium): first render, and paging to the last page,
of a job holding 50,000 decisions.

    .venv/bin/python -m benchmarks.ui [--decisions 50000] [--loads 5]

Starts Redis, an S3 endpoint and gunicorn on loopback, writes the decisions straight into the job's
log (benchmarks/api_reads.py's served_job), signs in and measures in the page with the Performance API:
from navigation start to the first page of the table on screen, and from a click on "Next page" to
the next page on screen, for every page up to the last, at 50 and 200 a page and with a rule filter.
No rate limit: the walk sends one request a page as fast as the page renders them.
"""

from __future__ import annotations

import argparse
import statistics
from typing import Any

from playwright.sync_api import sync_playwright

from benchmarks.api_reads import served_job

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# In the page: click "Next page" until it is disabled; the time from each click to the page's
# "decisions-rendered" mark (set once the rows are in the table), and the last page's rows.
WALK = """async () => {
  const next = document.querySelector('#next');
  const times = [];
  while (!next.disabled) {
    const rendered = new Promise((resolve) => {
      const seen = new PerformanceObserver((list) => {
        if (list.getEntriesByName('decisions-rendered').length) { seen.disconnect(); resolve(); }
      });
      seen.observe({ type: 'mark' });
    });
    const start = performance.now();
    next.click();
    await rendered;
    times.push(performance.now() - start);
  }
  const ids = [...document.querySelectorAll('#decisions tbody tr')].map((row) => row.dataset.id);
  return { times, info: document.querySelector('#page-info').textContent, ids };
}"""


def first_render(page, url: str, loads: int) -> list[float]:
    """Milliseconds from navigation start to the first page of decisions on screen, `loads` times."""
    found = []
    for _ in range(loads):
        page.goto(url)
        page.wait_for_selector("#decisions tbody tr")
        found.append(page.evaluate("performance.getEntriesByName('decisions-rendered')[0].startTime"))
    return found


def row(label: str, values: list[float]) -> str:
    q = statistics.quantiles(values, n=20) if len(values) >= 20 else [max(values)] * 19
    return (
        f"{label:<44} {len(values):>6} {statistics.median(values):>9.1f} {q[18]:>9.1f} "
        f"{max(values):>9.1f} {sum(values) / 1000:>8.1f}"
    )


def run(decisions: int, loads: int, chromium: str = "/usr/bin/chromium") -> dict[str, Any]:
    """Milliseconds to the first render (`loads` times), and per view every "Next page" click's time
    to the last page, with what the page then says and shows (`info`, `ids`): the headline is that
    walk's median, p95 and total."""
    with served_job(decisions) as served:
        url, key = served.url, served.key
        base = f"{url}/ui/jobs/{served.job_id}/decisions"
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1200, "height": 860})
                page.goto(f"{url}/ui/")
                page.fill("#api-key", key)
                page.click("#sign-in-form button")
                page.wait_for_selector("#content:not([hidden])")
                out: dict[str, Any] = {
                    "chromium": browser.version,
                    "first_render": first_render(page, base, loads),
                    "walks": {},
                }
                views = {
                    "to the last page, 50 a page": f"{base}?limit=50",
                    "to the last page, 200 a page": f"{base}?limit=200",
                    "to the last page, too_similar, 50 a page": f"{base}?rule=too_similar&limit=50",
                }
                for label, view in views.items():
                    page.goto(view)
                    page.wait_for_selector("#decisions tbody tr")
                    out["walks"][label] = page.evaluate(WALK)
            finally:
                browser.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--decisions", type=int, default=50_000)
    parser.add_argument("--loads", type=int, default=5, help="first renders measured (median reported)")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()
    result = run(args.decisions, args.loads, args.chromium)
    print(f"Chromium {result['chromium']}; a job with {args.decisions:,} decisions; times in ms")
    print(f"{'':<44} {'n':>6} {'median':>9} {'p95':>9} {'max':>9} {'total s':>8}")
    print(row("first render, 50 a page", result["first_render"]))
    for label, walked in result["walks"].items():
        print(row(label, walked["times"]) + f"   ({walked['info']})")


if __name__ == "__main__":
    main()
