"""A seeded generator of hostile HTTP requests per route, and the checks every answer must pass: for the fuzz
test the suite keeps (tests/test_serve_fuzz.py) and the long run (benchmarks/fuzz_serve.py).

Families: deep nesting, wrong types (numbers for objects, lists for keys, non-strings for text), extreme
numbers (negative/huge seeds, Infinity/NaN, top_k past the vocabulary), unicode edge cases (lone surrogates,
NUL, RTL, combining marks, emoji), oversized bodies and texts, OpenAI parameters out of range or unsupported, wrong
content types, path traversal in model names, hostile KServe tensors (datatype, shape, parameters, binary lengths,
ids/mask/segment ranges), lying Content-Length and Inference-Header-Content-Length (raw sockets).
"""
from __future__ import annotations

import json
import random
import socket
import struct
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import httpx

TRACE_MARKERS = ("Traceback", 'File "/', "Exception in ASGI", "site-packages")


@dataclass
class Hostile:
    family: str
    route: str  # the route template, for counting
    method: str
    path: str
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=lambda: {"Content-Type": "application/json"})


@dataclass
class Routes:
    """What the server under test serves: the model's name, and which routes apply."""
    model: str
    embeddings: bool = True
    completions: bool = False
    raw_inputs: tuple[str, ...] = ("input_ids", "attention_mask", "token_type_ids")


def _j(obj: Any) -> bytes:
    return json.dumps(obj, allow_nan=True).encode()


