"""What the lab says when it loaded or unloaded an adapter on every replica of a remote model
(textgen.remote_adapters). On a real vLLM server: tests/api/test_lora.py."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from textgen import BackendUnavailable, RequestRejected
from textgen.remote_adapters import check_every_replica_agreed, message

SERVERS = [SimpleNamespace(url="http://a:8000"), SimpleNamespace(url="http://b:8000")]
OK = (200, "Success: LoRA adapter 'x' added successfully.")
MISSING = (404, '{"error": {"message": "No adapter found for /x", "type": "NotFoundError", '
                '"param": null, "code": 404}}')


def test_every_replica_said_yes() -> None:
    check_every_replica_agreed("m", "load", "x", SERVERS, [OK, OK])  # type: ignore[arg-type]


def test_one_refusal_from_all_is_passed_on_with_its_status_and_words() -> None:
    with pytest.raises(RequestRejected) as refused:
        check_every_replica_agreed("m", "load", "x", SERVERS, [MISSING, MISSING])  # type: ignore[arg-type]
    assert refused.value.status == 404 and refused.value.message == "No adapter found for /x"


@pytest.mark.parametrize("answers", [[OK, MISSING], [OK, (0, "cannot connect")],
                                     [(500, "boom"), (500, "boom")]])
def test_a_split_outcome_is_a_502_that_says_what_each_replica_answered(answers) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(BackendUnavailable) as split:
        check_every_replica_agreed("m", "load", "x", SERVERS, answers)  # type: ignore[arg-type]
    assert "http://a:8000" in split.value.message and "http://b:8000" in split.value.message


def test_a_message_is_read_from_the_envelope_or_taken_as_it_is() -> None:
    assert message(MISSING[1]) == "No adapter found for /x"
    assert message('{"message": "old form"}') == "old form"
    assert message("  plain text \n") == "plain text"
