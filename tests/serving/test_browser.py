"""The page in a real browser: Debian's headless Chromium driven by Playwright.

Starts the server on a free 127.0.0.1 port, uploads posters, waits for the genre bars, the
Grad-CAM heatmap and the similar posters, checks the phone layout does not overflow, and saves
screenshots to test-artifacts/.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from postergenre.console import format_bytes
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
ALL_FORMATS = "JPEG, PNG, WebP, GIF, BMP, TIFF or AVIF"
CALIBRATED = "; percentages are calibrated: of genres shown at 60%, about 60% are right"
PER_GENRE_RULE = "✓ marks genres at or above their threshold (the tick on each bar)"
SINGLE_RULE = "✓ marks the most probable genre" + CALIBRATED


def _multi_rule(predictor) -> str:
    """The one-line rule the page shows for a calibrated multi-label model's thresholds."""
    shared = set(predictor.card.thresholds)
    if len(shared) == 1:
        return f"✓ marks every genre at or above {shared.pop() * 100:.1f}%" + CALIBRATED
    return PER_GENRE_RULE + CALIBRATED


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


def _open(browser, url: str, setup: Callable[[Any], None] | None = None, **context_options):
    """A new page at URL; SETUP(page) runs first (e.g. to route API calls)."""
    context = browser.new_context(**context_options)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    if setup is not None:
        setup(page)
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
        limits = page.locator("#drop-limits").inner_text()
        assert all(name in limits for name in ("BMP", "TIFF", "AVIF")), limits
        page.set_input_files("#file-input", [str(p) for p in posters])
        _wait_for_results(page, len(posters), n_genres)

        card = page.locator("#results .card").first
        assert card.locator(".bar").count() == n_genres
        assert card.locator(".bar-threshold").count() == n_genres  # multi-label: thresholds
        assert card.locator(".bar[aria-pressed='true']").count() == 1
        assert card.locator(".rule").inner_text() == _multi_rule(multi_predictor)
        for each in page.locator("#results .card").all():
            # bars come most probable first: the chips follow the same order
            bars = [b.get_attribute("data-genre") for b in each.locator(".bar").all()]
            chips = each.locator(".chips li").all_inner_texts()
            assert chips == [g for g in bars if g in chips]
        assert page.locator("#summary").inner_text() == f"{len(posters)} posters analysed"
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


