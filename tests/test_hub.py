"""Models named on the hub, against a local stand-in for the hub (no mock of huggingface_hub).

A stdlib HTTP server on 127.0.0.1 answers the requests huggingface_hub makes for `snapshot_download`:
the repo info (`/api/models/{repo}/revision/{rev}`), the file tree (`/api/models/{repo}/tree/{rev}`)
and each file (`HEAD`/`GET /{repo}/resolve/{rev}/{file}` with X-Repo-Commit, ETag and Content-Length).
The same routes under /api/datasets and /datasets/ serve a one-parquet dataset to `datasets.load_dataset`.
huggingface_hub reads HF_ENDPOINT, HF_HOME and HF_HUB_OFFLINE when it is imported, so every resolve
runs in a fresh interpreter with those set, as a user's run would.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SHA = "0123456789abcdef0123456789abcdef01234567"  # the served repo's one commit
UNREAD = ("pytorch_model.bin", "original/consolidated.pth", "tiny.Q4_K_M.gguf", "onnx/model.onnx")


class FakeHub:
    """Repos served from memory: (kind, repo id) -> {path: bytes}, kind "models" or "datasets";
    `requests` logs (method, path) for asserts."""

    def __init__(self):
        self.repos: dict[tuple[str, str], dict[str, bytes]] = {}
        self.gated: set[str] = set()  # repos whose files need an accepted licence (the hub answers 403)
        self.requests: list[tuple[str, str]] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def do_HEAD(self):
                hub.answer(self, body=False)

            def do_GET(self):
                hub.answer(self, body=True)

            def log_message(self, *args):  # keep pytest output clean
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def add(self, repo_id: str, folder: Path, kind: str = "models") -> None:
        self.repos[kind, repo_id] = {p.relative_to(folder).as_posix(): p.read_bytes()
                                     for p in sorted(folder.rglob("*")) if p.is_file()}

    def answer(self, request: BaseHTTPRequestHandler, body: bool) -> None:
        url = urlsplit(request.path)
        parts = [unquote(p) for p in url.path.strip("/").split("/")]
        self.requests.append((request.command, url.path))
        missing = ({"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
        if parts[0] == "api" and len(parts) >= 4 and parts[1] in ("models", "datasets"):
            kind, repo_id, rest = parts[1], "/".join(parts[2:4]), parts[4:]
            files = self.repos.get((kind, repo_id))
            if files is None:
                return self.send(request, 404, *missing, body)
            if rest[:1] in (["revision"], ["tree"]) and len(rest) >= 2 and rest[1] not in ("main", SHA):
                return self.send(request, 404, {"error": "Revision not found"},
                                 {"X-Error-Code": "RevisionNotFound"}, body)
            if not rest or rest[0] == "revision":
                info = {"id": repo_id, "sha": SHA, "private": False, "siblings": [{"rfilename": f} for f in files]}
                return self.send(request, 200, info, {}, body)
            if rest[0] == "tree":
                prefix = "/".join(rest[2:])
                recursive = parse_qs(url.query).get("recursive", ["false"])[0].lower() == "true"
                return self.send(request, 200, self.tree(files, prefix, recursive), {}, body)
        kind = "datasets" if parts[0] == "datasets" else "models"
        parts = parts[1:] if kind == "datasets" else parts
        if len(parts) >= 5 and parts[2] == "resolve":
            repo_id, revision, filename = "/".join(parts[:2]), parts[3], "/".join(parts[4:])
            files = self.repos.get((kind, repo_id))
            if files is None:
                return self.send(request, 404, *missing, body)
            if repo_id in self.gated:
                return self.send(request, 403, {"error": "Access to this model is restricted"},
                                 {"X-Error-Code": "GatedRepo"}, body)
            content = files.get(filename)
            if content is None or revision not in ("main", SHA):
                return self.send(request, 404, {"error": "Entry not found"},
                                 {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": SHA}, body)
            etag = hashlib.sha256(content).hexdigest()
            return self.send(request, 200, content, {"X-Repo-Commit": SHA, "ETag": f'"{etag}"'}, body)
        self.send(request, 404, {"error": f"not served here: {url.path}"}, {}, body)

    @staticmethod
    def tree(files: dict[str, bytes], prefix: str, recursive: bool) -> list[dict]:
        entries, folders = [], set()
        for path, content in files.items():
            if prefix and not path.startswith(prefix + "/"):
                continue
            rest = path[len(prefix) + 1:] if prefix else path
            if "/" in rest and not recursive:
                folders.add((prefix + "/" if prefix else "") + rest.split("/")[0])
                continue
            entries.append({"type": "file", "path": path, "size": len(content),
                            "oid": hashlib.sha1(content).hexdigest()})
        return entries + [{"type": "directory", "path": f, "oid": "0" * 40, "size": 0} for f in sorted(folders)]

    @staticmethod
    def send(request, status: int, payload, headers: dict, body: bool) -> None:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        request.send_response(status)
        request.send_header("Content-Type", "application/octet-stream" if isinstance(payload, bytes)
                            else "application/json")
        request.send_header("Content-Length", str(len(data)))
        for key, value in headers.items():
            request.send_header(key, value)
        request.end_headers()
        if body:
            request.wfile.write(data)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def served_model(tiny_model_dir):
    """The tiny model folder (conftest: build_tiny_model(TinyModelConfig(), ..., seed=0)), served as `org/tiny`."""
    folder = Path(tiny_model_dir)
    hub = FakeHub()
    hub.add("org/tiny", folder)
    # Files hub repos often carry that the trainer never reads: resolve must not download them.
    hub.repos["models", "org/tiny"].update({name: b"unused" for name in UNREAD})
    yield hub, folder
    hub.close()


def hub_env(hub: FakeHub, hf_home: Path, **extra: str) -> dict[str, str]:
    """A user's environment pointed at the local hub: no token, no proxy, online unless `extra` says."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("HF_", "HUGGING")) and k not in ("TRANSFORMERS_OFFLINE",)
           and "proxy" not in k.lower()}
    env.update(HF_ENDPOINT=hub.url, HF_HOME=str(hf_home), HF_HUB_DISABLE_TELEMETRY="1", NO_PROXY="127.0.0.1",
               HF_HUB_DISABLE_PROGRESS_BARS="1", OMP_NUM_THREADS="1", **extra)
    return env


