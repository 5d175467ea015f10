"""Hypothesis strategies for requests a client might send the predictor, well-formed or not.

Shared by the property tests of the request parser (tests/unit/test_serve_request_properties.py)
and of the real server (tests/integration/test_serve_fuzz.py). A `ClientRequest` is a route,
headers and raw body bytes: V1 JSON, V2 JSON, the V2 binary tensor extension, or bytes that
are none of these. Texts lean on the characters that have broken servers before: lone
surrogates, NULs and other controls, zero-width and other format characters, whitespace.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

#: The request's route: V1 predict, V1 explain, V2 infer, V2 infer of a named version
#: (predict and infer twice as often).
ROUTES = ("v1", "v1", "v1_explain", "v2", "v2", "v2_version")
#: Characters that are hard for a tokenizer, a JSON codec or a blank-text check.
TRICKY_CHARACTERS = (
    "\ud800",  # a lone high surrogate
    "\udfff",  # a lone low surrogate
    "\x00",
    "\x1b",
    "\x7f",
    "\x85",
    " ",
    "\t",
    "\n",
    "\xa0",
    "\u200b",  # zero-width space
    "\u202e",  # right-to-left override
    "\ufeff",  # byte order mark
    "\u3000",
    "\U0001f600",  # outside the BMP: a surrogate pair in JSON's escapes
    "\ue000",  # private use
)
CONTENT_TYPES = (
    "application/json",
    "application/json; charset=utf-8",
    "application/octet-stream",
    "application/cloudevents+json",
    "application/x-www-form-urlencoded",
    "text/plain",
)
CLOUDEVENT_HEADERS = {
    "ce-specversion": "1.0",
    "ce-id": "fuzz-1",
    "ce-source": "tests",
    "ce-type": "org.kubeflow.serving.inference.request",
}
DATATYPES = ("BYTES", "FP32", "INT64", "BOOL", "UINT8", "FP16", "bytes", "")


@dataclass(frozen=True)
class ClientRequest:
    """One request as it goes on the wire (the path is completed by the caller)."""

    route: str
    headers: dict[str, str]
    body: bytes


characters = st.one_of(
    st.characters(codec=None, exclude_categories=()),
    st.sampled_from(TRICKY_CHARACTERS),
)
# Joined by hand: `st.text` over this alphabet would drop the lone surrogates.
texts = st.lists(characters, max_size=24).map("".join)
#: Batches of ordinary texts, around --max-batch-size in the tests (8): accepted, or 413.
ordinary_batches = st.integers(min_value=1, max_value=12).flatmap(
    lambda n: st.lists(
        st.sampled_from(["great food", "slow service", "it was fine, I suppose", "café ☕"]),
        min_size=n,
        max_size=n,
    )
)
#: Numbers a JSON reader may choke on: past 64 bits, past a double, past Python's 4300 digits.
huge_numbers = st.one_of(
    st.integers(min_value=-(10**40), max_value=10**40),
    st.sampled_from([2**63, -(2**63) - 1, 10**400, 1e308, float("inf"), float("nan")]),
)
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-5, max_value=20),
    huge_numbers,
    st.floats(allow_nan=True, allow_infinity=True),
    texts,
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.one_of(texts, st.sampled_from(["text", "instances"])), children),
    ),
    max_leaves=12,
)


@st.composite
def nested(draw: st.DrawFn, values: st.SearchStrategy[Any]) -> Any:
    """`values` inside a few lists (`deep_bodies` nests thousands deep)."""
    value = draw(values)
    for _ in range(draw(st.sampled_from([0, 0, 1, 2, 64]))):
        value = [value]
    return value


#: Batches of any texts, within --max-batch-size in the tests (8).
text_batches = st.lists(texts, min_size=1, max_size=4)
v1_instances = st.lists(
    st.one_of(
        texts,
        st.fixed_dictionaries({"text": st.one_of(texts, json_values)}),
        json_values,
    ),
    max_size=10,
)
v1_documents = st.one_of(
    st.fixed_dictionaries({"instances": ordinary_batches}),
    st.fixed_dictionaries({"instances": text_batches}),
    st.fixed_dictionaries({"instances": st.one_of(v1_instances, nested(v1_instances))}),
    st.fixed_dictionaries({"instances": json_values}),
    json_values,
)

shapes = st.one_of(
    st.lists(st.one_of(st.integers(min_value=-2, max_value=12), huge_numbers), max_size=3),
    json_values,
)
tensor_data = st.one_of(
    st.lists(st.one_of(texts, json_scalars), max_size=10),
    ordinary_batches,
    nested(st.lists(texts, max_size=3)),
    json_values,
)
parameters = st.dictionaries(
    st.sampled_from(["binary_data_output", "binary_data", "binary_data_size", "content_type"]),
    json_scalars,
    max_size=2,
)
v2_tensors = st.fixed_dictionaries(
    {
        "name": st.one_of(st.just("text"), texts),
        "datatype": st.one_of(st.sampled_from(DATATYPES), texts),
        "shape": shapes,
        "data": tensor_data,
    },
    optional={"parameters": parameters},
)
v2_requests = st.fixed_dictionaries(
    {"inputs": st.one_of(st.lists(v2_tensors, max_size=2), json_values)},
    optional={
        "id": st.one_of(texts, json_scalars),
        "parameters": parameters,
        "outputs": st.lists(
            st.fixed_dictionaries(
                {"name": st.one_of(st.sampled_from(["label", "probabilities"]), texts)},
                optional={"parameters": parameters},
            ),
            max_size=3,
        ),
    },
)


@st.composite
def v2_well_formed(draw: st.DrawFn) -> dict[str, Any]:
    """A V2 request in this model's shape (one BYTES `text`), with any texts in it."""
    batch = draw(st.one_of(ordinary_batches, text_batches, text_batches))
    shape = [len(batch), 1] if draw(st.booleans()) else [len(batch)]
    data = [[t] for t in batch] if len(shape) == 2 and draw(st.booleans()) else batch
    tensor = {"name": "text", "datatype": "BYTES", "shape": shape, "data": data}
    return {"inputs": [tensor]}


