"""The curl and Python examples of README.md and docs/*.md, run as written against the real server.

Which fenced blocks run (the rule, no list of lines):
- in a ```sh or ```bash block, each command (continuation lines joined) that is `curl` to the
  local server (`localhost:8000` or `$URL`);
- a ```python block that calls `requests.`;
- but not an example that names any other host (a fly.dev app, a photo on the web): tests send
  nothing off this machine.
Everything else in those blocks (make, fly, training, gunicorn itself) is not a server call.

The server is the README's gunicorn command (harness.servers.GunicornServer), serving a 32 px
model trained here on seven classes named like the docs' (cat, dog, fox, ...), so `label=cat`
is a class and `top` shows its default length; FEEDBACK_DIR is set, as the corrections
example's set-up line does. An example that mentions API_KEY goes to a second server started
with one. The examples run in a folder holding generated cat.jpg, dog.png and photo.jpg.
Each must exit 0 with only 2xx answers, and each JSON answer must have the documented shape:
the /openapi.json schema, and for /predict the keys of the docs' answer example. A Python
example must print what its comments promise ("# 400 invalid_image").
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest
import requests

from harness.images import encode, photo
from harness.servers import GunicornServer
from tests.app.openapi_check import check_response
from tests.conftest import ROOT, run_training

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.M | re.S)
LOCAL_URL = re.compile(r"(?:\$URL|localhost:8000)(/[\w./-]*)?")
OTHER_HOST = re.compile(r"https?://(?!localhost:8000)[^\s\"'/]+")
CLASSES = {"cat": (220, 30, 30), "dog": (30, 200, 40), "fox": (30, 40, 220),
           "owl": (220, 220, 30), "elk": (220, 30, 220), "bat": (30, 220, 220),
           "yak": (240, 240, 240)}
API_KEY = "doc-example-key"
# Every answer also has its curl status on stderr, so a 4xx cannot pass as a printed error body.
CURL = 'curl() { command curl --silent --show-error --write-out "%{stderr}HTTP %{http_code}\\n" "$@"; }'
PROMISED_OUTPUT = re.compile(r"#\s*(\d{3} [a-z_]+)\s*$", re.M)
# Non-JSON answers: what each must contain.
TEXT_ANSWERS = {"/metrics": "classifier_http_requests_total", "/report": "<html", "/": "<html"}


@dataclass(frozen=True)
class Example:
    doc: str
    line: int
    language: str  # "sh" (one curl command) or "python" (one block)
    code: str

    def __str__(self) -> str:
        return f"{self.doc}:{self.line}"


def _curl_commands(doc: str, first_line: int, body: str):
    command, start = "", first_line
    for number, line in enumerate(body.splitlines(), first_line):
        if not command:
            start = number
        command += line
        if command.endswith("\\"):
            command += "\n"
            continue
        if (command.split() or [""])[0] == "curl" and LOCAL_URL.search(command) \
                and not OTHER_HOST.search(command):
            yield Example(doc, start, "sh", command)
        command = ""


def doc_examples(docs=DOCS) -> list[Example]:
    found = []
    for path in docs:
        text = path.read_text()
        for fence in FENCE.finditer(text):
            language, body = fence.groups()
            first_line = text.count("\n", 0, fence.start(2)) + 1
            name = path.relative_to(ROOT).as_posix()
            if language in ("sh", "bash"):
                found += _curl_commands(name, first_line, body)
            elif language == "python" and "requests." in body and not OTHER_HOST.search(body):
                found.append(Example(name, first_line, "python", body))
    return found


def documented_answer() -> dict:
    """The answer example of the README (```json with "top"), which serving.md repeats."""
    text = (ROOT / "README.md").read_text()
    blocks = [json.loads(body) for language, body in FENCE.findall(text)
              if language == "json" and '"top"' in body]
    assert len(blocks) == 1, "README.md should show one /predict answer"
    return blocks[0]


def documented_top_default() -> int:
    """The default length of `top`, from serving.md's table of answer fields."""
    row = next(line for line in (ROOT / "docs" / "serving.md").read_text().splitlines()
               if line.startswith("| `top` |"))
    return int(re.search(r"Default: (\d+)", row).group(1))


EXAMPLES = doc_examples()


def test_the_rule_finds_the_examples_that_matter():
    """README's "Ask it from another program" and serving.md's curl, Python and corrections
    examples; none from another host or that is not curl."""
    by_doc = {(e.doc, e.language): 0 for e in EXAMPLES}
    for e in EXAMPLES:
        by_doc[e.doc, e.language] += 1
    assert by_doc[("README.md", "sh")] >= 7 and by_doc[("README.md", "python")] == 1, by_doc
    assert by_doc[("docs/serving.md", "sh")] >= 18, by_doc
    assert by_doc[("docs/serving.md", "python")] == 1, by_doc
    assert not any("fly.dev" in e.code or "wikimedia" in e.code for e in EXAMPLES)
    assert all(e.code.startswith("curl") for e in EXAMPLES if e.language == "sh")


@pytest.fixture(scope="module")
def doc_model(tmp_path_factory) -> Path:
    data = tmp_path_factory.mktemp("doc-classes")
    for index, (label, colour) in enumerate(CLASSES.items()):
        (data / label).mkdir()
        for n in range(6):
            photo((48, 40), seed=100 * index + n, colour=colour).save(data / label / f"{n}.png")
    out = tmp_path_factory.mktemp("doc-model") / "models" / "export.pkl"
    result = run_training(data, "--no-pretrained", "--size", 32, "--epochs", 1, "--bs", 8,
                          "--no-augment", "--lr", "1e-2", "--out", out)
    assert result.returncode == 0, result.stdout + result.stderr
    return out


@pytest.fixture(scope="module")
def servers(doc_model, tmp_path_factory):
    """{"plain": server, "keyed": server with API_KEY}, each started when first asked for."""
    started = {}

    def server(name: str) -> GunicornServer:
        if name not in started:
            folder = tmp_path_factory.mktemp(f"doc-server-{name}")
            env = {"WEB_CONCURRENCY": "1", "THREADS": "2", "FEEDBACK_DIR": str(folder / "fb")}
            if name == "keyed":  # the review queue needs the key (docs/serving.md)
                env.update(API_KEY=API_KEY, REVIEW_DIR=str(folder / "review"))
            started[name] = GunicornServer(doc_model, env=env,
                                           log_path=folder / "gunicorn.log").start()
        return started[name]

    yield server
    for running in started.values():
        running.stop()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """Where the examples run: the image files they name."""
    folder = tmp_path_factory.mktemp("doc-examples")
    (folder / "cat.jpg").write_bytes(encode(photo((64, 48), seed=1, colour=CLASSES["cat"]),
                                            "JPEG"))
    (folder / "dog.png").write_bytes(encode(photo((64, 48), seed=2, colour=CLASSES["dog"])))
    (folder / "photo.jpg").write_bytes(encode(photo((64, 48), seed=3), "JPEG"))
    return folder


def check_predict_answer(body: dict, command: str) -> None:
    """The keys of the docs' answer example; `top` as long as asked, else the documented
    default; "explanation" exactly when asked for."""
    documented = documented_answer()
    answers = body["predictions"] if "predictions" in body else [body]
    top_k = re.search(r"top_k=(\d+)", command)
    for answer in answers:
        extra = {"explanation"} if "explain=1" in command else set()
        extra |= {"filename"} if "predictions" in body else set()
        assert set(answer) == set(documented) | extra, answer.keys()
        assert all(set(t) == set(documented["top"][0]) for t in answer["top"])
        assert len(answer["top"]) == int(top_k.group(1) if top_k else documented_top_default())


def check_curl_output(example: Example, status: int, output: str, workdir: Path,
                      doc: dict) -> None:
    command = example.code
    path = LOCAL_URL.search(command).group(1) or "/"
    if "|" in command:
        return  # the pipe's reader checked it (its exit status counts: pipefail)
    target = re.search(r"(?:-o\s+|>\s*)(\S+)", command)
    body = (workdir / target.group(1)).read_text() if target else output
    if re.search(r"\s-i\s", command):
        status_line, _, body = body.partition("\n\n")  # text mode: \r\n read as \n
        assert status_line.startswith("HTTP/"), status_line
    if path in TEXT_ANSWERS:
        assert TEXT_ANSWERS[path] in body.lower(), body[:300]
        return
    method = "post" if re.search(r"\s(-F|-d|--data-binary)\s", command) else "get"
    answer = json.loads(body)
    check_response(doc, path, method, SimpleNamespace(status_code=status, json=lambda: answer))
    if path == "/predict":
        check_predict_answer(answer, command)


def run_example(example: Example, server: GunicornServer, workdir: Path):
    env = {**os.environ, "URL": server.url, "API_KEY": API_KEY,
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    code = example.code.replace("http://localhost:8000", server.url).replace(
        "localhost:8000", server.url.removeprefix("http://"))
    if example.language == "python":
        command = [sys.executable, "-c", f"API_KEY = {API_KEY!r}\n{code}"]
    else:
        command = ["bash", "-c", f"set -eo pipefail\n{CURL}\n{code}"]
    return subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True,
                          timeout=120)


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.parametrize("example", EXAMPLES, ids=str)
def test_example_answers_as_documented(example, servers, workdir):
    server = servers("keyed" if "API_KEY" in example.code else "plain")
    result = run_example(example, server, workdir)
    assert result.returncode == 0, f"{example}:\n{example.code}\n{result.stderr[-3000:]}"
    if example.language == "python":
        assert result.stdout.strip(), f"{example} printed nothing"
        # A printed status and error code the example's comment promises ("# 400 invalid_image").
        for promised in PROMISED_OUTPUT.findall(example.code):
            assert promised in result.stdout, (str(example), promised, result.stdout)
        return
    statuses = re.findall(r"^HTTP (\d{3})$", result.stderr, re.M)
    assert statuses and all(s.startswith("2") for s in statuses), (str(example), result.stderr)
    doc = requests.get(server.url + "/openapi.json", timeout=30).json()
    check_curl_output(example, int(statuses[-1]), result.stdout, workdir, doc)


@pytest.mark.e2e
@pytest.mark.slow
def test_top_lists_the_documented_default_when_not_asked(servers, workdir):
    """`top`'s default length is the one serving.md documents (the model has more classes)."""
    default = documented_top_default()
    assert len(CLASSES) > default
    server = servers("plain")
    with open(workdir / "cat.jpg", "rb") as image:
        answer = requests.post(server.url + "/predict", files={"file": image}, timeout=60).json()
    assert len(answer["top"]) == default, answer["top"]
    assert len(answer["probabilities"]) == len(CLASSES)
