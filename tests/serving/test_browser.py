"""The page in a real browser: Debian's headless Chromium driven by Playwright.

Starts the server on a free 127.0.0.1 port, uploads posters, waits for the genre bars, the
Grad-CAM heatmap and the similar posters, checks the phone layout does not overflow, and saves
screenshots to test-artifacts/.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from postergenre.serving.app import create_app
from postergenre.serving.server import bind_socket
from tests.conftest import REPO, SHARED_DATA, make_poster

CHROMIUM = Path("/usr/bin/chromium")
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
ARTIFACTS = REPO / "test-artifacts"
TIMEOUT_MS = 90_000  # the CPU may be busy with benchmarks

pytestmark = pytest.mark.skipif(
    not CHROMIUM.is_file(), reason="needs Debian's Chromium at /usr/bin/chromium"
)


@pytest.fixture(scope="module")
def server_url(multi_predictor, poster_index) -> Iterator[str]:
    """The real app under uvicorn in a background thread."""
    import uvicorn

    app = create_app(multi_predictor, poster_index)
    sock = bind_socket("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        for _ in range(600):
            if server.started or not thread.is_alive():
                break
            thread.join(0.1)
        assert server.started, "the server did not start"
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="module")
def posters(tmp_path_factory) -> list[Path]:
    """Two real posters from the shared data, or generated ones without it."""
    images = SHARED_DATA / "images"
    if images.is_dir():
        found = sorted(p for p in images.iterdir() if p.suffix.lower() in (".jpg", ".png"))
        if len(found) >= 2:
            return [found[0], found[len(found) // 2]]
    root = tmp_path_factory.mktemp("browser-posters")
    return [
        make_poster(root / "comedy.png", (230, 210, 40), seed=1, size=(180, 270)),
        make_poster(root / "drama.png", (40, 60, 190), seed=2, size=(180, 270)),
    ]


def _open(browser, url: str, **context_options):
    context = browser.new_context(**context_options)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.on(
        "console",
        lambda message: (
            problems.append(f"console {message.type}: {message.text}")
            if message.type == "error"
            else None
        ),
    )
    page.goto(url)
    page.wait_for_selector("#model .model-name")
    return context, page, problems


def _wait_for_results(page, n_cards: int, n_genres: int) -> None:
    page.wait_for_function(
        """([cards, genres]) => {
            const done = [...document.querySelectorAll('#results .card')]
                .filter((c) => c.getAttribute('aria-busy') === 'false');
            if (done.length !== cards) return false;
            const loaded = (img) => !img.hidden && img.complete && img.naturalWidth > 0;
            // similar posters load lazily: only the first card's are surely on screen
            const strip = [...done[0].querySelectorAll('.strip img')];
            return strip.length > 0 && strip.every(loaded) && done.every((card) =>
                card.querySelectorAll('.bar').length === genres
                && loaded(card.querySelector('.heat-img'))
                && card.querySelectorAll('.strip li').length > 0);
        }""",
        arg=[n_cards, n_genres],
        polling=200,
    )


def test_page_predicts_explains_and_finds_similar_posters(
    browser, server_url, posters, multi_predictor
):
    ARTIFACTS.mkdir(exist_ok=True)
    n_genres = len(multi_predictor.genres)
    context, page, problems = _open(browser, server_url, viewport={"width": 1280, "height": 900})
    try:
        assert page.locator("#model .genre-list li").count() == n_genres
        page.set_input_files("#file-input", [str(p) for p in posters])
        _wait_for_results(page, len(posters), n_genres)

        card = page.locator("#results .card").first
        assert card.locator(".bar").count() == n_genres
        assert card.locator(".bar-threshold").count() == n_genres  # multi-label: thresholds
        assert card.locator(".bar[aria-pressed='true']").count() == 1
        natural = card.locator(".heat-img").evaluate("img => img.naturalWidth")
        assert natural > 0

        # clicking another genre loads its heatmap
        last = card.locator(".bar").last
        genre = last.get_attribute("data-genre")
        before = card.locator(".heat-img").get_attribute("src")
        last.click()
        page.wait_for_function(
            """([card, before]) => {
                const img = card.querySelector('.heat-img');
                return img.getAttribute('src') !== before && img.complete && img.naturalWidth > 0;
            }""",
            arg=[card.element_handle(), before],
        )
        assert last.get_attribute("aria-pressed") == "true"
        assert genre in card.locator(".heat-caption").inner_text()
        assert card.locator(".heat-img").get_attribute("alt")
        page.screenshot(path=str(ARTIFACTS / "serve-desktop.png"), full_page=True)
        assert problems == []
    finally:
        context.close()


def test_phone_layout_does_not_overflow(browser, server_url, posters, multi_predictor):
    ARTIFACTS.mkdir(exist_ok=True)
    context, page, problems = _open(
        browser,
        server_url,
        viewport={"width": 390, "height": 844},
        device_scale_factor=2,
        is_mobile=True,
        has_touch=True,
    )
    try:
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        page.screenshot(path=str(ARTIFACTS / "serve-phone-empty.png"))
        page.set_input_files("#file-input", str(posters[0]))
        _wait_for_results(page, 1, len(multi_predictor.genres))
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        # accessible: a labelled file input, alt text on every visible image, bars are buttons
        assert page.get_by_label("Drop posters here").count() == 1
        unlabelled = "[...document.images].filter((i) => !i.hidden && !i.alt).length"
        assert page.evaluate(unlabelled) == 0
        assert page.get_by_role("button", name="Show its heatmap").count() == len(
            multi_predictor.genres
        )
        page.screenshot(path=str(ARTIFACTS / "serve-phone.png"), full_page=True)
        assert problems == []
    finally:
        context.close()


def test_page_shows_api_errors(browser, server_url, tmp_path):
    ARTIFACTS.mkdir(exist_ok=True)
    notes = tmp_path / "notes.txt"
    notes.write_text("not a poster")
    context, page, _ = _open(browser, server_url, viewport={"width": 1280, "height": 700})
    try:
        page.set_input_files("#file-input", str(notes))
        alert = page.locator("#results .card .error")
        alert.wait_for(state="visible")
        assert "notes.txt: not an image" in alert.inner_text()
        assert page.locator("#results .card").get_attribute("aria-busy") == "false"
        page.screenshot(path=str(ARTIFACTS / "serve-error.png"))
    finally:
        context.close()