# trainer.hub is where trainer.modeling's resolve_model_path lives (without torch: quicker to start).
RESOLVE = """
import json, sys, warnings
from trainer.hub import ModelNotFoundError, resolve_model_path
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    try:
        out = {"path": resolve_model_path(sys.argv[1], **json.loads(sys.argv[2]))}
    except ModelNotFoundError as error:
        out = {"error": str(error)}
out["warnings"] = [str(w.message) for w in caught if str(w.message).startswith("model.path=")]
print(json.dumps(out))
"""


def resolve(env: dict[str, str], name: str, **kwargs) -> dict:
    """resolve_model_path(name, **kwargs) in a fresh interpreter with `env`: {"path" or "error", "warnings"}."""
    result = subprocess.run([sys.executable, "-c", RESOLVE, name, json.dumps(kwargs)], env=env, cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_hub_name_downloads_then_resolves_offline_from_the_cache(served_model, tmp_path):
    import torch
    from safetensors.torch import load_file

    from trainer.modeling import load_causal_lm

    hub, folder = served_model
    out = resolve(hub_env(hub, tmp_path / "hf"), "org/tiny")
    path = Path(out["path"])
    assert path == tmp_path / "hf" / "hub" / "models--org--tiny" / "snapshots" / SHA
    assert sorted(p.name for p in path.iterdir()) == sorted(p.name for p in folder.iterdir())
    assert not any((path / name).exists() for name in UNREAD)
    assert ("GET", "/api/models/org/tiny/revision/main") in hub.requests
    served = load_file(folder / "model.safetensors")
    model = load_causal_lm(str(path))
    loaded = model.state_dict()
    for name, tensor in served.items():
        assert torch.equal(loaded[name], tensor), name

    # Offline, the same name is found in the cache without a single request.
    hub.requests.clear()
    again = resolve(hub_env(hub, tmp_path / "hf", HF_HUB_OFFLINE="1"), "org/tiny")
    assert again["path"] == out["path"] and hub.requests == []


def test_revision_reaches_the_hub(served_model, tmp_path):
    hub, _ = served_model
    assert resolve(hub_env(hub, tmp_path / "hf"), "org/tiny", revision=SHA)["path"].endswith(SHA)
    error = resolve(hub_env(hub, tmp_path / "hf2"), "org/tiny", revision="v9")["error"]
    assert f"3. hub {hub.url}: revision 'v9' not found (HTTP 404)" in error
    assert "check model.revision" in error


def test_missing_repo_says_what_was_tried_and_what_to_do(served_model, tmp_path):
    hub, _ = served_model
    error = resolve(hub_env(hub, tmp_path / "hf"), "org/missing")["error"]
    lines = error.splitlines()
    assert lines[0] == "model.path='org/missing' was not found. Tried:"
    assert lines[1] == f"  1. local folder: not found at {ROOT / 'org' / 'missing'}"
    assert lines[2] == f"  2. Hugging Face cache {tmp_path / 'hf' / 'hub'}: not there"
    assert lines[3].startswith(f"  3. hub {hub.url}: repository not found (HTTP 404)")
    assert "hf auth login" in lines[4] and "HF_TOKEN" in lines[4] and "model.path=tiny" in lines[4]


def test_gated_repo_says_so_and_never_prints_the_token(served_model, tmp_path):
    hub, folder = served_model
    hub.add("org/gated", folder)
    hub.gated.add("org/gated")
    token = "hf_" + "x" * 34
    error = resolve(hub_env(hub, tmp_path / "hf", HF_TOKEN=token), "org/gated")["error"]
    assert f"3. hub {hub.url}: gated repository (HTTP 403)" in error
    assert "accept its licence" in error and "hf auth login" in error
    assert token not in error


def test_offline_with_an_empty_cache_says_it_was_offline(served_model, tmp_path):
    hub, _ = served_model
    hub.requests.clear()
    error = resolve(hub_env(hub, tmp_path / "hf", HF_HUB_OFFLINE="1"), "org/tiny")["error"]
    assert f"2. Hugging Face cache {tmp_path / 'hf' / 'hub'}: not there" in error
    assert f"3. hub {hub.url}: skipped: offline (HF_HUB_OFFLINE=1 in the environment)" in error
    assert "unset HF_HUB_OFFLINE" in error
    assert hub.requests == []


def test_model_offline_refuses_the_hub(served_model, tmp_path):
    hub, _ = served_model
    hub.requests.clear()
    # The repo is served and the environment is online: only model.offline=true stops the download.
    error = resolve(hub_env(hub, tmp_path / "hf"), "org/tiny", offline=True)["error"]
    assert "3. hub" in error and "skipped: offline (model.offline=true)" in error
    assert hub.requests == []


def test_unreachable_hub_falls_back_to_the_cache_or_says_so(served_model, tmp_path):
    hub, _ = served_model
    cached = resolve(hub_env(hub, tmp_path / "hf"), "org/tiny")["path"]
    dead = FakeHub()
    dead.close()  # nothing listens on its port any more
    # Online but unreachable: the cached copy, with a warning naming why the hub was not used.
    out = resolve(hub_env(dead, tmp_path / "hf"), "org/tiny")
    assert out["path"] == cached
    assert len(out["warnings"]) == 1 and "unreachable (ConnectError" in out["warnings"][0]
    error = resolve(hub_env(dead, tmp_path / "empty"), "org/tiny")["error"]
    assert f"2. Hugging Face cache {tmp_path / 'empty' / 'hub'}: not there" in error
    assert f"3. hub {dead.url}: unreachable (ConnectError" in error
    assert "check the network and HF_ENDPOINT" in error


def test_tokenizer_resolves_like_the_model(served_model, tmp_path):
    hub, folder = served_model
    code = (
        "import json; from trainer.config import ModelConfig; from trainer.hub import resolve_tokenizer_path\n"
        "print(json.dumps([resolve_tokenizer_path(ModelConfig(tokenizer='org/tiny'), '/m'),"
        " resolve_tokenizer_path(ModelConfig(), '/m')]))"
    )
    result = subprocess.run([sys.executable, "-c", code], env=hub_env(hub, tmp_path / "hf"), cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    tokenizer_dir, default = json.loads(result.stdout.splitlines()[-1])
    assert default == "/m"
    # Tokenizer files only: the weights stay on the hub.
    names = {p.name for p in Path(tokenizer_dir).iterdir()}
    assert "tokenizer.json" in names and "model.safetensors" not in names
    from transformers import AutoTokenizer

    text = "12+34=<answer>\\boxed{46}</answer>"
    assert AutoTokenizer.from_pretrained(tokenizer_dir)(text)["input_ids"] == \
        AutoTokenizer.from_pretrained(str(folder))(text)["input_ids"]


def test_cli_no_longer_forces_offline(monkeypatch, capsys):
    from trainer.__main__ import main

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    assert main(["--cfg", "model.path=org/tiny", "model.revision=v1", "model.tokenizer=org/tok"]) == 0
    assert "HF_HUB_OFFLINE" not in os.environ
    model = yaml.safe_load(capsys.readouterr().out)["model"]
    assert (model["path"], model["revision"], model["tokenizer"], model["offline"]) == ("org/tiny", "v1", "org/tok", False)


def test_model_offline_sets_hf_hub_offline(monkeypatch):
    import huggingface_hub.constants

    from trainer.modeling import apply_offline_mode

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    apply_offline_mode(False)
    assert "HF_HUB_OFFLINE" not in os.environ
    apply_offline_mode(True)
    assert os.environ["HF_HUB_OFFLINE"] == "1" and huggingface_hub.constants.HF_HUB_OFFLINE is True


def test_modeling_exports_the_hub_resolver():
    import trainer.hub
    import trainer.modeling

    assert trainer.modeling.resolve_model_path is trainer.hub.resolve_model_path
    assert trainer.modeling.ModelNotFoundError is trainer.hub.ModelNotFoundError


def test_dataset_named_on_the_hub_loads_then_loads_offline(tmp_path):
    """data.train=org/ds: data/sources.py hands the name to datasets.load_dataset, which reads HF_ENDPOINT too."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    repo = tmp_path / "ds"
    (repo / "data").mkdir(parents=True)
    rows = {"prompt": ["1+1=", "2+5=", "3+3="], "ground_truth": ["2", "7", "6"], "task": ["add"] * 3}
    pq.write_table(pa.table(rows), repo / "data" / "train-00000-of-00001.parquet")
    hub = FakeHub()
    hub.add("org/ds", repo, kind="datasets")
    code = ("import json; from data.sources import load_samples\n"
            "print(json.dumps([[s.prompt, s.ground_truth, s.task] for s in load_samples('org/ds', split='train')]))")
    expected = [list(row) for row in zip(*rows.values())]
    try:
        for extra in ({}, {"HF_HUB_OFFLINE": "1"}):  # online, then offline from the cache it filled
            hub.requests.clear()
            result = subprocess.run([sys.executable, "-c", code], env=hub_env(hub, tmp_path / "hf", **extra),
                                    cwd=ROOT, capture_output=True, text=True, timeout=120)
            assert result.returncode == 0, result.stderr[-3000:]
            assert json.loads(result.stdout.splitlines()[-1]) == expected
            parquet = "/datasets/org/ds/resolve/" + SHA + "/data/train-00000-of-00001.parquet"
            if extra:
                assert hub.requests == []
            else:
                assert ("GET", parquet) in hub.requests
    finally:
        hub.close()


def test_check_reads_a_hub_model_without_downloading_weights(served_model, tmp_path):
    """`--check` on a model that is only on the hub: it exists, only tokenizer files are read, and the
    first prompt is rendered; an unreachable hub is one problem line."""
    hub, _ = served_model

    def check(env):
        return subprocess.run([sys.executable, "-m", "trainer", "model.path=org/tiny", f"trainer.output_dir={tmp_path}/run",
                               "--check"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)

    hub.requests.clear()  # the server is shared with the tests above
    out = check(hub_env(hub, tmp_path / "hf"))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "on the hub, not cached: the first run downloads it" in out.stdout
    assert "[check] first prompt (" in out.stdout
    assert not any(path.endswith(".safetensors") for _, path in hub.requests)
    assert not (tmp_path / "hf" / "hub" / "models--org--tiny").exists()  # the user's cache stays untouched
    dead = FakeHub()
    dead.close()
    out = check(hub_env(dead, tmp_path / "hf"))
    problems = [line for line in out.stdout.splitlines() if line.startswith("[check] problem:")]
    assert out.returncode == 2 and len(problems) == 1, out.stdout
    assert f"the hub {dead.url}: unreachable (ConnectError" in problems[0]