UNICODE = ["\ud800", "\udfff", "a\ud83dz", "\x00", "\u202etxet", "e\u0301\u0301\u0301", "\U0001F600" * 50, "\ufeff",
           "\uffff", " \t\n", "\u200b" * 100, "٩(◕‿◕)۶", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢"]
WEIRD = [None, True, 0, -1, 1.5, 1e308, -(2 ** 63), 2 ** 64, "", "x", [], {}, [[]], {"a": 1}, [1, "a"], [None]]


def _nested(depth: int, leaf: Any = "x", brace: bool = False) -> bytes:
    if brace:
        return b'{"a":' * depth + _j(leaf) + b"}" * depth
    return b"[" * depth + _j(leaf) + b"]" * depth


def _raw_unicode_json(text: str) -> bytes:
    """A JSON string with \\u escapes as written (lone surrogates survive: json.dumps escapes them)."""
    return json.dumps(text).encode()


class Generator:
    def __init__(self, routes: Routes, seed: int = 17, max_body: int = 4 << 20):
        self.routes, self.rng, self.max_body = routes, random.Random(seed), max_body
        infer = f"/v2/models/{routes.model}/infer"
        self.makers: list[tuple[str, str, str, Callable[[], tuple[bytes, dict[str, str] | None, str]]]] = []
        if routes.embeddings:
            self._add("/v1/embeddings", "/v1/embeddings", self._embeddings)
            self._add("/v2/models/{name}/infer", infer, self._infer)
            self._add("/v1/classify", "/v1/classify", lambda: self._common("inputs"))
        if routes.completions:
            self._add("/v1/completions", "/v1/completions", self._completions)
        self._add("/v2/models/{name}/infer", "", self._traversal)

    def _add(self, route: str, path: str, maker: Callable[[], tuple[bytes, dict[str, str] | None, str]]) -> None:
        self.makers.append((route, "POST", path, maker))

    def requests(self, n: int) -> Iterator[Hostile]:
        for _ in range(n):
            route, method, path, maker = self.rng.choice(self.makers)
            out = maker()
            body, headers, family = out[0], out[1], out[2]
            if path == "" and len(out) > 3:  # traversal: the path is the payload
                path = out[3]  # type: ignore[misc]
            yield Hostile(family, route, method, path or "/", body,
                          headers if headers is not None else {"Content-Type": "application/json"})

    # --- families shared by the JSON routes -----------------------------------------------------------
    def _common(self, key: str) -> tuple[bytes, dict[str, str] | None, str]:
        r = self.rng
        pick = r.randrange(9)
        if pick == 0:
            return _nested(r.choice([64, 1000, 100_000]), brace=r.random() < 0.3), None, "deep nesting"
        if pick == 1:
            return _j({key: r.choice(WEIRD)}), None, "wrong types"
        if pick == 2:
            return _j(r.choice(WEIRD)), None, "wrong types"
        if pick == 3:
            return b'{"' + key.encode() + b'": ' + _raw_unicode_json(r.choice(UNICODE)) + b"}", None, "unicode"
        if pick == 4:
            return _j({key: [r.choice(UNICODE) for _ in range(r.randint(1, 4))]}), None, "unicode"
        if pick == 5:
            return (r.choice([b"", b"{", b"nul\x00l", b"\xff\xfe{}", b'{"a":1,}', b"NaN", b'{"' + key.encode() + b'":"x"}x']),
                    None, "malformed json")
        if pick == 6:
            ctype = r.choice(["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
                              "application/json; charset=latin-1", "", "application/octet-stream"])
            return _j({key: "hello"}), {"Content-Type": ctype}, "wrong content type"
        if pick == 7:
            return _j({key: ["x" * r.choice([70_000, 200_000])] * r.randint(1, 3)}), None, "oversized"
        return _j({key: "hello", r.choice(["foo", "__proto__", "", "a" * 300]): 1}), None, "unknown field"

    def _embeddings(self) -> tuple[bytes, dict[str, str] | None, str]:
        r = self.rng
        if r.random() < 0.6:
            return self._common("input")
        pick = r.randrange(4)
        if pick == 0:
            return _j({"input": ["ok"] * r.choice([65, 500, 4000])}), None, "oversized"
        if pick == 1:
            return _j({"input": "x", "encoding_format": r.choice(WEIRD + ["binary"])}), None, "wrong types"
        if pick == 2:
            return _j({"input": "x", "dimensions": r.choice([0, -1, 2 ** 70, 1.5, "384"])}), None, "extreme numbers"
        return _j({"input": "x", "model": r.choice(["../../etc/passwd", "\x00", "a" * 10_000, 5])}), None, "path traversal"

    def _completions(self) -> tuple[bytes, dict[str, str] | None, str]:
        r = self.rng
        if r.random() < 0.4:
            return self._common("prompt")
        pick = r.randrange(3)
        if pick == 0:
            name = r.choice(["seed", "top_k", "temperature", "top_p", "repetition_penalty", "max_tokens", "n"])
            value = r.choice([-1, -(2 ** 63), 2 ** 64, 2 ** 70, float("inf"), float("-inf"), float("nan"), 0, 1e308,
                              10 ** 9, "1", None, [], True])
            return _j({"prompt": "hi", "max_tokens": 2, name: value}), None, "extreme numbers"
        if pick == 1:
            name = r.choice(["logprobs", "echo", "best_of", "presence_penalty", "frequency_penalty", "suffix",
                             "logit_bias", "functions", "stream_options", "n"])
            value = r.choice([1, True, "x", {"1": 2}, {"include_usage": 1}, [[1, 2]], -3, 10 ** 6])
            return _j({"prompt": r.choice(["hi", [1, 2], [[1], [2, 3]], [-1], [10 ** 9]]), "max_tokens": 2, name: value}), \
                None, "openai parameters"
        return _j({"prompt": "hi", "max_tokens": 2, "stop": r.choice([[""], [1], ["a"] * 50, {"a": 1}, "x" * 1000])}), \
            None, "wrong types"

    def _infer(self) -> tuple[bytes, dict[str, str] | None, str]:
        r = self.rng
        if r.random() < 0.3:
            return self._common("inputs")
        text = {"name": "text", "datatype": "BYTES", "shape": [1], "data": ["hello"]}
        good = {"input_ids": [101, 7592, 102], "attention_mask": [1, 1, 1], "token_type_ids": [0, 0, 0]}
        ids = [{"name": n, "datatype": "INT64", "shape": [1, 3], "data": good.get(n, [0, 0, 0])}
               for n in self.routes.raw_inputs]
        pick = r.randrange(8)
        if pick == 0:
            return b'{"inputs":[{"name":"text","datatype":"BYTES","shape":[1],"data":["\\ud800"]}]}', None, "unicode"
        if pick == 1:
            return _j({"inputs": [dict(text, parameters=r.choice([5, "x", [], {"binary_data_size": "9"},
                                                                   {"a": {"b": 1}}]))]}), None, "parameters"
        if pick == 2:
            return _j({"inputs": [text], "parameters": r.choice([5, [1], "x"]),
                       "outputs": r.choice([None, 5, [5], [{"name": []}]])}), None, "parameters"
        if pick == 3:
            return _j({"inputs": [dict(text, datatype=r.choice([[], {}, 5, None, "FP128", "bytes"]))]}), None, "datatype"
        if pick == 4:
            return _j({"inputs": [dict(text, shape=r.choice([[4294967296, 4294967296], [2 ** 63], [-1], [1] * 40,
                                                              "1", [1.5], [True]]))]}), None, "shape"
        if pick == 5:
            name = r.choice(list(self.routes.raw_inputs))
            value = {"input_ids": r.choice([-1, 10 ** 9, 2 ** 62]), "attention_mask": r.choice([7, -3, 2]),
                     "token_type_ids": r.choice([2, -1, 99])}[name]
            bad = [dict(t, data=[value, 1, 0]) if t["name"] == name else t for t in ids]
            return _j({"inputs": bad}), None, "tensor values"
        if pick == 6:
            header = _j({"inputs": [dict(text, data=None, parameters={"binary_data_size": r.choice([4, 9, 10 ** 9])})]})
            blob = struct.pack("<I", r.choice([5, 2 ** 31, 0])) + b"hel"
            lie = r.choice([len(header), len(header) + 3, 0, 10 ** 9, -1, "x"])
            return header + blob, {"Content-Type": "application/octet-stream",
                                   "Inference-Header-Content-Length": str(lie)}, "lying lengths"
        return _j({"inputs": [dict(text, data=r.choice([[[["a"]], "b"], [1], [None], [["a", ["b"]]], "a" * 10]))]}), \
            None, "tensor values"

    def _traversal(self) -> tuple[bytes, dict[str, str] | None, str, str]:
        name = self.rng.choice(["..%2F..%2Fetc%2Fpasswd", "%2e%2e", "..", "a%00b", "%ff", "x" * 5000, "%5C..%5C"])
        suffix = self.rng.choice(["/infer", "/versions/..%2F1/infer", "/ready", ""])
        return _j({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["a"]}]}), None, \
            "path traversal", f"/v2/models/{name}{suffix}"


