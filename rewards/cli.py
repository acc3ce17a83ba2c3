"""Debugging CLI for rewards.

    python -m rewards list
    python -m rewards score --reward NAME --completion TEXT --ground-truth TEXT [--field k=v ...] [--param k=v ...]
    python -m rewards score --reward NAME --input cases.jsonl [--output out.jsonl]

``--field``/``--param`` values are parsed as JSON when they parse, else kept as strings. A JSONL case
holds ``completion``, ``ground_truth`` and any other sample fields (``task``, ``language``, ``choices``...).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from typing import Any

from data.schema import SampleError, sample_from_row
from data.sources import jsonl_rows


class CliError(Exception):
    pass


def _json_or_str(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def _key_values(pairs: list[str], what: str) -> dict[str, Any]:
    out = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CliError(f"{what} {pair!r}: expected key=value")
        out[key] = _json_or_str(value)
    return out


def _sample(row: dict[str, Any], where: str):
    row = dict(row)
    if row.get("prompt") is None and row.get("messages") is None:
        row["prompt"] = ""  # rewards rarely need the prompt; the schema requires one
    return sample_from_row(row, where)


def _cmd_list(_args) -> int:
    from rewards import list_rewards

    for spec in list_rewards():
        params = ", ".join(f"{k}={v!r}" for k, v in spec.params.items()) or "(no parameters)"
        print(f"{spec.name}: {params}")
        summary = spec.doc.splitlines()[0] if spec.doc else ""
        if summary:
            print(f"    {summary}")
    return 0


def _cmd_score(args) -> int:
    from rewards import RewardExecutor, get_reward

    for module in args.import_module or []:
        importlib.import_module(module)
    try:
        spec = get_reward(args.reward)
    except KeyError as exc:
        raise CliError(exc.args[0]) from None
    params = _key_values(args.param, "--param")
    try:
        spec.check_params(params)
    except ValueError as exc:
        raise CliError(str(exc)) from None

    if args.input is None:
        if args.completion is None or args.ground_truth is None:
            raise CliError("give --completion and --ground-truth, or --input FILE.jsonl")
        row = {"ground_truth": _json_or_str(args.ground_truth) if args.json_ground_truth else args.ground_truth}
        row.update(_key_values(args.field, "--field"))
        cases = [(args.completion, _sample(row, "<command line>"))]
    else:
        if args.completion is not None or args.ground_truth is not None:
            raise CliError("--input cannot be combined with --completion/--ground-truth")
        cases = _read_cases(args.input)

    executor = RewardExecutor(num_workers=args.workers, timeout_s=args.timeout,
                              import_modules=args.import_module or [])
    try:
        results = executor.score([(spec.name, params, completion, sample) for completion, sample in cases])
    finally:
        executor.close()

    out = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout
    try:
        for output, error in results:
            record = {"reward": spec.name, "score": output.score, "details": output.details}
            if error:
                record["error"] = error
            out.write(json.dumps(record, ensure_ascii=False, default=repr) + "\n")
    finally:
        if out is not sys.stdout:
            out.close()
    return 0


def _read_cases(path: str):
    cases = []
    try:
        for where, row in jsonl_rows(path):
            if not isinstance(row, dict):
                raise CliError(f"{where}: expected a JSON object")
            completion = row.pop("completion", None)
            if not isinstance(completion, str):
                raise CliError(f"{where}: field 'completion' (a string) is required")
            cases.append((completion, _sample(row, where)))
    except OSError as exc:
        raise CliError(f"{path}: {exc.strerror}") from None
    except SampleError as exc:  # invalid JSON or a row the schema rejects; names file and line
        raise CliError(str(exc)) from None
    return cases


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m rewards", description="Inspect and try out rewards.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list rewards with their parameters and defaults")
    score = sub.add_parser("score", help="score one completion or a JSONL file of cases")
    score.add_argument("--reward", required=True)
    score.add_argument("--completion")
    score.add_argument("--ground-truth")
    score.add_argument("--json-ground-truth", action="store_true",
                       help="parse --ground-truth as JSON (e.g. a list of accepted answers)")
    score.add_argument("--field", action="append", default=[], metavar="K=V", help="extra sample field")
    score.add_argument("--param", action="append", default=[], metavar="K=V", help="reward parameter")
    score.add_argument("--input", metavar="FILE.jsonl")
    score.add_argument("--output", metavar="FILE.jsonl")
    score.add_argument("--workers", type=int, default=0, help="worker processes (0: score in this process)")
    score.add_argument("--timeout", type=float, default=5.0, help="per-call time limit in seconds")
    score.add_argument("--import-module", action="append", metavar="MODULE",
                       help="module that registers extra rewards")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _cmd_list(args) if args.command == "list" else _cmd_score(args)
    except CliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
