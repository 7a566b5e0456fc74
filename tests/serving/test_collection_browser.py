"""The collection page in a real browser (Debian's headless Chromium driven by Playwright): open
a collection, filter it, correct a poster, reload, and find the correction kept, in the page and
in corrections.csv. One server and one browser for the module; screenshots go to
test-artifacts/."""

from __future__ import annotations

import csv
import shutil
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from postergenre.curation.collection import open_collection
from postergenre.serving.app import create_app
from postergenre.serving.server import bind_socket
from tests.serving.test_browser import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, TIMEOUT_MS
from tests.serving.test_collection_routes import LABEL_ISSUES

pytestmark = pytest.mark.skipif(
    not CHROMIUM.is_file(), reason="needs Debian's Chromium at /usr/bin/chromium"
)


@pytest.fixture(scope="module")
def served(multi_predictor, collection_folder, tmp_path_factory) -> Iterator[tuple[str, Path]]:
    """(URL, collection folder): the app on a copy of the collection under uvicorn."""
    import uvicorn

    folder = tmp_path_factory.mktemp("browser-collection") / "index"
    shutil.copytree(collection_folder, folder)
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(sys.modules, LABEL_ISSUES, None)  # the mislabelled sort: not available
        app = create_app(multi_predictor, collection=open_collection(folder, multi_predictor))
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
            yield f"http://127.0.0.1:{sock.getsockname()[1]}/", folder
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


def _open(browser, url: str, setup=None):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    if setup is not None:
        setup(page)
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.on(
        "console",
        lambda m: problems.append(f"console: {m.text}") if m.type == "error" else None,
    )
    page.goto(url + "collection")
    page.wait_for_selector("#grid .tile")
    return context, page, problems


def _tiles_loaded(page, count: int) -> None:
    page.wait_for_function(
        """(count) => {
            const tiles = [...document.querySelectorAll('#grid .tile')];
            return tiles.length === count && document.querySelector('#grid')
                .getAttribute('aria-busy') === 'false';
        }""",
        arg=count,
        polling=100,
    )


def test_filter_correct_reload_and_the_correction_is_kept(browser, served):
    url, folder = served
    ARTIFACTS.mkdir(exist_ok=True)
    context, page, problems = _open(browser, url)
    try:
        _tiles_loaded(page, 48)
        assert page.locator("#count").inner_text() == "48 posters match"
        assert page.locator("#page-of").inner_text() == "Page 1 of 1"
        assert page.locator("#live-model").inner_text().startswith("Live model: ")
        assert page.locator("#retrain-status").inner_text() == ""
        # The mislabelled sort says why it is not offered.
        option = page.locator("#f-sort option[value='mislabelled']")
        assert option.is_disabled() and "not available yet" in option.inner_text()
        page.wait_for_function(  # thumbnails load
            "() => [...document.querySelectorAll('#grid .tile img')].slice(0, 4)"
            ".every((img) => img.complete && img.naturalWidth > 0)"
        )

        # Filter: search titles, then open the first poster found.
        page.fill("#f-q", "film 1")
        _tiles_loaded(page, 5)
        assert page.locator("#count").inner_text() == "5 posters match"
        first = page.locator("#grid .tile").first
        name = first.locator(".tile-name").inner_text()
        assert name.startswith("Film 1")
        first.focus()
        page.keyboard.press("Enter")  # keyboard-friendly: tiles are buttons
        detail = page.locator("#detail")
        detail.wait_for(state="visible")
        assert page.locator("#d-name").inner_text() == name
        assert page.locator("#d-bars li").count() == 3
        page.wait_for_function(
            "() => { const img = document.querySelector('#d-heat');"
            " return !img.hidden && img.complete && img.naturalWidth > 0; }"
        )
        page.wait_for_selector("#d-similar .similar-item img")
        page.screenshot(path=str(ARTIFACTS / "collection-detail.png"))

        # Correct it: Drama only.
        for box in page.locator("#d-genres input").all():
            box.set_checked(box.get_attribute("value") == "Drama")
        page.click("#d-save")
        page.wait_for_function(
            "() => document.querySelector('#d-saved').textContent.startsWith('Saved')"
        )
        page.keyboard.press("Escape")
        detail.wait_for(state="hidden")
        tile = page.locator(f"#grid .tile:has-text('{name}')")
        assert tile.locator(".badge").inner_text() == "✓ reviewed"
        page.screenshot(path=str(ARTIFACTS / "collection-desktop.png"), full_page=True)
        assert problems == []
    finally:
        context.close()

    # Reload: the correction is kept, and corrections.csv holds it.
    context, page, problems = _open(browser, url)
    try:
        page.select_option("#f-reviewed", "true")
        _tiles_loaded(page, 1)
        tile = page.locator("#grid .tile").first
        assert tile.locator(".tile-name").inner_text() == name
        assert tile.locator(".tile-genres li").all_inner_texts() == ["Drama"]
        tile.click()
        page.locator("#detail").wait_for(state="visible")
        checked = page.locator("#d-genres input:checked")
        assert [b.get_attribute("value") for b in checked.all()] == ["Drama"]
        assert page.locator("#d-saved").inner_text().startswith("Reviewed 20")
        assert problems == []
    finally:
        context.close()
    with (folder / "corrections.csv").open(encoding="utf-8") as handle:
        reviewed = [row for row in csv.DictReader(handle) if row["reviewed"] == "1"]
    assert [(r["title"], r["genres"]) for r in reviewed] == [(name, "Drama")]
    assert reviewed[0]["reviewed_at"].endswith("Z")


def test_a_read_only_collection_says_so_and_disables_saving(browser, served):
    url, _ = served

    def read_only(page) -> None:
        def handle(route) -> None:
            response = route.fetch()
            info = {**response.json(), "writable": False, "folder": "/media/posters"}
            route.fulfill(response=response, json=info)

        page.route("**/api/collection/info", handle)

    context, page, problems = _open(browser, url, read_only)
    try:
        notice = page.locator("#notice")
        notice.wait_for(state="visible")
        assert "read-only (/media/posters)" in notice.inner_text()
        assert page.locator("#retrain").is_disabled()
        page.locator("#grid .tile").first.click()
        page.locator("#detail").wait_for(state="visible")
        assert page.locator("#d-save").is_disabled() and page.locator("#d-accept").is_disabled()
        assert problems == []
    finally:
        context.close()
