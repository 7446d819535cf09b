"""The Embeddings tab: the similarity matrix and its heatmap (pure functions), and the view in
headless Chromium against a lab of this module's own serving the embedded SmolLM2 as an
embedding model."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.processes import LabServer, lab_server
from textgen import EMBEDDING_MODEL
from ui.tabs.embeddings import cosine_matrix, heatmap_html, texts_of

WAIT_MS = 180_000


def test_the_similarity_of_vectors_is_their_cosine() -> None:
    matrix = cosine_matrix([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    assert matrix[0][0] == 1.0 and math.isclose(matrix[0][1], math.sqrt(0.5))
    assert matrix[1][0] == matrix[0][1] and matrix[2] == [0.0, 0.0, 0.0]


def test_the_heatmap_holds_every_pair_and_escapes_the_texts() -> None:
    page = heatmap_html(["<b>a</b>", "b"], [[1.0, 0.25], [0.25, 1.0]])
    assert page.count("<td ") == 4 and 'data-i="0" data-j="1" data-value="0.250000"' in page
    assert "<b>a</b>" not in page and "&lt;b&gt;a&lt;/b&gt;" in page
    assert texts_of(" one \n\n two\n") == ["one", "two"]


@pytest.fixture(scope="module")
def embedding_lab() -> Iterator[LabServer]:
    """`textgen serve` on the embedding model alone (its own engine, ~20-60 s to start)."""
    env = {"MODEL": EMBEDDING_MODEL, "REDIS_URL": "", "TEXT_GEN_API_TOKEN": "",
           "ENGINE_NICENESS": "19"}
    with lab_server(env, token="emb-token", wait_model=EMBEDDING_MODEL, timeout=420) as server:
        yield server


@pytest.mark.browser
@pytest.mark.engine
@pytest.mark.timeout(900)
def test_texts_are_embedded_and_compared_in_the_browser(embedding_lab: LabServer,
                                                        browser: Any) -> None:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    try:
        page.goto(f"{embedding_lab.base_url}/ui/")
        page.locator("input").first.fill("lab")
        page.locator("input[type=password]").fill(embedding_lab.token)
        page.get_by_role("button", name="Login").click()
        page.click("#tab-embeddings-button")
        page.wait_for_function(
            "() => (document.querySelector('#emb-model input') || {}).value?.includes('-embed')",
            polling=100)
        page.fill("#emb-texts textarea", "The cat sat on the mat.\nA kitten rests on a rug.\n"
                                         "Stock markets fell sharply today.")
        page.click("#emb-go")
        page.wait_for_selector("#emb-heatmap td[data-i='2'][data-j='2']")
        values = page.eval_on_selector_all(
            "#emb-heatmap td", "cells => cells.map(c => [+c.dataset.i, +c.dataset.j, +c.dataset.value])")
        matrix = {(i, j): v for i, j, v in values}
        assert len(matrix) == 9 and all(math.isclose(matrix[(i, i)], 1.0, abs_tol=1e-4)
                                        for i in range(3))
        assert matrix[(0, 1)] > max(matrix[(0, 2)], matrix[(1, 2)])  # the cat and the kitten
        figures = page.inner_text("#emb-figures")
        assert "MISS" in figures and "dimensions" in figures
        page.click("#emb-go")  # the same texts again: from the cache
        page.wait_for_function(
            "() => document.querySelector('#emb-figures').innerText.includes('HIT')", polling=100)
    finally:
        context.close()
