"""Does the playground keep up with a stream on a busy machine?

Starts `textgen serve` (real engine, default model, no rate limit) and headless Chromium, then,
for a fresh page and for a page that already holds a long conversation:

- a second page shows the Dashboards tab (its timers redraw a dozen plots every 2 s);
- `--api-streams` API clients stream long generations from the same engine (the load);
- the chat page sends a greedy reply of `--tokens` tokens, and at the same moment the same
  request goes over the API (`Cache-Control: no-cache`, so it is generated on its own beside
  the page's, in the same engine batch, at the same speed).

Reported side by side: the page's first visible token and the API stream's first token (from
the click / the request), when the page shows its last text against when the API stream ends,
the longest gap between two page updates while the text was growing, and the bytes the page
received over Gradio's event stream per token of the reply.

Targets (issue 18): the page ends within 1 s of the API stream; no gap of 2 s or more; bytes
per token do not grow with the reply's or the conversation's length.

    python benchmarks/ui_stream_lag.py [--tokens 400] [--history 30] [--api-streams 4] [--write]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from benchmarks.results import write_section  # noqa: E402
from tests.support.processes import lab_server  # noqa: E402
from textgen import DEFAULT_MODEL  # noqa: E402

SECTION = "## The playground keeps up with a stream on a busy machine"
TOKEN = "bench-token"
PROMPT = "Repeat the word hello 1000 times."
LOAD_PROMPTS = ["1, 2, 3, 4,", "Once upon a time", "The history of Rome", "def main():"]

# Timestamps what Gradio's event stream brings to the page (bytes, when) before Gradio reads it.
RECORD_STREAM_JS = """
(() => {
  window.__sse = [];
  const original = window.fetch;
  window.fetch = async function (input, init) {
    const response = await original.apply(this, arguments);
    const url = typeof input === 'string' ? input : (input && input.url) || '';
    if (!url.includes('/queue/data') || !response.body) return response;
    const count = new TransformStream({ transform(chunk, out) {
      window.__sse.push([Date.now(), chunk.byteLength]); out.enqueue(chunk); } });
    return new Response(response.body.pipeThrough(count),
                        { status: response.status, statusText: response.statusText,
                          headers: response.headers });
  };
})();
"""

# Every change of the last reply bubble's text, with the time it was seen on the page.
WATCH_REPLY_JS = """
() => {
  window.__updates = [];
  const chat = document.querySelector('#pg-chat');
  // The reply is the first bot bubble after those the page shows now (an imported
  // conversation has its own).
  const before = chat.querySelectorAll('.message.bot').length;
  const last = () => {
    const bots = chat.querySelectorAll('.message.bot');
    return bots.length > before ? bots[bots.length - 1].innerText : '';
  };
  let seen = null;
  window.__replyObserver?.disconnect();
  window.__replyObserver = new MutationObserver(() => {
    const text = last();
    if (text !== seen) { seen = text; window.__updates.push([Date.now(), text.length]); }
  });
  window.__replyObserver.observe(chat, { subtree: true, childList: true, characterData: true });
  window.__sse = [];
}
"""


@dataclass
class Figures:
    page_first_s: float
    api_first_s: float
    page_end_behind_api_s: float
    longest_gap_s: float
    updates: int
    tokens: int
    bytes_per_token: float
    bytes_first_half: float
    bytes_second_half: float


def login(page: Any, url: str) -> None:
    page.goto(f"{url}/ui/")
    page.locator("input").first.fill("lab")
    page.locator("input[type=password]").fill(TOKEN)
    page.get_by_role("button", name="Login").click()
    page.wait_for_selector("#pg-message textarea")
    page.wait_for_function(
        "() => (document.querySelector('#pg-model input') || {}).value?.includes('● loaded')")


def set_slider(page: Any, selector: str, value: float) -> None:
    box = page.locator(f"{selector} input[type=number]")
    box.fill(str(value))
    box.press("Enter")
    page.wait_for_function(
        "([sel, v]) => Number(document.querySelector(sel + ' input[type=range]').value) === v",
        arg=[selector, value])


def hold_conversation(page: Any, messages: int) -> list[dict[str, Any]]:
    """`messages` messages of real conversation in the page, as a person makes them (short
    replies, sampled): the conversation, the tab's history and its exports grow as they do."""
    set_slider(page, "#pg-max-tokens", 24)
    for i in range(messages // 2):
        page.evaluate("() => document.querySelector('#pg-figures .figures').dataset.stale = '1'")
        page.fill("#pg-message textarea", f"Tell me one fact about the number {i + 1}.")
        page.click("#pg-send")
        page.wait_for_function(
            """() => { const f = document.querySelector('#pg-figures .figures');
                       const chip = f && f.querySelector('[data-figure="status"] b');
                       return f && !f.dataset.stale && chip && /^(done|error)/.test(chip.innerText); }""",
            polling=100)
        page.wait_for_function("() => !document.querySelector('#pg-send').disabled", polling=100)
    exported = page.eval_on_selector("#pg-export", "e => e.innerText")
    assert f"({messages} messages" in exported, exported
    with page.expect_download() as info:
        page.click("#pg-export")
    return json.loads(Path(info.value.path()).read_text())["messages"]


def load_clients(url: str, streams: int, stop: threading.Event) -> list[threading.Thread]:
    def client(i: int) -> None:
        body = {"model": DEFAULT_MODEL, "prompt": LOAD_PROMPTS[i % len(LOAD_PROMPTS)],
                "max_tokens": 4000, "temperature": 0, "ignore_eos": True, "stream": True}
        while not stop.is_set():
            with httpx.stream("POST", f"{url}/v1/completions", json=body, timeout=600,
                              headers={"Authorization": f"Bearer {TOKEN}",
                                       "Cache-Control": "no-cache"}) as response:
                for _ in response.iter_lines():
                    if stop.is_set():
                        return

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(streams)]
    for t in threads:
        t.start()
    return threads


