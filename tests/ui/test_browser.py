"""The lab in headless Chromium against `textgen serve` with the real engine.

What a person does in the lab: log in, hold a conversation (system prompt, two turns,
Regenerate, Edit, Stop, export and import), see token probabilities, get JSON for a schema,
call a tool, continue a text and stop it, watch the engine panel, copy the request as code,
compare two settings, run a benchmark sweep, reopen a kept run from the history (and find it in
the next lab's), unload and load the model, watch the dashboards, and stream from a LoRA adapter
picked like a model. Screenshots of every view go to test-artifacts/ui/.

Each test has a page of its own, signed in, with every control at its default, and sets up
what it needs itself (a conversation is imported, a request is made over the API), so any one
of them runs alone and a failure cannot spill into the next. No test waits for a while and
hopes: each waits for the state the page promises, with a generous timeout as the only clock.
A generation that must still run when the test acts (Stop) has `ignore_eos` and a large
`max_tokens`, so it cannot end first.
"""

from __future__ import annotations

import contextlib
import csv
import datetime
import io
import json
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from tests.support.processes import lab_server
from textgen import DEFAULT_MODEL
from textgen.telemetry import NO_GPU_MESSAGE

pytestmark = [pytest.mark.browser, pytest.mark.engine, pytest.mark.timeout(1200)]

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "ui"
# Generous: other engines may share this machine's two cores.
WAIT_MS = 180_000
PIRATE = "You are a pirate. Answer in one sentence."
# One element per chatbot message (Gradio 6's chatbot nests more elements of class "message").
MESSAGES = "#pg-chat .message.user, #pg-chat .message.bot"


def login(page: Any, lab: Any) -> None:
    page.goto(f"{lab.url}/ui/")
    page.locator("input").first.fill("lab")
    page.locator("input[type=password]").fill(lab.token)
    page.get_by_role("button", name="Login").click()
    page.wait_for_selector("#pg-message textarea")


def model_loaded(lab: Any) -> None:
    """The default model loaded, whatever an earlier test (the Models tab's) left behind."""
    headers = {"Authorization": f"Bearer {lab.token}"}
    url = f"{lab.url}/v1/models/{DEFAULT_MODEL}"
    if httpx.get(url, headers=headers, timeout=30).json().get("status") == "loaded":
        return
    httpx.post(f"{url}/load", headers=headers, timeout=lab.load_timeout).raise_for_status()