def test_page_counts_only_readable_posters_as_analysed(browser, server_url, posters, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("not a poster")
    context, page, _ = _open(browser, server_url, viewport={"width": 1280, "height": 900})
    try:
        page.set_input_files("#file-input", [str(posters[0]), str(notes)])
        page.wait_for_function(
            """() => {
                const cards = [...document.querySelectorAll('#results .card')];
                return cards.length === 2
                    && cards.every((c) => c.getAttribute('aria-busy') === 'false');
            }"""
        )
        assert page.locator("#results .card.failed").count() == 1
        summary = page.locator("#summary")
        assert summary.inner_text() == "1 poster analysed · 1 could not be read"
        page.locator("#results .card:not(.failed) .remove").click()
        assert summary.inner_text() == "1 poster could not be read"
    finally:
        context.close()


def test_chips_are_ordered_by_probability(browser, server_url, posters, multi_predictor):
    """The API lists `predicted` in vocabulary order; the chips put the most probable first."""
    genres = list(multi_predictor.genres)
    probabilities = [0.2 + 0.6 * (i % 2) + 0.01 * i for i in range(len(genres))]
    body = {
        "model": "stub",
        "results": [
            {
                "filename": posters[0].name,
                "genres": [
                    {"genre": g, "probability": p}
                    for g, p in zip(genres, probabilities, strict=True)
                ],
                "predicted": genres,
            }
        ],
    }

    def setup(page) -> None:
        page.route("**/api/predict", lambda route: route.fulfill(json=body))

    context, page, _ = _open(browser, server_url, setup, viewport={"width": 1280, "height": 900})
    try:
        page.set_input_files("#file-input", str(posters[0]))
        chips = page.locator("#results .card .chips li")
        chips.first.wait_for()
        by_probability = [g for _, g in sorted(zip(probabilities, genres, strict=True))][::-1]
        assert by_probability != genres  # vocabulary order would fail this test
        assert chips.all_inner_texts() == by_probability
    finally:
        context.close()


def _change_model_info(change: Callable[[dict[str, Any]], None]) -> Callable[[Any], None]:
    """A page set-up that edits the /api/model answer before the page sees it."""

    def handle(route) -> None:
        response = route.fetch()
        info = response.json()
        change(info)
        route.fulfill(response=response, json=info)

    return lambda page: page.route("**/api/model", handle)


def test_page_lists_the_formats_the_server_accepts(browser, server_url):
    def only_two(info: dict[str, Any]) -> None:
        info["server"]["formats"] = ["JPEG", "WEBP"]

    def without_formats(info: dict[str, Any]) -> None:
        info["server"].pop("formats", None)

    for change, expected in ((only_two, "JPEG or WebP"), (without_formats, ALL_FORMATS)):
        context, page, problems = _open(browser, server_url, _change_model_info(change))
        try:
            assert page.locator("#drop-limits").inner_text().startswith(f"{expected} · up to ")
            assert problems == []
        finally:
            context.close()
    context, page, _ = _open(browser, server_url)
    try:
        html = page.request.get(server_url).text()  # before app.js rewrites it
        assert f'id="drop-limits">{ALL_FORMATS}<' in html
    finally:
        context.close()


def test_single_label_page_explains_its_rule(browser, server_url, posters, multi_predictor):
    def single(info: dict[str, Any]) -> None:
        info["task"] = "single"
        info.pop("thresholds", None)

    context, page, problems = _open(browser, server_url, _change_model_info(single))
    try:
        page.set_input_files("#file-input", str(posters[0]))
        _wait_for_results(page, 1, len(multi_predictor.genres))
        card = page.locator("#results .card").first
        assert card.locator(".rule").inner_text() == SINGLE_RULE
        assert card.locator(".bar-threshold").count() == 0
        assert problems == []
    finally:
        context.close()


def test_page_names_the_upload_limit_as_the_server_does(browser, server_url):
    # The server's limits are SI (format_bytes): the page must say the same size it does.
    def limit_64_kb(info: dict[str, Any]) -> None:
        info["server"]["max_upload_bytes"] = 64_000

    for change, limit in ((None, 10_000_000), (_change_model_info(limit_64_kb), 64_000)):
        context, page, problems = _open(browser, server_url, change)
        try:
            shown = page.locator("#drop-limits").inner_text()
            assert shown.endswith(f" · up to {format_bytes(limit)} each"), shown
            assert problems == []
        finally:
            context.close()


def test_page_shows_the_index_being_built_then_similar_posters(browser, server_url, posters):
    """While the index is built the page says how far it is and shows no similar posters; once
    /api/info says it is ready, cards already shown get theirs."""
    building = {"state": "building", "done": 3, "total": 10, "message": "", "size": 0}
    answered = {"info": 0}

    def setup(page):
        def info(route):
            answered["info"] += 1
            if answered["info"] <= 2:  # the first two polls: still building
                route.fulfill(json={"model": "m", "version": "0", "index": building})
            else:
                route.continue_()

        def model(route):  # the model as a server still building its first index tells it
            response = route.fetch()
            body = response.json()
            body["server"].update(similar=False, index_size=0)
            route.fulfill(response=response, json=body)

        page.route("**/api/info", info)
        page.route("**/api/model", model)

    context, page, problems = _open(browser, server_url, setup)
    try:
        # Predicates as arrow functions: a bare expression string can be evaluated by eval in
        # the page, which its Content-Security-Policy (no 'unsafe-eval') refuses.
        page.wait_for_function(
            "() => document.querySelector('#index-status').textContent.includes('3 of 10 posters')"
        )
        page.set_input_files("#file-input", str(posters[0]))
        page.wait_for_selector("#results .card[aria-busy='false']")
        page.wait_for_selector("#index-status", state="hidden")
        page.wait_for_function("() => document.querySelectorAll('#results .strip li').length > 0")
        assert answered["info"] >= 3
        assert not problems, problems
    finally:
        context.close()
