"""Blind votes over HTTP: POST /lab/arena/votes, GET the votes and the leaderboard. No engine:
a vote names configurations, it generates nothing."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from textgen import Settings

AUTH = {"Authorization": "Bearer arena-token"}


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    settings = Settings(MODEL="", VLLM_ENDPOINT="", METRICS_PORT=0, API_TOKEN="arena-token",  # type: ignore[arg-type]
                        LAB_DATA_DIR=tmp_path_factory.mktemp("arena"))
    with TestClient(create_app(settings, ui=False)) as c:
        yield c


def test_votes_make_a_leaderboard(client: TestClient) -> None:
    for winner in ("left", "left", "tie", "right", "left"):
        r = client.post("/lab/arena/votes", headers=AUTH, json={
            "left": "big", "right": "small", "winner": winner, "arena": "api-test"})
        assert r.status_code == 200, r.text
        assert r.json()["object"] == "arena.vote"
    votes = client.get("/lab/arena/votes", headers=AUTH, params={"arena": "api-test"}).json()
    assert [v["winner"] for v in votes["data"]] == ["left", "left", "tie", "right", "left"]
    board = client.get("/lab/arena/leaderboard", headers=AUTH,
                       params={"arena": "api-test"}).json()
    assert [row["config"] for row in board["data"]] == ["big", "small"]
    big = board["data"][0]
    assert (big["votes"], big["wins"], big["ties"], big["losses"]) == (5, 3, 1, 1)
    assert big["low"] <= big["rating"] <= big["high"]
    empty = client.get("/lab/arena/leaderboard", headers=AUTH, params={"arena": "none"})
    assert empty.json()["data"] == []


@pytest.mark.parametrize("body", [{"left": "a", "right": "b", "winner": "both"},
                                  {"left": "a", "right": "a", "winner": "left"},
                                  {"left": "a", "winner": "left"}])
def test_a_bad_vote_is_a_400_in_the_envelope(client: TestClient, body: dict) -> None:
    r = client.post("/lab/arena/votes", headers=AUTH, json=body)
    assert r.status_code == 400, r.text
    assert set(r.json()["error"]) == {"message", "type", "param", "code"}


def test_votes_need_the_token(client: TestClient) -> None:
    assert client.get("/lab/arena/leaderboard").status_code == 401