@pytest.fixture(scope="module")
def signed_in(lab: Any, browser: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The lab's login, done once: every test's page starts signed in from this state."""
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    try:
        login(page, lab)
        path = tmp_path_factory.mktemp("browser") / "signed-in.json"
        context.storage_state(path=str(path))
    finally:
        context.close()
    return path


@pytest.fixture
def page(request: pytest.FixtureRequest, lab: Any, browser: Any, signed_in: Path) -> Iterator[Any]:
    """A page of its own for each test, signed in, on the Playground with the default model
    loaded and every control at its default: no test depends on what another left behind."""
    model_loaded(lab)
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True,
                                  storage_state=str(signed_in))
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    try:
        page.goto(f"{lab.url}/ui/")
        page.wait_for_selector("#pg-message textarea")
        wait(page, "() => (document.querySelector('#pg-model input') || {}).value?.includes('● loaded')")
        yield page
        report = getattr(request.node, "report_call", None)
        if report is not None and report.failed:
            keep_evidence(page, lab, f"FAILED-{request.node.name}")
    finally:
        context.close()


def keep_evidence(page: Any, lab: Any, name: str) -> None:
    """What the page showed when a test failed (a screenshot, the controls) and the lab's log."""
    shot(page, name)
    controls = page.eval_on_selector_all(
        "button[id], [id^=pg-figures], [id^=cmp-figures], #bench-progress",
        "els => els.map(e => `${e.id} disabled=${e.disabled} ${e.innerText.slice(0, 200)}`)")
    (ARTIFACTS / f"{name}.txt").write_text("\n".join(controls) + "\n")
    print("controls when it failed:", *controls, sep="\n  ")  # shown in the failure report
    (ARTIFACTS / f"{name}.log").write_bytes(lab.log.read_bytes()[-200_000:])


# --- helpers ------------------------------------------------------------------------------


def wait(page: Any, expression: str, *, arg: Any = None, timeout: float | None = None) -> None:
    """Wait until `expression` holds in the page, checking ten times a second.

    Playwright's default checks it at every animation frame: sixty times a second, each
    reading the page's text (a layout), a CPU the engine and the lab need on this machine.
    """
    options: dict[str, Any] = {"polling": 100}
    if timeout is not None:
        options["timeout"] = timeout
    page.wait_for_function(expression, arg=arg, **options)


def shot(page: Any, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def figures(page: Any, selector: str) -> dict[str, str]:
    """The figure chips under an output, as {name: value}."""
    return page.eval_on_selector_all(
        f"{selector} [data-figure]",
        "els => Object.fromEntries(els.map(e => [e.dataset.figure, e.querySelector('b').innerText]))",
    )


def wait_status(page: Any, selector: str, *states: str, timeout: float = WAIT_MS) -> str:
    pattern = "|".join(re.escape(s) for s in states)
    wait(page,
        """([sel, pattern]) => {
            const chip = document.querySelector(sel + ' [data-figure="status"] b');
            return chip && new RegExp('^(' + pattern + ')').test(chip.innerText);
        }""",
        arg=[selector, pattern], timeout=timeout,
    )
    return figures(page, selector)["status"]


def run(page: Any, button: str, selector: str = "#pg-figures") -> dict[str, str]:
    """Click `button` and wait for the run it starts to end; its figures.

    The figures shown before are marked stale first, so an earlier run's "done" is not taken
    for this one's: the page replaces them with the run's first redraw.
    """
    page.evaluate("sel => document.querySelector(sel + ' .figures').dataset.stale = '1'", selector)
    page.click(button)
    wait(page,
        """sel => {
            const shown = document.querySelector(sel + ' .figures');
            const chip = shown && shown.querySelector('[data-figure="status"] b');
            return shown && !shown.dataset.stale && chip
                && /^(done|stopped|error)/.test(chip.innerText);
        }""", arg=selector)
    return figures(page, selector)


def send(page: Any, message: str) -> dict[str, str]:
    page.fill("#pg-message textarea", message)
    done = run(page, "#pg-send")
    wait(page, "() => !document.querySelector('#pg-send').disabled")
    return done


def set_slider(page: Any, selector: str, value: float) -> None:
    box = page.locator(f"{selector} input[type=number]")
    box.fill(str(value))
    box.press("Enter")
    # The next click sends the slider's state, which follows the box only after Enter lands.
    wait(page,
        "([sel, value]) => Number(document.querySelector(sel + ' input[type=range]').value) === value",
        arg=[selector, value])


def pick(page: Any, selector: str, model: str) -> None:
    page.click(f"{selector} input")
    # The option is the model's id, alone or before its status ("id · ● loaded"); one id can
    # begin another (SmolLM2-135M-Instruct and SmolLM2-135M-Instruct-embed).
    page.locator(f"[role=option][aria-label='{model}'], "
                 f"[role=option][aria-label^='{model} ']").click()


def accordion(page: Any, selector: str, label: str, inner: str, *, open_: bool = True) -> None:
    """Open (or close) an accordion by its header, whatever state it is in; `inner` is a
    widget inside it."""
    if page.locator(inner).is_visible() != open_:
        page.locator(selector).get_by_text(label, exact=True).first.click()
    page.wait_for_selector(inner, state="visible" if open_ else "hidden")


def toasts(page: Any) -> list[str]:
    return page.eval_on_selector_all("[data-testid=toast-body]", "els => els.map(e => e.innerText)")


def wait_toast(page: Any, text: str) -> None:
    wait(page,
        "text => Array.from(document.querySelectorAll('[data-testid=toast-body]'))"
        ".some(e => e.innerText.includes(text))", arg=text)


def no_toasts(page: Any) -> None:
    """Let the messages fade (10 s) so they do not cover the screenshots that follow."""
    wait(page,
        "() => document.querySelectorAll('[data-testid=toast-body]').length === 0", timeout=30_000)


def bubbles(page: Any) -> list[str]:
    """The conversation's messages as the chatbot shows them."""
    return page.eval_on_selector_all(MESSAGES, "els => els.map(e => e.innerText.trim())")


def exported(page: Any, messages: int) -> dict[str, Any]:
    """The conversation's export, once it holds `messages` messages (it follows each turn)."""
    wait(page,
        "n => document.querySelector('#pg-export').innerText.includes(`(${n} messages`)",
        arg=messages)
    return json.loads(download(page, "#pg-export"))  # type: ignore[no-any-return]


def download(page: Any, button: str) -> str:
    wait(page, "sel => !document.querySelector(sel).disabled", arg=button)
    with page.expect_download() as info:
        page.click(button)
    return Path(info.value.path()).read_text()


def tokenize(lab: Any, messages: list[dict[str, Any]]) -> int:
    """How many prompt tokens the engine makes of a conversation (vLLM's own /tokenize)."""
    response = httpx.post(f"{lab.url}/tokenize", headers={"Authorization": f"Bearer {lab.token}"},
                          json={"model": DEFAULT_MODEL, "messages": messages,
                                "add_generation_prompt": True}, timeout=30)
    response.raise_for_status()
    return int(response.json()["count"])


POINTS_JS = "sel => document.querySelectorAll(sel + ' g.mark-symbol.role-mark path').length"
LINE_POINTS_JS = """sel => Array.from(document.querySelectorAll(sel + ' g.mark-line path'))
    .reduce((n, e) => n + ((e.getAttribute('d') || '').match(/L/g) || []).length + 1, 0)"""


def points(page: Any, selector: str, at_least: int) -> int:
    """How many points a scatter plot draws (Vega draws each as an SVG symbol path), once it
    shows `at_least` or 30 s have passed (a redraw swaps the drawing in a moment later)."""
    with contextlib.suppress(PlaywrightTimeout):
        wait(page, f"sel => ({POINTS_JS})(sel) >= {at_least}", arg=selector,
                               timeout=30_000)
    return page.evaluate(POINTS_JS, selector)  # type: ignore[no-any-return]


def line_points(page: Any, selector: str, at_least: int = 2, timeout: float = 30_000) -> int:
    """How many points the plot's drawn lines pass through (Vega draws lines as SVG paths),
    once there are `at_least` or `timeout` ms have passed (a line gets a point per redraw, and
    a redraw in progress can show no drawing at all for a moment)."""
    with contextlib.suppress(PlaywrightTimeout):
        wait(page, f"sel => ({LINE_POINTS_JS})(sel) >= {at_least}", arg=selector,
                               timeout=timeout)
    return page.evaluate(LINE_POINTS_JS, selector)  # type: ignore[no-any-return]


# --- the tests ----------------------------------------------------------------------------


def conversation_file(name: str, system: str, turns: list[dict[str, Any]],
                      settings: dict[str, Any]) -> Path:
    """An exported conversation (the chat's own format), to import."""
    path = ARTIFACTS / name
    path.write_text(json.dumps({
        "format": "textgen-lab conversation", "model": DEFAULT_MODEL,
        "messages": [{"role": "system", "content": system}, *turns], "settings": settings}))
    return path


def import_conversation(page: Any, path: Path, messages: int) -> None:
    """Import through the button, as a person does it (it opens the browser's file chooser)."""
    with page.expect_file_chooser() as chooser:
        page.click("#pg-import")
    chooser.value.set_files(str(path))
    wait(page, f"() => document.querySelectorAll('{MESSAGES}').length === {messages}")


def chat_mode(page: Any) -> None:
    page.locator("#pg-mode").get_by_label("Chat").check()
    page.wait_for_selector("#pg-message textarea", state="visible")


def completion_mode(page: Any) -> None:
    page.locator("#pg-mode").get_by_label("Completion").check()
    page.wait_for_selector("#pg-prompt textarea", state="visible")


ENDLESS_TOKENS = 8000


def endless(page: Any) -> None:
    """Settings under which a generation runs for minutes: greedy, past the end-of-text token,
    8000 tokens (the UI lab's context is 8192). It cannot end before the test presses Stop:
    with 1500 tokens (72 s at 21 tokens/s) a full run's page showed the text and sent the
    press only after the generation had ended (the clicks' trace)."""
    set_slider(page, "#pg-temperature", 0)
    set_slider(page, "#pg-max-tokens", ENDLESS_TOKENS)
    page.check("#pg-ignore-eos input")


TWO_TURNS = [{"role": "user", "content": "What is the capital of France?"},
             {"role": "assistant", "content": "Arr, 'tis Paris, matey."},
             {"role": "user", "content": "And of Germany?"},
             {"role": "assistant", "content": "Berlin, me hearty."}]


def test_login_is_required_when_a_token_is_set(browser: Any, lab: Any) -> None:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    try:
        page.goto(f"{lab.url}/")  # / redirects to the UI
        page.wait_for_selector("input[type=password]")
        assert page.locator("#pg-message").count() == 0
        shot(page, "01-login")
        page.locator("input").first.fill("lab")
        page.locator("input[type=password]").fill("not-the-token")
        page.get_by_role("button", name="Login").click()
        page.get_by_text("Incorrect Credentials").wait_for()
        assert page.locator("#pg-message").count() == 0
        page.locator("input").first.fill("lab")  # the failed attempt cleared the form
        page.locator("input[type=password]").fill(lab.token)
        page.get_by_role("button", name="Login").click()
        page.wait_for_selector("#pg-message textarea")
        wait(page, "() => (document.querySelector('#pg-model input') || {}).value?.includes('● loaded')")
    finally:
        context.close()


def test_errors_are_readable_messages(page: Any) -> None:
    page.click("#pg-send")
    wait_toast(page, "Type a message first.")
    # Invalid JSON in the schema box: where it is wrong, not a stack trace.
    accordion(page, "#pg-structured", "Structured output", "#pg-format")
    page.locator("#pg-format").get_by_label("json_schema").check()
    page.locator("#pg-schema .cm-content").click()
    page.keyboard.press("Control+a")
    page.keyboard.type('{"type": "object",')
    page.fill("#pg-message textarea", "Hello")
    page.click("#pg-send")
    wait_toast(page, "The JSON schema box is not valid JSON")
    assert not any("Traceback" in t for t in toasts(page))
    assert bubbles(page) == []  # nothing was sent
    # A model that cannot run here is listed, but picking it puts the previous one back.
    pick(page, "#pg-model", "mistralai/Mistral-7B-v0.1")
    wait_toast(page, "cannot run here")
    wait(page, f"() => (document.querySelector('#pg-model input') || {{}}).value?.startsWith('{DEFAULT_MODEL}')")


def test_a_conversation_with_a_system_prompt_carries_the_first_turn(page: Any, lab: Any) -> None:
    set_slider(page, "#pg-max-tokens", 32)
    page.fill("#pg-system textarea", PIRATE)
    first = send(page, "What is the capital of France?")
    assert first["status"] == "done" and int(first["completion tokens"]) > 0
    second = send(page, "And of Germany?")
    assert second["status"] == "done"
    shown = bubbles(page)
    assert len(shown) == 4 and shown[0] == "What is the capital of France?"
    assert shown[2] == "And of Germany?" and shown[3]
    # The export is the conversation the engine got; tokenized by vLLM with the model's chat
    # template it is exactly the second request's prompt: system prompt, first turn, second.
    conversation = exported(page, 5)
    messages = conversation["messages"]
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user", "assistant"]
    assert messages[0]["content"] == PIRATE and messages[3]["content"] == "And of Germany?"
    assert conversation["settings"]["max_tokens"] == 32
    assert int(second["prompt tokens"]) == tokenize(lab, messages[:4])
    assert int(second["prompt tokens"]) > tokenize(lab, [messages[0], messages[3]])
    shot(page, "09-chat")


def test_a_conversation_goes_through_the_responses_api_when_asked(page: Any, lab: Any) -> None:
    set_slider(page, "#pg-max-tokens", 24)
    set_slider(page, "#pg-temperature", 0)
    page.locator("#pg-responses-api input").check()
    question = f"Name a colour. ({uuid.uuid4().hex[:6]})"
    reply = send(page, question)
    assert reply["status"] == "done" and int(reply["completion tokens"]) > 0
    shown = bubbles(page)
    assert len(shown) == 2 and shown[0] == question and shown[1]
    # Kept as a Responses run; greedy, its text is what the chat API answers for the same
    # conversation (one chat template, one engine).
    headers = {"Authorization": f"Bearer {lab.token}"}

    def kept() -> list[dict[str, Any]]:  # written off the request path, within a second
        return httpx.get(f"{lab.url}/lab/runs", params={"text": question}, headers=headers,
                         timeout=60).json()["data"]

    deadline = time.monotonic() + WAIT_MS / 1000
    while not (runs := kept()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert [r["route"] for r in runs] == ["responses"] and runs[0]["request"]["store"] is False
    chat = httpx.post(f"{lab.url}/v1/chat/completions", headers=headers, timeout=300, json={
        "model": DEFAULT_MODEL, "messages": [{"role": "user", "content": question}],
        "max_tokens": 24, "temperature": 0}).json()
    assert runs[0]["text"] == chat["choices"][0]["message"]["content"]


def test_regenerate_replaces_the_last_reply_and_edit_resends_a_turn(page: Any, lab: Any) -> None:
    path = conversation_file("two-turns.json", PIRATE, TWO_TURNS, {"max_tokens": 32})
    import_conversation(page, path, 4)
    before = bubbles(page)
    again = run(page, "#pg-regenerate")
    assert again["status"] == "done"
    # The same conversation went, the last reply left out.
    sent = [{"role": "system", "content": PIRATE}, *TWO_TURNS[:3]]
    assert int(again["prompt tokens"]) == tokenize(lab, sent)
    after = bubbles(page)
    assert len(after) == 4 and after[:3] == before[:3]
    # Edit the second question in place and send it again: what followed it goes.
    page.locator("#pg-chat button[aria-label='Edit']").nth(1).click()
    page.locator("#pg-chat textarea").first.fill("And of Italy?")
    edited = run(page, "#pg-chat button[aria-label='Submit']")
    assert edited["status"] == "done"
    wait(page, "() => !document.querySelector('#pg-send').disabled")
    shown = bubbles(page)
    assert len(shown) == 4 and shown[2] == "And of Italy?" and shown[:2] == before[:2]
    sent = [{"role": "system", "content": PIRATE}, *TWO_TURNS[:2],
            {"role": "user", "content": "And of Italy?"}]
    assert int(edited["prompt tokens"]) == tokenize(lab, sent)


def clock() -> str:
    """Now, to the millisecond, as the lab's log writes it."""
    return datetime.datetime.now().strftime("%H:%M:%S.%f")[:-3]


def watch_text(page: Any, expression: str) -> None:
    """Keep, in the page, when the length of the text `expression` reads changed (window.grew:
    [time, length] pairs), checked ten times a second: a Stop that came late is then placed
    against what the page showed, and when."""
    page.evaluate("""expression => {
        const read = new Function(`return (${expression})()`);
        window.grew = [];
        let last = -1;
        window.growing = setInterval(() => {
            const length = (read() || '').length;
            if (length !== last) {
                last = length;
                window.grew.push([new Date().toISOString().slice(11, 23), length]);
            }
        }, 100);
    }""", expression)


def traced_click(page: Any, selector: str) -> Callable[[], str]:
    """Click `selector`, keeping what became of the click: when the test clicked, the element
    the browser delivered it to and when, the lab requests the page sent from then on, and
    (with `watch_text` before) how the page's text grew. A press the lab never logged, or
    logged late, is then placed: never delivered, delivered elsewhere, sent late, or clicked
    late because the page showed the text late."""
    sent: list[str] = []

    def on_request(request: Any) -> None:
        if "/gradio_api/" in request.url and request.method == "POST":
            sent.append(f"{clock()} {request.url.split('/gradio_api/')[-1]} "
                        f"{(request.post_data or '')[:100]}")

    page.on("request", on_request)
    page.evaluate("""() => {
        window.clicked = [];
        document.addEventListener('click', e => window.clicked.push(
            `${new Date().toISOString().slice(11, 23)} ${e.target.tagName}#${e.target.id} `
            + `in button#${e.target.closest('button')?.id}`), {capture: true});
    }""")
    at = clock()
    page.click(selector)

    def evidence() -> str:
        page.remove_listener("request", on_request)
        grew = page.evaluate("window.grew || []")
        shown = grew[:3] + (["..."] if len(grew) > 6 else []) + grew[max(3, len(grew) - 3):]
        text = (f"the test clicked at {at} (UTC); the page got it: {page.evaluate('window.clicked')}; "
                f"the page's text grew: {shown}; lab requests since: {sent}")
        # pytest cuts the middle of a long assertion message; the report's stdout is whole.
        print("Stop's click:", text)
        # Every trace is kept, a passing one's too: how far the page was behind the engine
        # when the test pressed shows there before it makes a test fail.
        with (ARTIFACTS / "stop-clicks.txt").open("a") as out:
            out.write(f"{selector}: {text}\n")
        return text

    return evidence

    return evidence


def stop_log(lab: Any) -> str:
    """The lab's log of Stop: when each page's generation was armed and ended, each press."""
    lines = Path(lab.log).read_text(errors="replace").splitlines()
    return "\n".join(line for line in lines if "ui.streaming" in line)[-3000:]


def test_stop_ends_a_reply_midway_and_keeps_what_came(page: Any, lab: Any) -> None:
    endless(page)
    page.fill("#pg-message textarea", "Count from one to a thousand in words.")
    page.evaluate("() => document.querySelector('#pg-figures .figures').dataset.stale = '1'")
    watch_text(page, "() => Array.from(document.querySelectorAll('#pg-chat .message.bot')).pop()"
                     "?.innerText")
    page.click("#pg-send")
    # Some of the reply has shown, and the generation (minutes long) is still running.
    wait(page, "() => (Array.from(document.querySelectorAll('#pg-chat .message.bot')).pop()"
               "?.innerText || '').trim().length >= 20")
    assert not page.locator("#pg-chat-stop").is_disabled()  # never disabled: streaming.buttons
    clicked = traced_click(page, "#pg-chat-stop")
    status = wait_status(page, "#pg-figures", "stopped", "done", "error")
    trace = clicked()
    assert status.startswith("stopped"), (status, trace, stop_log(lab))
    wait(page, "() => !document.querySelector('#pg-send').disabled")
    reply = bubbles(page)[-1]
    assert len(reply) >= 20  # what came before Stop stays
    page.wait_for_timeout(2000)
    assert bubbles(page)[-1] == reply  # nothing more arrives
    shot(page, "10-chat-stopped")


def test_export_then_import_brings_the_conversation_back(page: Any) -> None:
    page.fill("#pg-system textarea", PIRATE)
    set_slider(page, "#pg-max-tokens", 24)
    assert send(page, "What is the capital of France?")["status"] == "done"
    document = exported(page, 3)
    path = ARTIFACTS / "exported.json"
    path.write_text(json.dumps(document))
    reply = bubbles(page)[1]
    page.click("#pg-clear")
    page.fill("#pg-system textarea", "")
    set_slider(page, "#pg-max-tokens", 64)
    wait(page, f"() => document.querySelectorAll('{MESSAGES}').length === 0")
    import_conversation(page, path, 2)
    wait_toast(page, "Imported 2 message(s)")
    assert page.input_value("#pg-system textarea") == PIRATE
    assert page.input_value("#pg-max-tokens input[type=number]") == "24"  # its settings too
    assert bubbles(page) == ["What is the capital of France?", reply]
    shot(page, "11-imported")


def test_token_probabilities_colour_each_token_with_its_alternatives(page: Any) -> None:
    page.check("#pg-logprobs input")
    set_slider(page, "#pg-max-tokens", 12)
    done = send(page, "Name a colour.")
    chips = page.locator("#pg-tokens .tok")
    assert chips.count() == int(done["completion tokens"])
    colours = page.eval_on_selector_all("#pg-tokens .tok", "els => els.map(e => e.style.background)")
    assert all(c.startswith("rgb") for c in colours) and len(set(colours)) > 1
    chips.nth(0).hover()
    tip = chips.nth(0).locator(".alts")
    assert tip.is_visible()
    assert tip.locator("tr").count() >= 2  # the chosen token and what else it weighed
    assert tip.locator("tr.chosen").count() == 1
    shot(page, "12-probabilities")
    # Completion with echo: the prompt's own tokens come first, marked as the prompt.
    completion_mode(page)
    page.check("#pg-echo input")
    page.fill("#pg-prompt textarea", "The sky is")
    done = run(page, "#pg-generate")
    assert page.locator("#pg-tokens .tok.prompt").count() == int(done["prompt tokens"])
    assert page.locator("#pg-tokens .tok:not(.prompt)").count() == int(done["completion tokens"])
    shot(page, "13-probabilities-echo")


def test_a_json_schema_request_returns_json_the_page_shows_parsed(page: Any) -> None:
    set_slider(page, "#pg-temperature", 0)  # greedy: the JSON closes well before max_tokens
    set_slider(page, "#pg-max-tokens", 80)
    accordion(page, "#pg-structured", "Structured output", "#pg-format")
    page.locator("#pg-schema .cm-content").click()
    page.keyboard.press("Control+a")
    page.keyboard.press("Delete")
    page.locator("#pg-schema .cm-content").fill(
        '{"type": "object", "properties": {"name": {"type": "string"}, '
        '"age": {"type": "integer"}}, "required": ["name", "age"]}')
    page.locator("#pg-format").get_by_label("json_schema").check()
    assert send(page, "Give me a person.")["status"] == "done"
    reply = json.loads(exported(page, 2)["messages"][-1]["content"])
    assert set(reply) == {"name", "age"} and isinstance(reply["age"], int)
    assert json.loads(bubbles(page)[-1]) == reply  # the chat shows what was exported
    page.wait_for_selector("#pg-json .json-holder, #pg-json [class*=json]")
    shown = page.inner_text("#pg-json")
    assert '"name"' in shown and '"age"' in shown
    shot(page, "14-json")


def test_a_named_tool_call_shows_as_a_card_and_a_result_continues(page: Any) -> None:
    accordion(page, "#pg-tools-box", "Tools", "#pg-tools-example")
    page.click("#pg-tools-example")
    wait(page, "() => document.querySelector('#pg-tools').innerText.includes('get_weather')")
    pick(page, "#pg-tool-choice", "get_weather")
    # Greedy: a sampled 135M model can ramble in the arguments until max_tokens.
    set_slider(page, "#pg-temperature", 0)
    set_slider(page, "#pg-max-tokens", 60)
    # OpenAI's rule, which vLLM follows: a named tool call finishes with "stop" ("tool_calls"
    # is for auto and required); the card below is what shows the call.
    assert send(page, "What is the weather in Paris?")["finish"] == "stop"
    page.wait_for_selector("#pg-tool-row", state="visible")
    chat = page.inner_text("#pg-chat")
    assert "Tool call · get_weather" in chat
    assert "Result of get_weather" in page.inner_text("#pg-tool-row")
    shot(page, "15-tool-call")
    pick(page, "#pg-tool-choice", "none")  # now the model answers in words
    page.fill("#pg-tool-result textarea", '{"temperature": 18, "sky": "clear"}')
    done = run(page, "#pg-send-tool")
    assert done["status"] == "done" and done["finish"] in ("stop", "length")
    page.wait_for_selector("#pg-tool-row", state="hidden")
    assert "Tool result · get_weather" in page.inner_text("#pg-chat")
    assert len(bubbles(page)) == 4  # question, card, result, answer
    shot(page, "16-tool-result")


def record_output(page: Any) -> None:
    """Keep every value the page puts in the completion's output box (window.shown), as it puts
    it: polling could miss the middle of a short stream on a busy machine."""
    page.evaluate("""() => {
        const box = document.querySelector('#pg-output textarea');
        const value = Object.getOwnPropertyDescriptor(HTMLTextAreaElement.prototype, 'value');
        window.shown = [];
        Object.defineProperty(box, 'value', {
            configurable: true,
            get() { return value.get.call(this); },
            set(v) { window.shown.push(v); value.set.call(this, v); },
        });
    }""")


def test_completion_streams_and_shows_its_figures(page: Any) -> None:
    completion_mode(page)
    # Greedy: a sampled continuation can end at its first token (EOS), leaving nothing to
    # see streaming; greedy, this opening runs on to max_tokens. The prompt is new to this
    # lab's cache whichever tests ran before.
    set_slider(page, "#pg-temperature", 0)
    page.fill("#pg-prompt textarea",
              f"Once upon a time, in a small village by the sea ({uuid.uuid4().hex[:6]}),")
    set_slider(page, "#pg-max-tokens", 40)
    record_output(page)
    final = run(page, "#pg-generate")
    seen = [v for v in page.evaluate("window.shown") if v]
    assert final["status"] == "done", final
    text = page.input_value("#pg-output textarea")
    assert text.strip()
    partial = [s for s in seen if s != text]
    assert partial, "the output arrived in one piece instead of streaming"
    assert all(text.startswith(p) for p in partial)
    assert int(final["prompt tokens"]) > 0
    assert 0 < int(final["completion tokens"]) <= 40
    assert final["cache"] == "MISS"
    assert re.fullmatch(r"\d+(\.\d+)? (ms|s)", final["first token"])
    assert float(final["tokens/s"]) > 0
    assert "total" in final and "finish" in final
    shot(page, "02-playground")

    # The same request again comes from the response cache, and says so.
    again = run(page, "#pg-generate")
    assert again["cache"] == "HIT" and again["status"] == "done"
    assert "tokens/s" not in again  # a replay from the cache has no generation speed
    assert page.input_value("#pg-output textarea") == text


def test_stop_aborts_a_long_generation(page: Any, lab: Any) -> None:
    completion_mode(page)
    endless(page)
    page.fill("#pg-prompt textarea", "1, 2, 3, 4, 5, 6, 7, 8,")
    page.evaluate("() => document.querySelector('#pg-figures .figures').dataset.stale = '1'")
    watch_text(page, "() => document.querySelector('#pg-output textarea').value")
    page.click("#pg-generate")
    # Some text has shown, and the generation (minutes long) is still running.
    wait(page, "() => document.querySelector('#pg-output textarea').value.trim().length >= 10")
    assert not page.locator("#pg-stop").is_disabled(), figures(page, "#pg-figures")
    clicked = traced_click(page, "#pg-stop")
    status = wait_status(page, "#pg-figures", "stopped", "done", "error")
    # A failure says where the press landed: before, during or after the page's generation,
    # and what the page did with the click.
    trace = clicked()
    assert status.startswith("stopped"), (status, trace, stop_log(lab))
    wait(page, "() => !document.querySelector('#pg-generate').disabled")
    stopped_at = page.input_value("#pg-output textarea")
    assert len(stopped_at.strip()) >= 10  # what came before Stop stays
    page.wait_for_timeout(2000)
    assert page.input_value("#pg-output textarea") == stopped_at  # nothing more arrives
    # Stop is always clickable; with nothing running a press changes nothing.
    page.click("#pg-stop")
    page.wait_for_timeout(1000)
    assert page.input_value("#pg-output textarea") == stopped_at
    assert figures(page, "#pg-figures")["status"].startswith("stopped")
    shot(page, "03-stopped")


@contextlib.contextmanager
def engine_kept_busy(lab: Any) -> Iterator[None]:
    """An API client's long generation (greedy, past EOS, minutes) for as long as the block
    runs; leaving hangs up, which aborts it in the engine."""
    leave, started = threading.Event(), threading.Event()

    def generate() -> None:
        body = {"model": DEFAULT_MODEL, "prompt": "1, 2, 3, 4,", "max_tokens": 1500,
                "temperature": 0, "ignore_eos": True, "stream": True}
        with httpx.stream("POST", f"{lab.url}/v1/completions", json=body, timeout=300,
                          headers={"Authorization": f"Bearer {lab.token}",
                                   "Cache-Control": "no-cache"}) as response:
            for _ in response.iter_lines():
                started.set()
                if leave.is_set():
                    return

    client = threading.Thread(target=generate)
    client.start()
    try:
        assert started.wait(WAIT_MS / 1000), "the API client's generation never started"
        yield
    finally:
        leave.set()
        client.join(60)


def test_the_engine_panel_shows_the_engine_at_work(page: Any, lab: Any) -> None:
    with engine_kept_busy(lab):
        page.click("#tab-dashboards-button")
        wait(page, """() => {
                const chip = name => Array.from(document.querySelectorAll('#dash-engine-summary [data-figure]'))
                    .find(e => e.dataset.figure.endsWith(name));
                const kv = chip('· KV cache'), running = chip('· running');
                return kv && running && parseFloat(kv.querySelector('b').innerText) > 0
                    && running.querySelector('b').innerText === '1';
            }""")
        # Readings over time, drawn (one every 2 s while the tab shows).
        assert line_points(page, "#dash-engine-kv", timeout=WAIT_MS) >= 2
        assert line_points(page, "#dash-engine-requests", timeout=WAIT_MS) >= 2
        shot(page, "17-engine-panel")


def test_copy_as_code_shows_the_current_request(page: Any) -> None:
    completion_mode(page)
    set_slider(page, "#pg-max-tokens", 77)
    accordion(page, "#pg-code", "Copy as code", "#pg-code-openai")
    page.locator("#pg-code").get_by_role("tab", name="curl").click()
    page.wait_for_selector("#pg-code-curl .cm-content")
    wait(page, "() => document.querySelector('#pg-code-curl .cm-content').innerText.includes('\"max_tokens\": 77')")
    curl = page.inner_text("#pg-code-curl .cm-content")
    assert "/v1/completions" in curl
    assert "Bearer $API_TOKEN" in curl
    # In Chat, the request is the whole conversation and the message being written.
    chat_mode(page)
    page.fill("#pg-message textarea", "One more question")
    page.locator("#pg-code").get_by_role("tab", name="openai").click()
    wait(page, "() => document.querySelector('#pg-code-openai .cm-content').innerText.includes('One more question')")
    code = page.inner_text("#pg-code-openai .cm-content")
    assert "client.chat.completions.create(" in code
    shot(page, "04-copy-as-code")


def test_compare_streams_four_settings_side_by_side(page: Any) -> None:
    page.click("#tab-compare-button")
    page.locator("#cmp-columns").get_by_label("4").check()
    page.wait_for_selector("#cmp-column-d", state="visible")
    wait(page, "() => (document.querySelector('#cmp-model-d input') || {}).value?.includes('● loaded')")
    page.fill("#cmp-prompt textarea", "Name three colours.")
    set_slider(page, "#cmp-max-tokens", 32)
    page.click("#cmp-run")
    sides = ("a", "b", "c", "d")
    for side in sides:
        assert wait_status(page, f"#cmp-figures-{side}", "done", "error", "stopped") == "done"
    for side in sides:
        side_figures = figures(page, f"#cmp-figures-{side}")
        assert page.input_value(f"#cmp-output-{side} textarea").strip()
        assert int(side_figures["completion tokens"]) > 0
        assert "first token" in side_figures and "tokens/s" in side_figures
    shot(page, "05-compare")


def test_a_blind_round_hides_the_columns_until_the_vote_which_ranks_them(page: Any) -> None:
    page.click("#tab-compare-button")
    wait(page, "() => (document.querySelector('#cmp-model-b input') || {}).value?.includes('● loaded')")
    page.fill("#cmp-prompt textarea", "Name a colour.")
    set_slider(page, "#cmp-max-tokens", 8)
    accordion(page, "#cmp-blind", "Blind pairwise", "#cmp-blind-start")
    page.click("#cmp-blind-start")
    # The votes open once both answers are in; until then nothing says which is which.
    wait(page, "() => !document.querySelector('#cmp-vote-left').disabled")
    assert page.input_value("#cmp-blind-left textarea").strip()
    assert page.input_value("#cmp-blind-right textarea").strip()
    assert "temperature" not in page.inner_text("#cmp-blind-reveal")
    page.click("#cmp-vote-left")
    wait(page, "() => document.querySelector('#cmp-blind-reveal').innerText.includes('kept')")
    reveal = page.inner_text("#cmp-blind-reveal")
    assert "temperature=0.2" in reveal and "temperature=1" in reveal
    wait(page, "() => document.querySelector('#cmp-leaderboard').innerText.includes('temperature=0.2')")
    assert page.inner_text("#cmp-leaderboard").count("temperature=") >= 2  # both ranked
    assert page.locator("#cmp-vote-left").is_disabled()  # one vote per round
    shot(page, "05b-compare-blind")


def benchmark_tab(page: Any, levels: str, output_len: int, rounds: int, plan: str) -> None:
    page.click("#tab-benchmark-button")
    wait(page, f"() => (document.querySelector('#bench-model input') || {{}}).value === '{DEFAULT_MODEL}'")
    page.fill("#bench-levels textarea", levels)
    page.fill("#bench-input-len input", "32")
    page.fill("#bench-output-len input", str(output_len))
    page.fill("#bench-rounds input", str(rounds))
    page.press("#bench-rounds input", "Tab")
    wait(page, "plan => document.querySelector('#bench-plan').innerText.includes(plan)", arg=plan)


def test_a_benchmark_sweep_draws_each_level_and_offers_the_csv(page: Any) -> None:
    benchmark_tab(page, "1, 2", 16, 3, "Sends 9 requests")
    page.click("#bench-run")
    wait(page, "() => document.querySelector('#bench-progress').innerText.startsWith('Sweep')")
    assert page.inner_text("#bench-progress").startswith("Sweep done. 2 level(s), 9 requests completed")
    about = page.inner_text("#bench-about")
    assert DEFAULT_MODEL in about and "dtype" in about and re.search(r"CPU|GPU|H100|A100|L4", about)
    for plot, series in (("throughput", 1), ("requests", 1), ("ttft", 2), ("itl", 2)):
        # Both levels drawn (the CSV below holds exactly the two levels).
        assert points(page, f"#bench-{plot}", 2 * series) >= 2 * series, plot
    rows = list(csv.DictReader(io.StringIO(download(page, "#bench-csv"))))
    assert [r["concurrency"] for r in rows] == ["1", "2"]
    assert [r["requests"] for r in rows] == ["3", "6"] and {r["failed"] for r in rows} == {"0"}
    assert all(float(r["output tok/s"]) > 0 and float(r["TTFT p50 ms"]) > 0 for r in rows)
    assert {r["model"] for r in rows} == {DEFAULT_MODEL}
    shot(page, "18-benchmark")


def test_a_second_page_is_refused_while_a_sweep_runs(page: Any, lab: Any, browser: Any,
                                                     signed_in: Path) -> None:
    # 50 requests of 1000 output tokens, one at a time: the sweep runs for many minutes, until
    # Stop. (One such request ended on its own in 27 s of a full run, before this test had
    # shown the second page's refusal and pressed Stop.)
    benchmark_tab(page, "1", 1000, 50, "Sends 50 requests")
    other = browser.new_context(storage_state=str(signed_in)).new_page()
    other.set_default_timeout(WAIT_MS)
    try:
        other.goto(f"{lab.url}/ui/")
        other.click("#tab-benchmark-button")
        wait(other, "() => !!(document.querySelector('#bench-model input') || {}).value")
        page.click("#bench-run")
        wait(page, "() => document.querySelector('#bench-progress').innerText.includes('Concurrency')")
        other.click("#bench-run")
        wait_toast(other, "Another sweep is running")
    finally:
        other.context.close()
    clicked = traced_click(page, "#bench-stop")
    wait(page, "() => document.querySelector('#bench-progress').innerText.startsWith('Sweep')")
    trace = clicked()
    assert page.inner_text("#bench-progress").startswith("Sweep stopped"), (trace, stop_log(lab))


# The History table's text: the newest run's first, so `indexOf` finds the newest run's row.
HISTORY_ROWS = "() => document.querySelector('#hist-table').innerText"


def test_the_history_keeps_the_runs_and_reopens_one(page: Any) -> None:
    page.fill("#pg-system textarea", PIRATE)
    set_slider(page, "#pg-max-tokens", 8)
    assert send(page, "And of Germany?")["status"] == "done"
    completion_mode(page)
    page.fill("#pg-prompt textarea", "The sky is")
    assert run(page, "#pg-generate")["status"] == "done"
    page.click("#tab-history-button")
    # Newest first: the completion, then the conversation (earlier tests' runs below them).
    wait(page, f"""() => {{ const t = ({HISTORY_ROWS})();
                          const sky = t.indexOf('The sky is'), germany = t.indexOf('And of Germany?');
                          return sky >= 0 && germany > sky; }}""")
    lines = download(page, "#hist-download").splitlines()
    newest = [json.loads(line) for line in lines[:2]]
    assert newest[0]["request"]["prompt"] == "The sky is" and newest[0]["mode"] == "playground"
    assert newest[1]["request"]["messages"][-1]["content"] == "And of Germany?"
    assert newest[1]["answer"]["choices"][0]["message"]["content"]
    shot(page, "19-history")
    # The text filter finds the conversation, and only runs that hold the text.
    page.fill("#hist-text textarea", "Germany")
    page.press("#hist-text textarea", "Enter")
    wait(page, f"() => !({HISTORY_ROWS})().includes('The sky is')")
    assert "And of Germany?" in page.inner_text("#hist-table")
    page.locator("#hist-table span.text", has_text="And of Germany?").first.click()
    page.wait_for_selector("#pg-chat", state="visible")
    wait(page, f"() => document.querySelectorAll('{MESSAGES}').length === 2")
    assert page.input_value("#pg-system textarea") == PIRATE
    assert bubbles(page)[0] == "And of Germany?"
    assert page.input_value("#pg-max-tokens input[type=number]") == "8"


def test_a_kept_run_is_sent_again_and_diffed_from_the_history(page: Any) -> None:
    completion_mode(page)
    set_slider(page, "#pg-temperature", 0)
    set_slider(page, "#pg-max-tokens", 6)
    marker = f"Diff {uuid.uuid4().hex[:6]}: the sea is"
    page.fill("#pg-prompt textarea", marker)
    assert run(page, "#pg-generate")["status"] == "done"
    page.click("#tab-history-button")
    wait(page, f"() => ({HISTORY_ROWS})().includes({json.dumps(marker[:20])})")
    accordion(page, "#hist-tools", "Re-run, compare or delete runs", "#hist-rerun")
    # The pickers hold the newest runs: A the one before, B the newest (this one).
    wait(page, "() => document.querySelector('#hist-run-b input').value.includes('Diff ')")
    page.click("#hist-run-a input")
    page.locator("[role=option]", has_text=marker[:20]).first.click()
    page.click("#hist-rerun")
    view = "() => document.querySelector('#hist-diff-view').innerText"
    wait(page, f"() => ({view})().includes('The outputs are')")
    shown = page.inner_text("#hist-diff-view")
    # Greedy, the same request fresh: the same settings, input and output.
    assert "Same model and settings." in shown and "Same input." in shown
    assert "The outputs are the same." in shown
    wait(page, f"() => ({HISTORY_ROWS})().includes('rerun')")
    shot(page, "19b-history-rerun-diff")


def test_a_kept_run_is_deleted_from_the_history(page: Any, lab: Any) -> None:
    marker = f"Delete me {uuid.uuid4().hex[:8]}"
    headers = {"Authorization": f"Bearer {lab.token}", "X-Lab-Record": "1"}
    r = httpx.post(f"{lab.url}/v1/completions", headers=headers, timeout=120,
                   json={"model": DEFAULT_MODEL, "prompt": marker, "max_tokens": 3})
    assert r.status_code == 200, r.text

    def kept() -> list[dict[str, Any]]:
        found = httpx.get(f"{lab.url}/lab/runs", params={"text": marker}, headers=headers,
                          timeout=60)
        return list(found.json()["data"])

    assert len(kept()) == 1
    page.click("#tab-history-button")
    wait(page, f"() => ({HISTORY_ROWS})().includes('{marker}')")
    accordion(page, "#hist-tools", "Re-run, compare or delete runs", "#hist-delete")
    # The pickers are filled right after the table (this fresh page's first listing).
    wait(page, "() => document.querySelector('#hist-run-b input').value !== ''")
    page.click("#hist-run-a input")
    page.locator("[role=option]", has_text=marker).first.click()
    page.once("dialog", lambda dialog: dialog.accept())  # "Delete run …? This cannot be undone."
    page.click("#hist-delete")
    wait(page, f"() => !({HISTORY_ROWS})().includes('{marker}')")
    assert kept() == []  # gone from the store, not only from the page


def test_a_kept_run_is_in_the_history_of_the_next_lab(browser: Any, lab: Any) -> None:
    """The run store outlives the lab: a run kept by this lab is in the History of a second
    lab process on the same data directory (one with no model of its own: it only reads)."""
    marker = f"kept {uuid.uuid4().hex[:8]}"
    r = httpx.post(f"{lab.url}/v1/completions", timeout=120,
                   headers={"Authorization": f"Bearer {lab.token}", "X-Lab-Record": "1"},
                   json={"model": DEFAULT_MODEL, "prompt": marker, "max_tokens": 3})
    assert r.status_code == 200, r.text
    token = "second-lab"
    with lab_server({"MODEL": "", "REDIS_URL": "", "TEXT_GEN_API_TOKEN": "",
                     "METRICS_PORT": "0"}, token=token) as later:
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        page = context.new_page()
        page.set_default_timeout(WAIT_MS)
        try:
            login(page, SimpleNamespace(url=later.base_url, token=token))
            page.click("#tab-history-button")
            wait(page, f"() => ({HISTORY_ROWS})().includes('{marker}')")
            assert "api" in page.inner_text("#hist-table")
            shot(page, "20b-history-next-lab")
        finally:
            context.close()


def test_an_evaluation_runs_from_the_evaluate_tab(page: Any) -> None:
    page.click("#tab-evaluate-button")
    page.wait_for_selector("#eval-dataset textarea")
    assert "capital of France" in page.input_value("#eval-dataset textarea")  # a sample to run
    page.fill("#eval-temperatures textarea", "0, 0.5")
    page.click("#eval-run")
    wait(page, "() => document.querySelector('#eval-progress').innerText.startsWith('Done')")
    assert "12 of 12 answers scored" in page.inner_text("#eval-progress")
    assert "temperature=0.5" in page.inner_text("#eval-summary")
    # The table draws only the rows in view (which rows depends on its scroll): its columns
    # here, the answers from the download.
    assert "output · " in page.inner_text("#eval-items")
    lines = download(page, "#eval-download").splitlines()
    assert lines[0].startswith("config,item,") and len(lines) == 13
    assert sum("temperature=0.5" in line for line in lines) == 6  # each item at each setting
    # The grid varies the temperature: score against it, a line per model.
    page.wait_for_selector("#eval-setting-plot", state="visible")
    assert "Score against temperature" in page.inner_text("#eval-setting-plot")
    shot(page, "21-evaluate")


def test_models_tab_unloads_and_loads_the_model(page: Any, lab: Any) -> None:
    page.click("#tab-models-button")
    table = page.locator("#models-table")
    wait(page, "() => document.querySelector('#models-table').innerText.includes('● loaded')")
    assert "unavailable here" in table.inner_text()
    pick(page, "#models-pick", DEFAULT_MODEL)
    page.click("#models-unload")
    wait(page, "() => document.querySelector('#models-progress').innerText.includes('is unloaded')")
    wait(page, "() => !document.querySelector('#models-table').innerText.includes('● loaded')")
    shot(page, "06-models-unloaded")

    page.click("#models-load")
    wait(page, "() => document.querySelector('#models-progress').innerText.includes('Loading')")
    wait(page, "() => document.querySelector('#models-progress').innerText.includes('loaded in')",
         timeout=lab.load_timeout * 1000)
    wait(page, "() => document.querySelector('#models-table').innerText.includes('● loaded')")
    shot(page, "07-models")


def requests_to_show(lab: Any) -> None:
    """Requests for the dashboards to count: five answered, and one stopped (its client hung
    up after the first token)."""
    headers = {"Authorization": f"Bearer {lab.token}", "Cache-Control": "no-cache"}
    for i in range(5):
        body = {"model": DEFAULT_MODEL, "prompt": f"Request {i}:", "max_tokens": 4}
        httpx.post(f"{lab.url}/v1/completions", json=body, headers=headers,
                   timeout=120).raise_for_status()
    body = {"model": DEFAULT_MODEL, "prompt": "1, 2, 3,", "max_tokens": 1500,
            "ignore_eos": True, "stream": True}
    with httpx.stream("POST", f"{lab.url}/v1/completions", json=body, headers=headers,
                      timeout=120) as response:
        for line in response.iter_lines():
            if line.startswith("data: "):
                break


def test_dashboards_draw_the_machine_the_engines_and_the_requests(page: Any, lab: Any) -> None:
    requests_to_show(lab)
    page.click("#tab-dashboards-button")
    page.locator("#dash-window").get_by_label("30 min").check()
    # The stopped request is counted once the engine has let go of it (in flight 0).
    wait(page, """() => {
            const figure = name => document.querySelector(`#dash-summary [data-figure="${name}"] b`)?.innerText;
            return Number(figure('requests')) >= 6 && Number(figure('stopped')) >= 1
                && figure('in flight') === '0';
        }""")
    for plot in ("#dash-cpu", "#dash-memory", "#dash-rate", "#dash-engine-requests"):
        # Two redraws at least (one every 2 s), so each series has more than one point.
        assert line_points(page, plot, timeout=WAIT_MS) >= 2, plot
    legend = page.inner_text("#dash-memory")
    assert "RAM used" in legend and "process RSS" in legend
    name = DEFAULT_MODEL.rsplit("/", 1)[-1]
    # The engine is idle again: nothing running, no KV cache held.
    wait(page, """name => {
            const figure = key => document.querySelector(`#dash-engine-summary [data-figure="${name} · ${key}"] b`)?.innerText;
            return figure('running') === '0' && figure('KV cache') === '0 %';
        }""", arg=name)
    notice = page.locator("#dash-gpu-notice")
    if notice.is_visible():
        assert page.inner_text("#gpu-notice").startswith(NO_GPU_MESSAGE)
        assert not page.locator("#dash-gpu-util").is_visible()
    else:
        assert line_points(page, "#dash-gpu-util") >= 2
    shot(page, "08-dashboards")


# --- a LoRA adapter -----------------------------------------------------------------------


def kept_run(lab: Any, model: str, text: str) -> dict[str, Any]:
    """The playground's kept run of `model` whose request holds `text`, once it is written
    (the store writes runs in batches, off the request path)."""
    headers = {"Authorization": f"Bearer {lab.token}"}
    deadline = time.monotonic() + WAIT_MS / 1000
    while True:
        r = httpx.get(f"{lab.url}/lab/runs", headers=headers, timeout=30,
                      params={"model": model, "mode": "playground", "text": text})
        r.raise_for_status()
        if r.json()["data"]:
            return r.json()["data"][0]  # type: ignore[no-any-return]
        assert time.monotonic() < deadline, f"no kept run of {model} with {text!r}"
        time.sleep(0.5)


def test_an_adapter_is_picked_like_a_model_and_streams_its_own_text(
        page: Any, lab: Any, tmp_path: Path) -> None:
    """An adapter loaded at run time is offered by the picker; picked, the conversation streams
    from it. The page's request, kept in the run store and sent again over the API, gives the
    page's text for the adapter and another text for the base model."""
    from tests.support.lora import make_adapter
    from textgen import Settings, embedded

    base = embedded.prepared_folder(DEFAULT_MODEL, Settings().MODEL_CACHE_DIR)
    assert base is not None, "make model prepares the embedded model"
    name = f"pirate-{uuid.uuid4().hex[:6]}"
    headers = {"Authorization": f"Bearer {lab.token}"}
    loaded = httpx.post(f"{lab.url}/v1/load_lora_adapter", headers=headers,
                        timeout=lab.load_timeout,
                        json={"lora_name": name, "lora_path": str(make_adapter(tmp_path / name, base))})
    assert loaded.status_code == 200, loaded.text
    try:
        # A page opened now lists the adapter (the picker reads the models when it fills).
        page.reload()
        page.wait_for_selector("#pg-message textarea")
        wait(page, "() => (document.querySelector('#pg-model input') || {}).value?.includes('● loaded')")
        pick(page, "#pg-model", name)
        wait(page, "name => document.querySelector('#pg-model input').value.startsWith(name)",
             arg=name)
        # The page stays in chat mode: the adapter's base is an instruction-tuned model.
        set_slider(page, "#pg-temperature", 0)
        set_slider(page, "#pg-max-tokens", 24)
        page.evaluate("""() => {
            window.replies = [];
            new MutationObserver(() => {
                const last = Array.from(document.querySelectorAll('#pg-chat .message.bot')).pop();
                if (last) window.replies.push(last.innerText.trim());
            }).observe(document.querySelector('#pg-chat'),
                       {subtree: true, childList: true, characterData: true});
        }""")
        marker = uuid.uuid4().hex[:8]
        final = send(page, f"Tell me about the sea and the wind ({marker}).")
        assert final["status"] == "done" and final["cache"] == "MISS", final
        shown = bubbles(page)[-1]
        partial = [v for v in page.evaluate("window.replies") if v and v != shown]
        assert partial, "the adapter's reply arrived in one piece instead of streaming"
        reply = exported(page, 2)["messages"][-1]["content"]  # as written, not as rendered
        assert reply.strip()

        run_ = kept_run(lab, name, marker)
        assert run_["status"] == "ok" and run_["text"] == reply

        def again(model: str) -> str:
            # A cache salt of its own: vLLM reuses no prefix block computed for the page's
            # request, so the greedy text is computed the same way.
            body = {**run_["request"], "model": model, "cache_salt": f"again-{marker}"}
            r = httpx.post(f"{lab.url}/v1/chat/completions", json=body, timeout=300,
                           headers={**headers, "Cache-Control": "no-store"})
            assert r.status_code == 200, r.text
            return str(r.json()["choices"][0]["message"]["content"])

        adapted, plain = again(name), again(DEFAULT_MODEL)
        assert adapted == run_["text"], (adapted, run_["text"])
        assert plain != adapted  # the adapter's weights change what the model says
        shot(page, "22-adapter")
    finally:
        httpx.post(f"{lab.url}/v1/unload_lora_adapter", headers=headers, timeout=60,
                   json={"lora_name": name})
