"""The live demo: `compact-lm web` writes the site, `compact-lm serve` serves it, and Chromium (driven by
Playwright) types into the page as a person would.

The page's suggestions after each keystroke must be the Python Autocompleter's `complete(text, 3)`, same
texts in the same order; Tab and a click append a suggestion; Backspace follows; a truncated model shows
the error box; the page fetches nothing but its own files. Screenshots (desktop 1280x800, phone 390x844,
the error) go to the test's temporary folder, and also to $COMPACT_LM_SCREENSHOTS when that is set.

The browser tests need Chromium at /usr/bin/chromium (Debian's), the playwright package, and
onnxruntime-web in web/node_modules (`npm ci --ignore-scripts` in web/); .ci/run installs all three. A
machine without them skips those tests with the reason; the site writer and server tests run anyway.
"""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from compact_lm.autocomplete import Autocompleter
from compact_lm.web import CDN_DIST, ORT_BUNDLE, ORT_WASM, SITE_MARKER, default_ort_dist

from cli_helpers import assert_one_line_error, run

CHROMIUM = Path("/usr/bin/chromium")
# Debian's Chromium, headless; without the background-networking flags it tries the network at start-up
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
DESKTOP, PHONE = {"width": 1280, "height": 800}, {"width": 390, "height": 844}
TYPED = "Alice was beg"      # word completions mid-word and the next word after a space
ORT_GLUE = "ort-wasm-simd-threaded.mjs"   # the JS glue of ORT_WASM, loaded as a file only from another origin
TIMEOUT = 20.0               # seconds for the page to load or to answer a keystroke


def _browser_missing() -> str | None:
    """Why the browser tests cannot run here, or None."""
    if not CHROMIUM.exists():
        return f"no Chromium at {CHROMIUM} (apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (pip install playwright)"
    if default_ort_dist() is None:
        return "no onnxruntime-web in web/node_modules (npm ci --ignore-scripts in web/)"
    return None


def cli(*argv, check: bool = True) -> subprocess.CompletedProcess:
    """`compact-lm ARGV` in a fresh process, as a person runs it."""
    done = subprocess.run([sys.executable, "-m", "compact_lm", *map(str, argv)], capture_output=True, text=True,
                          timeout=120)
    if check:
        assert done.returncode == 0, done.stderr
    return done


# ---------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def model_files(tiny_model_path, tmp_path_factory):
    """The tiny trained GRU as a step graph and a sequence graph."""
    from compact_lm import load
    from compact_lm.export import export_model
    folder = tmp_path_factory.mktemp("web_model")
    model = load(tiny_model_path)
    export_model(model, folder / "tiny.onnx")
    export_model(model, folder / "tiny-seq.onnx", sequence=True)
    return folder / "tiny.onnx", folder / "tiny-seq.onnx"


@pytest.fixture(scope="module")
def python_completer(model_files):
    """The Python Autocompleter on the same step graph, with the page's settings (beam 4, 16 characters)."""
    return Autocompleter(model_files[0], beam=4, max_chars=16)


@pytest.fixture(scope="module")
def site(model_files, tmp_path_factory):
    """A site written by `compact-lm web` (local onnxruntime-web) and what it printed."""
    reason = _browser_missing()
    if reason:
        pytest.skip(reason)
    folder = tmp_path_factory.mktemp("site") / "site"
    done = cli("web", model_files[0], "--sequence", model_files[1], "--out", folder)
    return folder, done.stdout