v2_documents = st.one_of(v2_well_formed(), v2_well_formed(), v2_requests, json_values)


@st.composite
def json_bodies(draw: st.DrawFn, documents: st.SearchStrategy[Any]) -> bytes:
    """A document as JSON bytes; unescaped lone surrogates become invalid UTF-8."""
    document = draw(documents)
    # Mostly escaped, as most JSON writers do: lone surrogates then reach the parser as text.
    ascii_only = draw(st.sampled_from([True, True, False]))
    encoded = json.dumps(document, ensure_ascii=ascii_only, allow_nan=True)
    return encoded.encode("utf-8", "surrogatepass")


@st.composite
def deep_bodies(draw: st.DrawFn, route: str) -> bytes:
    """A request whose texts sit hundreds or thousands of arrays deep (a recursive reader
    fails past about a thousand)."""
    # Away from Python's recursion limit (1000 frames), where the outcome would depend on how
    # deep the reader's own stack already is.
    depth = draw(st.sampled_from([200, 5000, 20000]))
    inner = "[" * depth + json.dumps(draw(texts)) + "]" * depth
    if route.startswith("v1"):
        return ('{"instances": ' + inner + "}").encode("utf-8", "surrogatepass")
    tensor = '{"name": "text", "datatype": "BYTES", "shape": [1], "data": ' + inner + "}"
    return ('{"inputs": [' + tensor + "]}").encode("utf-8", "surrogatepass")


@st.composite
def damaged(draw: st.DrawFn, bodies: st.SearchStrategy[bytes]) -> bytes:
    """A body with a few bytes changed, cut off, or doubled."""
    body = bytearray(draw(bodies))
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        if not body:
            break
        at = draw(st.integers(min_value=0, max_value=len(body) - 1))
        how = draw(st.sampled_from(["flip", "cut", "insert"]))
        if how == "flip":
            body[at] = draw(st.integers(min_value=0, max_value=255))
        elif how == "cut":
            del body[at:]
        else:
            body[at:at] = draw(st.binary(min_size=1, max_size=4))
    return bytes(body)


@st.composite
def binary_tensor_bodies(draw: st.DrawFn) -> tuple[bytes, dict[str, str]]:
    """The V2 binary tensor extension: a JSON header, then raw tensor bytes."""
    raw_texts = draw(st.lists(st.binary(max_size=12), max_size=4))
    tail = b"".join(len(t).to_bytes(4, "little") + t for t in raw_texts)
    tail = draw(st.one_of(st.just(tail), damaged(st.just(tail)), st.binary(max_size=40)))
    tensor: dict[str, Any] = {
        "name": draw(st.one_of(st.just("text"), texts)),
        "datatype": draw(st.sampled_from(DATATYPES)),
        "shape": draw(st.one_of(st.just([len(raw_texts)]), shapes)),
        "parameters": {
            "binary_data_size": draw(st.one_of(st.just(len(tail)), huge_numbers, json_scalars))
        },
    }
    header = draw(json_bodies(st.just({"inputs": [tensor]})))
    declared = draw(
        st.one_of(
            st.just(str(len(header))),
            st.integers(min_value=-1, max_value=len(header) + len(tail) + 2).map(str),
            st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=8),
        )
    )
    headers = {"content-type": "application/octet-stream"}
    headers["inference-header-content-length"] = declared
    return header + tail, headers


@st.composite
def client_requests(draw: st.DrawFn) -> ClientRequest:
    """Any request to a predict, explain or infer route, mostly in the route's own protocol."""
    route = draw(st.sampled_from(ROUTES))
    # Mostly what a client of this route would send, where a mistake gets furthest in.
    headers: dict[str, str] = {}
    content_type = draw(
        st.one_of(st.just("application/json"), st.none(), st.sampled_from(CONTENT_TYPES))
    )
    if content_type is not None:
        headers["content-type"] = content_type
    if route.startswith("v1") and draw(st.integers(min_value=0, max_value=3)) == 0:
        headers.update(CLOUDEVENT_HEADERS)
    documents = v1_documents if route.startswith("v1") else v2_documents
    kind = draw(st.sampled_from(["json", "json", "json", "damaged", "deep", "bytes", "binary"]))
    if kind == "json":
        body = draw(json_bodies(documents))
    elif kind == "deep":
        body = draw(deep_bodies(route))
    elif kind == "damaged":
        body = draw(damaged(json_bodies(documents)))
    elif kind == "bytes":
        body = draw(st.binary(max_size=64))
    else:
        body, binary_headers = draw(binary_tensor_bodies())
        headers.update(binary_headers)
    return ClientRequest(route, headers, body)