def problems(status: int, text: str, content_type: str) -> list[str]:
    """What is wrong with one answer: a 5xx, a body that is not JSON, or stack-trace text."""
    found = []
    if status >= 500 and status != 503:
        found.append(f"status {status}")
    if "json" not in content_type:
        found.append(f"content-type {content_type!r}")
    else:
        try:
            json.loads(text)
        except ValueError:
            found.append("body is not JSON")
    found += [f"trace text {m!r}" for m in TRACE_MARKERS if m in text]
    return found


def send(client: httpx.Client, url: str, req: Hostile) -> httpx.Response:
    return client.request(req.method, url + req.path, content=req.body, headers=req.headers)


def lying_content_length(url: str, path: str, declared: int, sent: bytes, wait: float) -> tuple[int, bytes]:
    """Declare ``declared`` bytes, send ``sent``, and read what comes back within ``wait`` seconds: (status, body).
    A status of 0 means the server closed the connection without an answer."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=wait) as s:
        s.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  f"Content-Length: {declared}\r\n\r\n".encode() + sent)
        data = b""
        try:
            while b"\r\n\r\n" not in data or len(data) < _expected(data):
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        except TimeoutError:
            pass
    if not data.startswith(b"HTTP/1.1 "):
        return 0, data
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def _expected(data: bytes) -> int:
    head, _, _ = data.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(head) + 4 + int(line.split(b":")[1])
    return len(data)