@pytest.fixture(scope="module")
def broken_site(model_files, tmp_path_factory):
    """A site whose model.onnx was cut in half after it was written."""
    if _browser_missing():
        pytest.skip(_browser_missing())
    folder = tmp_path_factory.mktemp("broken") / "site"
    cli("web", model_files[0], "--out", folder)
    model = folder / "model.onnx"
    model.write_bytes(model.read_bytes()[: model.stat().st_size // 2])
    return folder


class Server:
    """`compact-lm serve DIR --port 0` in a subprocess; `url` is what it printed."""

    def __init__(self, folder: Path, log: Path):
        self.log = log
        # faulthandler: a server that does not stop writes where each of its threads is (stop() shows it).
        # Ctrl-C raises KeyboardInterrupt as in a terminal: a shell starts a background job (`pytest ... &`) with
        # SIGINT ignored, which its children inherit, and Python then leaves it ignored.
        command = ("import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
                   "from compact_lm.cli import main; sys.exit(main(sys.argv[1:]))")
        self.process = subprocess.Popen([sys.executable, "-X", "faulthandler", "-c", command, "serve", str(folder),
                                         "--port", "0"], stdout=subprocess.PIPE, stderr=open(log, "w"), text=True)
        line = self.process.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        if not match:
            self.process.kill()
            pytest.fail(f"compact-lm serve printed {line!r}; stderr: {log.read_text()}")
        self.url, self.port = match.group(0), int(match.group(1))

    def stop(self) -> int:
        """Ctrl-C, as a person stops it; returns the exit code."""
        self.process.send_signal(signal.SIGINT)
        try:
            return self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.send_signal(signal.SIGABRT)   # faulthandler writes every thread's stack to the log
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
            pytest.fail(f"compact-lm serve did not stop on Ctrl-C; its threads:\n{self.log.read_text()[-6000:]}")
        finally:
            if self.process.poll() is None:
                self.process.kill()


@pytest.fixture(scope="module")
def server(site, tmp_path_factory):
    served = Server(site[0], tmp_path_factory.mktemp("serve") / "serve.log")
    yield served
    assert served.stop() == 0, "compact-lm serve did not exit 0 on Ctrl-C"


@pytest.fixture(scope="module")
def browser():
    if _browser_missing():
        pytest.skip(_browser_missing())
    from playwright.sync_api import sync_playwright
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory):
    """Where screenshots go: the test's temporary folder, plus $COMPACT_LM_SCREENSHOTS if set."""
    folders = [tmp_path_factory.mktemp("screenshots")]
    if os.environ.get("COMPACT_LM_SCREENSHOTS"):
        folders.append(Path(os.environ["COMPACT_LM_SCREENSHOTS"]))

    def save(page, name: str) -> Path:
        first = folders[0] / f"{name}.png"
        page.screenshot(path=str(first), full_page=True)
        for folder in folders[1:]:
            folder.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(first, folder / first.name)
        print(f"screenshot: {first}")
        return first
    return save


# ------------------------------------------------------------------------------------------ helpers
def wait_for(page, expression: str, arg=None, timeout: float = TIMEOUT):
    """Poll a JS function of `arg` until it returns something truthy (the page's CSP forbids the eval
    that Playwright's wait_for_function uses)."""
    end = time.monotonic() + timeout
    while True:
        value = page.evaluate(expression, arg)
        if value:
            return value
        if time.monotonic() > end:
            state = page.evaluate("() => JSON.stringify(window.compactLM ?? null)")
            pytest.fail(f"timed out waiting for {expression} ({arg!r}); page state: {state[:500]}")
        time.sleep(0.02)


def open_page(browser, url: str, viewport: dict, **options):
    page = browser.new_page(viewport=viewport, **options)
    page.errors = []
    page.on("pageerror", lambda error: page.errors.append(str(error)))
    page.goto(url)
    wait_for(page, "() => window.compactLM && window.compactLM.status !== 'loading' && "
                   "(window.compactLM.status !== 'ready' || window.compactLM.shown)")
    return page


def shown_for(page, text: str) -> dict:
    """Wait until the page shows suggestions for `text` (the text before the caret); returns what it shows,
    read from the chips on screen and the page's state."""
    wait_for(page, "t => window.compactLM.shown && window.compactLM.shown.context === t", text)
    return page.evaluate("""() => ({
        chips: [...document.querySelectorAll('#suggestions .chip')].map(c => c.dataset.text),
        labels: [...document.querySelectorAll('#suggestions .chip .chip-text')].map(c => c.textContent),
        next: [...document.querySelectorAll('#next li')].map(li => li.dataset.text),
        state: window.compactLM.shown,
        value: document.querySelector('#text').value,
        latency: document.querySelector('#latency').textContent,
    })""")


def assert_same_suggestions(shown: dict, completer: Autocompleter, text: str) -> None:
    expected = completer.complete(text, 3)
    assert shown["chips"] == [s.text for s in expected], f"after {text!r}"
    for got, want in zip(shown["state"]["suggestions"], expected):
        assert got["prob"] == pytest.approx(want.prob, rel=1e-4, abs=1e-7), f"after {text!r}"
    next_chars = completer.next_chars(text, 5)
    assert shown["next"] == [s.text for s in next_chars], f"after {text!r}"


# ------------------------------------------------------------------------------------- browser tests
def test_typing_key_by_key_shows_the_python_suggestions(browser, server, site, python_completer, model_files,
                                                         screenshots):
    folder, printed = site
    assert "copied" in printed and ORT_BUNDLE in printed and "compact-lm serve" in printed
    page = open_page(browser, server.url, DESKTOP)
    assert page.evaluate("() => window.compactLM.status") == "ready", page.evaluate("() => window.compactLM.error")

    # the model card says what the file is
    card = {key: page.text_content(f"#card-{key}") for key in ("file", "bytes", "cell", "hidden", "precision", "bpc",
                                                               "corpus", "vocab", "runtime")}
    meta = python_completer.backend.metadata
    assert card["file"] == "tiny.onnx + tiny-seq.onnx"
    assert f"{model_files[0].stat().st_size:,} bytes" in card["bytes"]
    assert card["cell"] == "GRU, 1 layer" and card["hidden"] == "16" and card["precision"] == "fp32"
    assert card["bpc"].startswith(f"{meta['metrics']['val']['bpc']:.3f} bpc")
    assert card["corpus"].startswith("corpus.txt") and card["vocab"] == f"{meta['vocab_size']} characters"
    assert "onnxruntime-web" in card["runtime"] and "1 thread" in card["runtime"]

    # before any key: the first word's suggestions
    assert_same_suggestions(shown_for(page, ""), python_completer, "")
    area = page.locator("#text")
    area.focus()
    for i, char in enumerate(TYPED, 1):
        page.keyboard.type(char)
        shown = shown_for(page, TYPED[:i])
        assert_same_suggestions(shown, python_completer, TYPED[:i])
        assert re.fullmatch(r"\d+(\.\d+)? ms", shown["latency"]), shown["latency"]
    assert len(set(shown["chips"])) == 3 and all(label for label in shown["labels"])
    screenshots(page, "web-desktop")

    # Tab appends the first suggestion and a space, and the suggestions follow the new text
    first = shown["chips"][0]
    page.keyboard.press("Tab")
    accepted = TYPED + first + " "
    assert_same_suggestions(shown_for(page, accepted), python_completer, accepted)
    assert area.input_value() == accepted
    page.keyboard.press("Control+z")       # the browser's undo takes an accepted suggestion back
    shown_for(page, TYPED)
    page.keyboard.press("Tab")
    assert_same_suggestions(shown_for(page, accepted), python_completer, accepted)
    # a comma typed right after replaces the automatic space, as Session.accept + type(",") does in Python
    page.keyboard.type(",")
    swapped = TYPED + first + ","
    assert_same_suggestions(shown_for(page, swapped), python_completer, swapped)
    assert area.input_value() == swapped
    python_session = python_completer.session()
    python_session.type(TYPED)
    python_session.accept(first)
    python_session.type(",")
    assert python_session.text == swapped

    # Backspace, twice
    page.keyboard.press("Backspace")
    page.keyboard.press("Backspace")
    shortened = swapped[:-2]
    shown = shown_for(page, shortened)
    assert shown["value"] == shortened
    assert_same_suggestions(shown, python_completer, shortened)

    # a click on the second chip appends it and a space, and the focus stays in the text area
    second = shown["chips"][1]
    page.locator("#suggestions .chip").nth(1).click()
    clicked = shortened + second + " "
    assert_same_suggestions(shown_for(page, clicked), python_completer, clicked)
    assert area.input_value() == clicked
    assert page.evaluate("() => document.activeElement.id") == "text"

    # a letter after an accept keeps the automatic space
    page.keyboard.type("x")
    assert_same_suggestions(shown_for(page, clicked + "x"), python_completer, clicked + "x")
    page.keyboard.press("Backspace")
    shown_for(page, clicked)
    # a paste (several characters at once: the sequence graph) and a caret moved into the text
    area.press("Control+End")
    page.keyboard.insert_text("said the")
    pasted = clicked + "said the"
    assert_same_suggestions(shown_for(page, pasted), python_completer, pasted)
    area.press("Control+Home")
    for _ in range(5):
        area.press("ArrowRight")
    assert_same_suggestions(shown_for(page, pasted[:5]), python_completer, pasted[:5])
    # Esc hides the suggestions; then Tab leaves the text area as usual, the text unchanged
    page.keyboard.press("Escape")
    wait_for(page, "() => window.compactLM.shown.suggestions.length === 0")
    assert page.locator("#suggestions .chip").count() == 0
    page.keyboard.press("Tab")
    assert area.input_value() == pasted and page.evaluate("() => document.activeElement.id") != "text"
    assert page.errors == []
    page.close()


def test_phone_viewport_fits_and_a_tap_appends(browser, server, python_completer, screenshots):
    page = open_page(browser, server.url, PHONE, has_touch=True, is_mobile=True, device_scale_factor=2)
    page.locator("#text").focus()
    page.keyboard.type("The Queen s")
    shown = shown_for(page, "The Queen s")
    assert_same_suggestions(shown, python_completer, "The Queen s")
    widths = page.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
    assert widths[0] <= widths[1], f"the page scrolls sideways on a phone: {widths}"
    for selector in ("#text", "#suggestions .chip", "#next li", "#latency", "#card-cell"):
        box = page.locator(selector).first.bounding_box()
        assert box and box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"] + 0.5, selector
    screenshots(page, "web-phone")
    page.locator("#suggestions .chip").first.tap()
    tapped = "The Queen s" + shown["chips"][0] + " "
    assert_same_suggestions(shown_for(page, tapped), python_completer, tapped)
    assert page.locator("#text").input_value() == tapped
    page.close()


def test_learning_my_words_is_opt_in_kept_and_forgotten(browser, server, python_completer):
    """Off by default; on, the page's suggestions are Python's with the same user words learned from the same
    keys; the words (only the words) survive a reload in localStorage; "Forget my words" empties them."""
    from compact_lm.autocomplete import Autocompleter
    from compact_lm.user_words import UserWords
    typed, again = "Zyzzyx and Zyzzyx ", "Zyz"
    page = open_page(browser, server.url, DESKTOP)
    assert not page.locator("#learn").is_checked()
    page.locator("#learn").check()
    area = page.locator("#text")
    area.focus()
    page.keyboard.type(typed + again)
    shown = shown_for(page, typed + again)
    learning = Autocompleter(python_completer.backend, user_words=UserWords(), context_cache=True)
    session = learning.session()
    for char in typed + again:
        session.type(char)
    expected = session.suggestions(3)
    assert shown["chips"] == [s.text for s in expected] and "zyx" in shown["chips"]
    assert [c["prob"] for c in shown["state"]["suggestions"]] == pytest.approx([s.prob for s in expected], rel=1e-4)
    stored = json.loads(page.evaluate("() => localStorage.getItem('compact-lm-user-words')"))
    assert stored["words"]["Zyzzyx"]["count"] == 2 and typed.strip() not in json.dumps(stored)
    assert "2 words learned" in page.text_content("#learn-detail")

    # moving the caret back over words and forth again, or a Backspace inside the text, learns and takes back nothing
    for keys in (["Control+Home"], ["Control+End"], ["ArrowLeft"] * 5 + ["Backspace"], ["Control+End"]):
        for key in keys:
            page.keyboard.press(key)
        shown_for(page, page.evaluate("() => { const a = document.querySelector('#text'); "
                                      "return a.value.slice(0, a.selectionEnd); }"))
    after = json.loads(page.evaluate("() => localStorage.getItem('compact-lm-user-words')"))
    assert after == stored

    page.reload()
    wait_for(page, "() => window.compactLM.status === 'ready' && window.compactLM.shown")
    assert page.locator("#learn").is_checked()
    page.locator("#text").focus()
    page.keyboard.type(again)
    assert "zyx" in shown_for(page, again)["chips"]
    page.locator("#forget").click()
    wait_for(page, "() => !window.compactLM.shown.suggestions.some(s => s.text === 'zyx')")
    assert json.loads(page.evaluate("() => localStorage.getItem('compact-lm-user-words')"))["words"] == {}
    page.locator("#learn").uncheck()
    assert page.evaluate("() => localStorage.getItem('compact-lm-learn')") == "0"
    assert_same_suggestions(shown_for(page, again), python_completer, again)
    assert page.errors == []
    page.close()


def stored_words(page) -> list[str]:
    return sorted(json.loads(page.evaluate("() => localStorage.getItem('compact-lm-user-words')"))["words"])


def test_the_word_in_progress_when_learning_is_ticked_is_not_learned(browser, server):
    """web.md: ticking "Learn my words" learns neither the text already in the box nor the word the caret is in,
    finished by Tab, by a space taken back and typed again, or in one burst with the words after it."""
    page = open_page(browser, server.url, DESKTOP)
    page.locator("#text").focus()
    page.keyboard.type("my secret Qwer")
    shown_for(page, "my secret Qwer")
    page.locator("#learn").check()
    page.locator("#text").focus()
    chip = shown_for(page, "my secret Qwer")["chips"][0]
    page.keyboard.press("Tab")
    shown_for(page, f"my secret Qwer{chip} ")
    page.keyboard.press("Backspace")
    page.keyboard.type(" ")
    page.keyboard.insert_text("and Zyzzyx ")   # one input event: one pass of the page's loop
    shown_for(page, f"my secret Qwer{chip} and Zyzzyx ")
    assert stored_words(page) == ["Zyzzyx", "and"]
    assert page.errors == []
    page.close()


def test_the_held_word_ends_with_the_text_it_was_in(browser, server):
    page = open_page(browser, server.url, DESKTOP)
    page.locator("#text").focus()
    page.keyboard.type("Qwertyx")
    page.locator("#learn").check()
    page.locator("#text").focus()
    page.keyboard.press("Control+a")
    page.keyboard.type("hello ")
    shown_for(page, "hello ")
    assert stored_words(page) == ["hello"]
    page.close()


def test_tab_inside_the_text_before_a_space_takes_that_space(browser, server, python_completer):
    """No second space; attaching punctuation typed next goes before the space: "said| said" + "," -> "said, said"."""
    page = open_page(browser, server.url, DESKTOP)
    area = page.locator("#text")
    area.focus()
    page.keyboard.type("the Queen s said")
    area.press("Control+Home")
    for _ in range(len("the Queen s")):
        area.press("ArrowRight")
    chips = shown_for(page, "the Queen s")["chips"]
    page.keyboard.press("Tab")
    accepted = "the Queen s" + chips[0] + " "
    shown_for(page, accepted)
    assert area.input_value() == accepted + "said"
    assert page.evaluate("() => document.querySelector('#text').selectionEnd") == len(accepted)
    page.keyboard.type(",")
    shown_for(page, accepted[:-1] + ", ")
    assert area.input_value() == accepted[:-1] + ", said"
    assert page.errors == []
    page.close()


def test_tab_with_a_selection_keeps_the_selected_text(browser, server):
    page = open_page(browser, server.url, DESKTOP)
    area = page.locator("#text")
    area.focus()
    page.keyboard.type("the Queen s said")
    page.evaluate("() => document.querySelector('#text').setSelectionRange(10, 11, 'forward')")   # "s" selected
    chips = shown_for(page, "the Queen s")["chips"]
    page.keyboard.press("Tab")
    assert area.input_value() == "the Queen s" + chips[0] + " said"
    page.close()


def test_learning_on_the_page_weighs_words_by_their_context(browser, server, python_completer):
    """With learning on, the page's shares of two learned words are Python's with the context cache (site.json's
    contextCache), not the dictionary's alone."""
    from compact_lm.autocomplete import Autocompleter
    from compact_lm.user_words import UserWords
    typed = "Zyzzyx rose. Zyzzyb fell and Zyzzyx rose. Zyz"
    page = open_page(browser, server.url, DESKTOP)
    page.locator("#learn").check()
    page.locator("#text").focus()
    page.keyboard.type(typed)
    shown = shown_for(page, typed)
    probs = {}
    for cache in (True, False):
        session = Autocompleter(python_completer.backend, user_words=UserWords(), context_cache=cache).session()
        for char in typed:   # key by key, as the page types (a paste keeps no states for the cache)
            session.type(char)
        probs[cache] = {s.text: s.prob for s in session.suggestions(3)}
    got = {c["text"]: c["prob"] for c in shown["state"]["suggestions"]}
    assert {"zyx", "zyb"} <= got.keys() and got.keys() == probs[True].keys()
    assert got == pytest.approx(probs[True], rel=1e-4)
    assert got["zyb"] != pytest.approx(probs[False]["zyb"], rel=1e-2)
    assert page.errors == []
    page.close()


def test_punctuation_over_an_accepts_space_learns_the_word_once(browser, server, python_completer):
    """Accept a learned word, then ",": the page's words are Python's after type, accept, type "," (the word learned
    once: a backspace and the comma would take it back and learn it again, moving the clock by two)."""
    from compact_lm.autocomplete import Autocompleter
    from compact_lm.user_words import UserWords
    page = open_page(browser, server.url, DESKTOP)
    page.locator("#learn").check()
    page.locator("#text").focus()
    page.keyboard.type("Zyzzyx and Zy")
    chips = shown_for(page, "Zyzzyx and Zy")["chips"]
    assert "zzyx" in chips
    page.locator("#suggestions .chip").nth(chips.index("zzyx")).click()
    shown_for(page, "Zyzzyx and Zyzzyx ")
    page.keyboard.type(",")
    shown_for(page, "Zyzzyx and Zyzzyx,")
    words = UserWords()
    session = Autocompleter(python_completer.backend, user_words=words, context_cache=True).session()
    for char in "Zyzzyx and Zy":   # key by key, as the page types (a paste keeps no states for the cache)
        session.type(char)
    session.accept("zzyx")
    session.type(",")
    assert session.text == "Zyzzyx and Zyzzyx,"
    stored = json.loads(page.evaluate("() => localStorage.getItem('compact-lm-user-words')"))
    assert stored == words.to_json() and stored["clock"] == 3   # Zyzzyx, and, Zyzzyx
    shown = shown_for(page, session.text)
    assert shown["chips"] == [s.text for s in session.suggestions(3)]
    assert [c["text"] for c in shown["state"]["next"]] == [s.text for s in session.next_chars(5)]
    # a key between the accept and the comma (Delete, at the end: nothing to delete) ends the page's swap: the
    # textarea keeps the space, and so does the session
    page.locator("#suggestions .chip").first.click()
    accepted = session.text + shown["chips"][0] + " "
    shown_for(page, accepted)
    page.keyboard.press("Delete")
    page.keyboard.type(",")
    kept = shown_for(page, accepted + ",")
    assert kept["value"] == accepted + ","
    assert kept["next"] == [s.text for s in python_completer.next_chars(accepted + ",", 5)]
    assert page.errors == []
    page.close()


def test_the_page_asks_for_what_compact_lm_web_was_given(browser, model_files, tmp_path):
    """`compact-lm web -k 2 --beam 1 --max-chars 3 --no-context-cache`: the page shows Python's completions at those
    settings, and learning mixes the user's words without the context cache."""
    from compact_lm.user_words import UserWords
    folder = tmp_path / "site"
    cli("web", model_files[0], "--out", folder, "-k", "2", "--beam", "1", "--max-chars", "3", "--no-context-cache")
    served = Server(folder, tmp_path / "serve.log")
    try:
        page = open_page(browser, served.url, DESKTOP)
        page.locator("#text").focus()
        page.keyboard.type("the ")
        shown = shown_for(page, "the ")
        expected = Autocompleter(model_files[0], beam=1, max_chars=3).complete("the ", 2)
        assert shown["chips"] == [s.text for s in expected] and len(expected) == 2
        # (each setting matters here: the page's defaults would show other words)
        for other in ({"beam": 4, "max_chars": 3}, {"beam": 1, "max_chars": 16}):
            assert Autocompleter(model_files[0], **other).complete("the ", 2) != expected
        assert page.errors == []
        page.close()
        page = open_page(browser, served.url, DESKTOP)   # a new browser context: nothing learned yet
        page.locator("#learn").check()
        page.locator("#text").focus()
        typed = "Zyzzyx rose. Zyzzyb fell and Zyzzyx rose. Zyz"
        page.keyboard.type(typed)
        got = {c["text"]: c["prob"] for c in shown_for(page, typed)["state"]["suggestions"]}
        session = Autocompleter(model_files[0], beam=1, max_chars=3, user_words=UserWords()).session()
        for char in typed:
            session.type(char)
        assert got == pytest.approx({s.text: s.prob for s in session.suggestions(2)}, rel=1e-4)
        assert page.errors == []
        page.close()
    finally:
        assert served.stop() == 0


def test_the_page_fetches_only_its_own_files_and_nothing_while_typing(browser, server):
    page = browser.new_page(viewport=DESKTOP)
    requests = []
    page.on("request", lambda request: requests.append(request.url))
    page.goto(server.url)
    wait_for(page, "() => window.compactLM && window.compactLM.status === 'ready' && window.compactLM.shown")
    loaded = list(requests)
    assert all(url.startswith(server.url) for url in loaded), loaded
    names = {url[len(server.url):] for url in loaded}
    assert {"", "site.json", "app.js", "style.css", "compact_lm.js", "model.onnx", "model-seq.onnx",
            f"ort/{ORT_BUNDLE}", f"ort/{ORT_WASM}"} == names
    page.locator("#text").focus()
    page.keyboard.type("Alice said")
    shown_for(page, "Alice said")
    page.keyboard.press("Tab")
    wait_for(page, "() => window.compactLM.shown.context.length > 10")
    assert requests == loaded, "the page made a request while typing"
    page.close()


def test_a_page_opened_from_a_file_says_to_serve_it(browser, site):
    page = browser.new_page(viewport=DESKTOP)
    page.goto(site[0].joinpath("index.html").as_uri())
    time.sleep(0.5)
    assert page.evaluate("() => document.body.dataset.status") == "boot"   # app.js is blocked on file://
    hint = page.locator(".boot-hint")
    assert hint.is_visible() and "compact-lm serve" in hint.text_content()
    page.close()


def test_a_truncated_model_shows_the_error_box(browser, broken_site, tmp_path_factory, screenshots):
    served = Server(broken_site, tmp_path_factory.mktemp("serve_broken") / "serve.log")
    try:
        page = open_page(browser, served.url, DESKTOP)
        assert page.evaluate("() => window.compactLM.status") == "error"
        box = page.locator("#error")
        assert box.is_visible()
        assert "tiny.onnx could not be loaded" in box.text_content()
        assert "not a valid ONNX model" in page.text_content("#error-message")
        assert page.locator("#text").is_disabled()
        assert page.text_content("#status") == "Error"
        assert page.text_content("#card-file") == "tiny.onnx"   # from site.json: what failed to load
        screenshots(page, "web-error")
        page.close()
    finally:
        assert served.stop() == 0


def test_a_runtime_from_the_cdn_loads_across_origins(browser, model_files, python_completer, tmp_path, monkeypatch):
    """--ort-url: the page imports onnxruntime-web from another origin, which the CSP allows; here a stand-in
    for jsDelivr on another local port (with the CORS header jsDelivr sends), serving the same files."""
    import threading
    from functools import partial
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
    import compact_lm.web as web

    class Cdn(SimpleHTTPRequestHandler):
        extensions_map = {**SimpleHTTPRequestHandler.extensions_map, **web.MIME_TYPES}

        def end_headers(self):
            self.send_header("Access-Control-Allow-Origin", "*")
            super().end_headers()

        def log_message(self, *args):
            pass

    version = web.pinned_ort_version()
    dist = tmp_path / "cdn" / "npm" / f"onnxruntime-web@{version}" / "dist"
    dist.mkdir(parents=True)
    for name in (ORT_BUNDLE, ORT_GLUE, ORT_WASM):   # what jsDelivr has of onnxruntime-web's dist, as far as the page goes
        shutil.copyfile(default_ort_dist() / name, dist / name)
    cdn = ThreadingHTTPServer(("127.0.0.1", 0), partial(Cdn, directory=str(tmp_path / "cdn")))
    threading.Thread(target=cdn.serve_forever, daemon=True).start()
    origin = f"http://127.0.0.1:{cdn.server_address[1]}"
    monkeypatch.setattr(web, "JSDELIVR", origin)
    monkeypatch.setattr(web, "CDN_DIST", origin + "/npm/onnxruntime-web@{version}/dist/")
    web.write_site(model_files[0], tmp_path / "site", ort_url=True, log=lambda line: None)
    served = Server(tmp_path / "site", tmp_path / "serve.log")
    try:
        page = browser.new_page(viewport=DESKTOP)
        requests = []
        page.on("request", lambda request: requests.append(request.url))
        page.goto(served.url)
        wait_for(page, "() => window.compactLM && window.compactLM.status !== 'loading' && "
                       "(window.compactLM.status !== 'ready' || window.compactLM.shown)")
        assert page.evaluate("() => window.compactLM.status") == "ready", page.evaluate("() => window.compactLM.error")
        # from another origin, the bundle loads its JS glue as a file too (it uses the copy inside only same-origin)
        assert {url for url in requests if url.startswith(origin)} == {
            f"{origin}/npm/onnxruntime-web@{version}/dist/{name}" for name in (ORT_BUNDLE, ORT_GLUE, ORT_WASM)}
        assert all(url.startswith((origin, served.url)) for url in requests), requests
        assert_same_suggestions(shown_for(page, ""), python_completer, "")
        assert "jsDelivr" in page.text_content("#card-runtime") and "jsDelivr" in page.text_content("#privacy")
        page.close()
    finally:
        cdn.shutdown()
        assert served.stop() == 0


# -------------------------------------------------------------------- the site writer and the server
def test_web_writes_a_site_and_rewrites_only_a_site(model_files, tmp_path, capsys):
    out = tmp_path / "site"
    code, printed, err = run(capsys, "web", model_files[0], "--out", out, "--ort-url")
    assert code == 0, err
    site = json.loads((out / SITE_MARKER).read_text())
    version = site["ort"]["version"]
    assert site["ort"]["module"] == CDN_DIST.format(version=version) + ORT_BUNDLE
    assert f"onnxruntime-web@{version}" in printed and "compact-lm serve" in printed
    assert not (out / "ort").exists()
    html = (out / "index.html").read_text()
    assert "connect-src 'self' https://cdn.jsdelivr.net" in html and "__CONTENT_SECURITY_POLICY__" not in html
    assert sorted(p.name for p in out.iterdir()) == sorted(["index.html", "app.js", "style.css", "compact_lm.js",
                                                            "model.onnx", SITE_MARKER])
    # writing again over a site: fine, and a file of the user's stays
    (out / "notes.txt").write_text("mine")
    code, _, err = run(capsys, "web", out / "model.onnx", "--out", out, "--ort-url")
    assert code == 0, err
    assert (out / "notes.txt").read_text() == "mine"
    assert (out / "model.onnx").read_bytes() == model_files[0].read_bytes()
    # a folder that is not a site is refused, untouched
    other = tmp_path / "thesis"
    other.mkdir()
    (other / "thesis.tex").write_text("precious")
    code, _, err = run(capsys, "web", model_files[0], "--out", other)
    assert_one_line_error(code, err, "--out", "not empty and holds no compact-lm site")
    assert [p.name for p in other.iterdir()] == ["thesis.tex"]


def test_web_checks_the_model_before_writing(model_files, tiny_model_path, tmp_path, capsys):
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(model_files[0].read_bytes()[:300])
    cases = [([cut], "cut.onnx is not a valid ONNX model"),
             ([tiny_model_path], "is a .npz model: the page runs an exported ONNX step graph"),
             ([model_files[1]], "is a sequence graph: give the step graph"),
             ([model_files[0], "--sequence", model_files[0]], "sequence"),
             ([tmp_path / "nope.onnx"], "does not exist"),
             ([model_files[0], "--ort-dir", tmp_path], "--ort-dir")]
    for argv, fragment in cases:
        out = tmp_path / "out"
        code, _, err = run(capsys, "web", *argv, "--out", out)
        assert_one_line_error(code, err, fragment)
        assert not out.exists(), argv


@pytest.mark.parametrize("options, named", [({"bem": 2}, "'bem'"), ({"beam": 0}, "'beam'"),
                                             ({"maxChars": True}, "'maxChars'"), ({"maxChars": 1}, "'maxChars'"),
                                             ({"contextCache": 1}, "'contextCache'")])
def test_web_refuses_a_page_option_it_does_not_know_or_cannot_use(model_files, tmp_path, options, named):
    from compact_lm.errors import CompactLMError
    from compact_lm.web import write_site
    with pytest.raises(CompactLMError, match=named) as raised:
        write_site(model_files[0], tmp_path / "site", options=options, log=lambda line: None)
    assert "\n" not in str(raised.value) and not (tmp_path / "site").exists()


def test_serve_gives_the_page_its_mime_types(tmp_path, model_files):
    site = tmp_path / "site"
    cli("web", model_files[0], "--out", site, "--ort-url")
    (site / "ort").mkdir()
    for name in (ORT_BUNDLE, ORT_WASM):
        (site / "ort" / name).write_bytes(b"\0asm")
    served = Server(site, tmp_path / "serve.log")
    try:
        expected = {"": "text/html", "app.js": "text/javascript", f"ort/{ORT_BUNDLE}": "text/javascript",
                    f"ort/{ORT_WASM}": "application/wasm", "model.onnx": "application/octet-stream",
                    "site.json": "application/json", "style.css": "text/css"}
        for name, mime in expected.items():
            with urllib.request.urlopen(served.url + name, timeout=10) as response:
                assert response.headers["Content-Type"].split(";")[0] == mime, name
                assert response.headers["Cache-Control"] == "no-cache"
        with pytest.raises(urllib.error.HTTPError) as listing:
            urllib.request.urlopen(served.url + "ort/", timeout=10)
        assert listing.value.code == 404
    finally:
        assert served.stop() == 0
    assert "GET /model.onnx" in (tmp_path / "serve.log").read_text()


def test_serve_gzips_the_runtime_for_a_browser_that_accepts_it(tmp_path, model_files):
    import gzip
    site = tmp_path / "site"
    cli("web", model_files[0], "--out", site, "--ort-url")
    (site / "ort").mkdir()
    wasm = b"\0asm" + bytes(range(256)) * 4000   # compressible, like the real runtime
    (site / "ort" / ORT_WASM).write_bytes(wasm)
    served = Server(site, tmp_path / "serve.log")
    try:
        asked = urllib.request.Request(served.url + f"ort/{ORT_WASM}", headers={"Accept-Encoding": "gzip"})
        with urllib.request.urlopen(asked, timeout=10) as response:
            body = response.read()
            assert response.headers["Content-Encoding"] == "gzip"
            assert response.headers["Content-Type"] == "application/wasm"
            assert gzip.decompress(body) == wasm and len(body) < len(wasm) / 10
        with urllib.request.urlopen(served.url + f"ort/{ORT_WASM}", timeout=10) as response:
            assert response.headers["Content-Encoding"] is None and response.read() == wasm
        onnx_asked = urllib.request.Request(served.url + "model.onnx", headers={"Accept-Encoding": "gzip"})
        with urllib.request.urlopen(onnx_asked, timeout=10) as response:   # dense weights: sent as they are
            assert response.headers["Content-Encoding"] is None
            assert response.read() == (site / "model.onnx").read_bytes()
    finally:
        assert served.stop() == 0


def test_serve_refuses_a_folder_without_a_site(tmp_path, capsys):
    code, _, err = run(capsys, "serve", tmp_path / "nope")
    assert_one_line_error(code, err, "does not exist")
    code, _, err = run(capsys, "serve", tmp_path)
    assert_one_line_error(code, err, "holds no index.html", "compact-lm web")
