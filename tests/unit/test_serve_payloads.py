"""Requests in, texts out; probabilities in, V1 and V2 bodies out (no server)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from kserve.protocol.infer_type import InferInput, InferRequest, RequestedOutput

from textops.components.serve import explain
from textops.components.serve.payloads import (
    BadRequestError,
    BatchTooLargeError,
    parse_request,
    v1_response,
    v2_response,
)
from textops.components.serve.runtime import ClassifierRuntime, load_runtime
from textops.components.serve.settings import BundleSource


def _v2(data: Any, shape: list[int], **kwargs: Any) -> InferRequest:
    name = kwargs.pop("name", "text")
    datatype = kwargs.pop("datatype", "BYTES")
    return InferRequest("m", [InferInput(name, shape, datatype, data)], **kwargs)


@pytest.fixture(scope="module")
def runtime(tiny_bundle_dir: Path) -> ClassifierRuntime:
    return load_runtime(BundleSource(tiny_bundle_dir, "5", "fp32"), intra_op_threads=1)


def test_v1_takes_strings_and_text_objects_in_order() -> None:
    parsed = parse_request({"instances": ["a", {"text": "b", "id": 3}, " c\x00"]}, {}, 8)
    assert (parsed.texts, parsed.protocol) == (["a", "b", " c\x00"], "v1")


def test_v1_raw_json_body_of_another_content_type_is_accepted() -> None:
    assert parse_request(b'{"instances": ["a"]}', {}, 8).texts == ["a"]


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        (b"not json", "not JSON"),
        ("a JSON string", "got a JSON string"),
        ([1, 2], "got a JSON array"),
        ({"inputs": ["a"]}, 'lacks "instances" (keys given: inputs)'),
        ({"instances": {"text": "a"}}, "must be a list, got a JSON object"),
        ({"instances": []}, "is empty"),
        ({"instances": ["a", 1.5]}, "instances[1] must be a string"),
        ({"instances": [{"body": "a"}]}, 'without a "text" field'),
        ({"instances": [{"text": None}]}, "instances[0].text must be a string, got a JSON null"),
    ],
)
def test_v1_mistakes_say_what_was_wrong(payload: Any, fragment: str) -> None:
    with pytest.raises(BadRequestError, match=None) as raised:
        parse_request(payload, {}, 8)
    assert fragment in str(raised.value)


def test_v2_takes_flat_nested_and_binary_texts() -> None:
    assert parse_request(_v2(["a", "b"], [2]), {}, 8).texts == ["a", "b"]
    assert parse_request(_v2([["a"], ["b"]], [2, 1]), {}, 8).texts == ["a", "b"]
    assert parse_request(_v2([b"caf\xc3\xa9"], [1]), {}, 8).texts == ["café"]
    deep: list[Any] = ["x"]
    for _ in range(5000):  # iterative flattening: no recursion limit
        deep = [deep]
    assert parse_request(_v2(deep, [1]), {}, 8).texts == ["x"]


def test_v2_id_comes_from_the_request_then_the_request_id_header() -> None:
    assert parse_request(_v2(["a"], [1], request_id="r1"), {}, 8).request_id == "r1"
    assert parse_request(_v2(["a"], [1]), {"x-request-id": "h1"}, 8).request_id == "h1"
    assert len(parse_request(_v2(["a"], [1]), {}, 8).request_id or "") == 36  # a uuid4


@pytest.mark.parametrize(
    ("request_", "fragment"),
    [
        (_v2(["a"], [1], name="input-0"), "must be named 'text'"),
        (_v2([1.0], [1], datatype="FP32"), "datatype BYTES, not FP32"),
        (_v2(["a", "b"], [3]), "shape [3] (3 elements) but 2 data elements"),
        (_v2(["a", "b"], [1, 2]), "shape [n] or [n, 1]"),
        (_v2(["a"], [-1]), "negative dimension"),
        (_v2([], [0]), "is empty"),
        (_v2([b"\xff"], [1]), "is not UTF-8"),
        (_v2(["a", None], [2]), "element 1 must be a string, got null"),
        (_v2(["a"], [1], parameters={"binary_data_output": "yes"}), "true or false"),
        (
            _v2(["a"], [1], request_outputs=[RequestedOutput("logits")]),
            "unknown output 'logits'",
        ),
        (InferRequest("m", []), "exactly one input tensor"),
    ],
)
def test_v2_mistakes_say_what_was_wrong(request_: InferRequest, fragment: str) -> None:
    with pytest.raises(BadRequestError) as raised:
        parse_request(request_, {}, 8)
    assert fragment in str(raised.value)


BLANK_TEXTS = ["", " ", "\t\r\n", "\x00", "\x1b\x07\x7f", "\u200b\ufeff", "\xa0\u3000\u2028"]


@pytest.mark.parametrize("text", BLANK_TEXTS)
def test_an_empty_or_blank_text_is_refused_by_index_in_both_protocols(text: str) -> None:
    with pytest.raises(BadRequestError, match=r"^instances\[1\] .*nothing to classify"):
        parse_request({"instances": ["fine", text]}, {}, 8)
    with pytest.raises(BadRequestError, match=r"^instances\[1\]\.text .*nothing to classify"):
        parse_request({"instances": [{"text": "fine"}, {"text": text}]}, {}, 8)
    with pytest.raises(BadRequestError, match=r"^input 'text' element 1 .*nothing to classify"):
        parse_request(_v2(["fine", text], [2]), {}, 8)
    with pytest.raises(BadRequestError, match=r"^input 'text' element 1 .*nothing to classify"):
        parse_request(_v2([b"fine", text.encode()], [2]), {}, 8)


@pytest.mark.parametrize("text", ["a", " a ", "\x00a", "?", "\U0001f600", "\ue000", "\u0600\u0661"])
def test_a_text_with_anything_to_classify_is_taken_as_sent(text: str) -> None:
    assert parse_request({"instances": [text]}, {}, 8).texts == [text]
    assert parse_request(_v2([text.encode()], [1]), {}, 8).texts == [text]


def test_a_lone_surrogate_is_refused_where_it_is() -> None:
    with pytest.raises(BadRequestError, match=r"instances\[0\] .*U\+D800 at character 0"):
        parse_request({"instances": ["\ud800 x"]}, {}, 8)
    with pytest.raises(BadRequestError, match=r"element 1 .*U\+DFFF at character 2"):
        parse_request(_v2(["ok", "ab\udfff"], [2]), {}, 8)
    pair = "\U0001f600"  # a surrogate pair in JSON, one character here: accepted
    assert parse_request({"instances": [pair]}, {}, 8).texts == [pair]


def test_more_texts_than_the_limit_is_413_for_both_protocols() -> None:
    with pytest.raises(BatchTooLargeError, match="3 texts; at most 2"):
        parse_request({"instances": ["a", "b", "c"]}, {}, 2)
    with pytest.raises(BatchTooLargeError, match="--max-batch-size"):
        parse_request(_v2(["a", "b", "c"], [3]), {}, 2)


def test_v1_response_names_every_label(runtime: ClassifierRuntime) -> None:
    probabilities = np.array([[0.2, 0.8], [0.9, 0.1]], dtype=np.float32)
    body = v1_response(probabilities, runtime)
    assert body["model_version"] == "5"
    assert [p["label"] for p in body["predictions"]] == ["positive", "negative"]
    assert body["predictions"][0]["probabilities"] == pytest.approx(
        {"negative": 0.2, "positive": 0.8}
    )


def test_v2_response_outputs_and_requested_subset(runtime: ClassifierRuntime) -> None:
    probabilities = np.array([[0.2, 0.8]], dtype=np.float32)
    parsed = parse_request(_v2(["a"], [1], request_id="q"), {}, 8)
    body, _ = v2_response(parsed, probabilities, runtime, "m").to_rest()
    assert isinstance(body, dict)
    assert (body["id"], body["model_version"]) == ("q", "5")
    outputs = {o["name"]: o for o in body["outputs"]}
    assert outputs["label"] | {"parameters": None} == {
        "name": "label",
        "shape": [1],
        "datatype": "BYTES",
        "data": ["positive"],
        "parameters": None,
    }
    assert outputs["probabilities"]["shape"] == [1, 2]
    assert outputs["probabilities"]["data"] == pytest.approx([0.2, 0.8])

    only = parse_request(_v2(["a"], [1], request_outputs=[RequestedOutput("label")]), {}, 8)
    subset, _ = v2_response(only, probabilities, runtime, "m").to_rest()
    assert isinstance(subset, dict)
    assert [o["name"] for o in subset["outputs"]] == ["label"]


def test_occlusion_scores_each_word_against_the_predicted_label(
    runtime: ClassifierRuntime,
) -> None:
    texts = ["great food here", "bad"]
    variants, spans = explain.occlusion_batch(texts)
    assert variants == ["great food here", "food here", "great here", "great food", "bad", ""]
    probabilities = runtime.predict_proba(variants, batch_size=8)
    body = explain.explanations(spans, probabilities, runtime)
    first = body["explanations"][0]
    best = runtime.labels.index(first["label"])
    assert [w["word"] for w in first["words"]] == ["great", "food", "here"]
    for word, variant in zip(first["words"], probabilities[1:4], strict=True):
        assert word["importance"] == pytest.approx(probabilities[0][best] - variant[best])