def api_reply(url: str, messages: list[dict[str, Any]], tokens: int, out: dict[str, float]) -> None:
    """The page's request over the API: when it was sent, its first token, its end (epoch s)."""
    body = {"model": DEFAULT_MODEL, "messages": messages, "max_tokens": tokens, "temperature": 0,
            "ignore_eos": True, "stream": True}
    out["sent"] = time.time()
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=600,
                      headers={"Authorization": f"Bearer {TOKEN}", "Cache-Control": "no-cache"}) as r:
        for line in r.iter_lines():
            if line.startswith("data: ") and '"content":"' in line and "first" not in out:
                out["first"] = time.time()
    out["end"] = time.time()


def measure(page: Any, url: str, tokens: int, history: list[dict[str, Any]]) -> Figures:
    page.evaluate(WATCH_REPLY_JS)
    page.fill("#pg-message textarea", PROMPT)
    api: dict[str, float] = {}
    messages = [*history, {"role": "user", "content": PROMPT}]
    reference = threading.Thread(target=api_reply, args=(url, messages, tokens, api))
    page.evaluate("() => document.querySelector('#pg-figures .figures').dataset.stale = '1'")
    clicked = time.time()
    reference.start()
    page.click("#pg-send")
    page.wait_for_function(
        """() => { const f = document.querySelector('#pg-figures .figures');
                   const chip = f && f.querySelector('[data-figure="status"] b');
                   return f && !f.dataset.stale && chip && /^(done|error)/.test(chip.innerText); }""",
        timeout=600_000, polling=100)  # not every frame: that reads the page it measures 60x/s
    reference.join()
    updates = page.evaluate("window.__updates")
    sse = page.evaluate("window.__sse")
    shown = page.eval_on_selector_all(
        "#pg-figures [data-figure]",
        "els => Object.fromEntries(els.map(e => [e.dataset.figure, e.querySelector('b').innerText]))")
    if shown.get("status") != "done":
        raise RuntimeError(f"the page's reply did not finish: {shown}")
    completion = int(shown["completion tokens"])
    growing = [t / 1000 for t, n in updates if n > 0]
    final_length = updates[-1][1]
    last_change = next(t / 1000 for t, n in updates if n == final_length)
    gaps = [b - a for a, b in zip(growing, growing[1:], strict=False)
            if a <= last_change]
    received = [(t / 1000, n) for t, n in sse if t / 1000 >= clicked]
    middle = (growing[0] + last_change) / 2
    first_half = sum(n for t, n in received if growing[0] <= t < middle)
    second_half = sum(n for t, n in received if middle <= t <= last_change)
    return Figures(
        page_first_s=growing[0] - clicked,
        api_first_s=api["first"] - api["sent"],
        page_end_behind_api_s=last_change - api["end"],
        longest_gap_s=max(gaps, default=0.0),
        updates=len(growing),
        tokens=completion,
        bytes_per_token=sum(n for _, n in received) / max(completion, 1),
        bytes_first_half=first_half,
        bytes_second_half=second_half,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=400)
    parser.add_argument("--history", type=int, default=30, help="messages in the long conversation")
    parser.add_argument("--api-streams", type=int, default=4)
    parser.add_argument("--lab-niceness", type=int, default=0,
                        help="CPU priority of the whole lab, engine included (as the browser "
                             "tests once ran it)")
    parser.add_argument("--engine-niceness", type=int, default=0,
                        help="ENGINE_NICENESS: the engine's processes only (the browser tests use 19)")
    parser.add_argument("--hogs", type=int, default=0,
                        help="busy processes at normal priority beside it all (a loaded box)")
    parser.add_argument("--write", action="store_true", help="record in benchmarks/RESULTS.md")
    args = parser.parse_args()

    from playwright.sync_api import sync_playwright

    env = {"REDIS_URL": "", "METRICS_PORT": "0", "RATE_LIMITS": json.dumps({DEFAULT_MODEL: 0}),
           "ENGINE_NICENESS": str(args.engine_niceness)}
    results: dict[str, Figures] = {}
    stop = threading.Event()
    with lab_server(env, token=TOKEN, wait_model=DEFAULT_MODEL, timeout=600,
                    niceness=args.lab_niceness) as lab, sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path="/usr/bin/chromium",
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"])
        dashboards = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
        login(dashboards, lab.base_url)
        dashboards.click("#tab-dashboards-button")
        threads = load_clients(lab.base_url, args.api_streams, stop)
        hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
                for _ in range(args.hogs)]
        try:
            for name, history_length in (("fresh page", 0), (f"{args.history}-message page", args.history)):
                context = browser.new_context(viewport={"width": 1400, "height": 1000},
                                              accept_downloads=True)
                context.add_init_script(RECORD_STREAM_JS)
                page = context.new_page()
                page.set_default_timeout(300_000)
                login(page, lab.base_url)
                history: list[dict[str, Any]] = []
                if history_length:
                    history = hold_conversation(page, history_length)
                set_slider(page, "#pg-temperature", 0)
                set_slider(page, "#pg-max-tokens", args.tokens)
                page.check("#pg-ignore-eos input")  # exactly --tokens tokens, whatever the model says
                results[name] = measure(page, lab.base_url, args.tokens, history)
                print(name, results[name], flush=True)
                context.close()
        finally:
            stop.set()
            for hog in hogs:
                hog.kill()
            for t in threads:
                t.join(30)
            browser.close()

    rows = ["| page | tokens | page first token | API first token | page's end − API's end "
            "| longest gap | updates | bytes/token | bytes 1st half / 2nd half |",
            "|---|---|---|---|---|---|---|---|---|"]
    for name, f in results.items():
        rows.append(f"| {name} | {f.tokens} | {f.page_first_s:.2f} s | {f.api_first_s:.2f} s | "
                    f"{f.page_end_behind_api_s:+.2f} s | {f.longest_gap_s:.2f} s | {f.updates} | "
                    f"{f.bytes_per_token:.0f} | {f.bytes_first_half:,.0f} / {f.bytes_second_half:,.0f} |")
    table = "\n".join(rows)
    print(table)
    ok = all(f.page_end_behind_api_s <= 1.0 and f.longest_gap_s < 2.0 for f in results.values())
    print("targets met" if ok else "TARGETS MISSED")
    if args.write:
        when = datetime.date.today().isoformat()
        write_section(SECTION, (
            f"{SECTION}\n\n`benchmarks/ui_stream_lag.py` ({when}, {platform.machine()}, "
            f"{os.cpu_count()} cores): a {args.tokens}-token greedy chat reply in headless "
            f"Chromium while {args.api_streams} API clients stream from the same engine and a "
            "second page shows the Dashboards tab; the same request over the API beside it. "
            "Targets: the page ends within 1 s of the API stream, never 2 s without an update, "
            "bytes per token flat.\n\n" + table + "\n"))
    median = statistics.median(f.bytes_per_token for f in results.values())
    print(f"median bytes/token {median:.0f}")


if __name__ == "__main__":
    main()
