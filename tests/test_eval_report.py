"""The reproduction toolkit: `python -m trainer eval` (its estimators by hand, its agreement with the
in-training evaluation, its per-language table), `python -m trainer report`, and the quiet console."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from trainer.evaluate import k_values, majority_correct, pass_at_k, sampled_metrics
from trainer.scoring import answer_of

ROOT = Path(__file__).resolve().parents[1]


# ----- estimators, by hand ----------------------------------------------------------------------
def test_pass_at_k_matches_hand_counts():
    # 1 - C(n-c, k) / C(n, k)
    assert pass_at_k(4, 1, 1) == pytest.approx(0.25)
    assert pass_at_k(4, 1, 2) == pytest.approx(1 - 3 / 6)
    assert pass_at_k(4, 2, 2) == pytest.approx(1 - 1 / 6)
    assert pass_at_k(5, 2, 3) == pytest.approx(1 - 1 / 10)
    assert pass_at_k(8, 0, 8) == 0.0 and pass_at_k(8, 8, 1) == 1.0 and pass_at_k(8, 1, 8) == 1.0
    with pytest.raises(ValueError, match="k <= n"):
        pass_at_k(4, 1, 5)


def test_majority_vote_ties_and_unanswered():
    assert majority_correct(["3", "4", "3", None], [True, False, True, False]) is True
    assert majority_correct(["4", "3"], [False, True]) is False  # a tie goes to the answer seen first
    assert majority_correct([None, "7", None, None], [False, True, False, False]) is True  # no answer, no vote
    assert majority_correct([None, None], [False, False]) is False


def test_sampled_metrics_by_hand():
    rows = [{"correct": [True, False, False, False], "answers": ["1", "2", "2", "3"]},
            {"correct": [True, True, False, True], "answers": ["5", "5", "6", "5"]}]
    assert k_values(4) == [1, 2, 4] and k_values(5) == [1, 2, 4, 5] and k_values(1) == [1]
    # prompt 1: pass@2 = 1 - C(3,2)/C(4,2) = 0.5, majority "2" is wrong; prompt 2: pass@2 = 1, majority right
    assert sampled_metrics(rows, 4) == pytest.approx(
        {"avg@4": 0.5, "pass@1": 0.5, "pass@2": 0.75, "pass@4": 1.0, "maj@4": 0.5})


def test_answer_for_votes_is_what_the_accuracy_reward_read():
    def details(reward, read):
        return {"terms": {reward: {"score": 0.0, "details": read}}}

    assert answer_of(details("choice", {"extracted": "(B) cat", "chosen": "B"}), "choice") == "B"
    assert answer_of(details("numeric", {"extracted": "2.50", "pred": 2.5}), "numeric") == "2.5"
    assert answer_of(details("boxed_answer", {"extracted": "1/2"}), "boxed_answer") == "1/2"
    assert answer_of(details("boxed_answer", {"extracted": None, "reason": "no box"}), "boxed_answer") is None
    assert answer_of(details("format", {"extracted": "x"}), "boxed_answer") is None


# ----- report -----------------------------------------------------------------------------------
def _write_run(folder: Path, rows: list[dict], samples: list[dict] | None = None) -> None:
    folder.mkdir(parents=True)
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "config.yaml").write_text("recipe_name: quickstart\nactor:\n  lr: 0.0002\n")
    (folder / "summary.json").write_text(json.dumps({"eval_after": {"eval/acc": 0.75}, "steps": 3}))
    if samples:
        (folder / "samples.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples))


def test_report_draws_the_metrics_file(tmp_path):
    from trainer.report import main, write_report

    def step(s, reward, **more):
        return {"step": s, "time": 0.0, "reward/mean": reward, "acc/mean": reward, "acc/add": reward,
                "acc/mul": 1 - reward, "time/generate": 0.5, "time/update": 0.25, "time/step": 0.75, **more}

    a = tmp_path / "a"
    _write_run(a, [
        {"step": 0, "time": 0.0, "eval/acc": 0.25, "eval/acc/add": 0.5, "eval/acc/mul": 0.0},
        step(1, 0.1), step(2, 0.2),
        step(2, 0.3),  # a resumed run repeated step 2: the later line stands
        step(3, 0.4, logp_mismatch=0.01),
        {"step": 3, "time": 0.0, "eval/acc": 0.75, "eval/acc/add": 1.0, "eval/acc/mul": 0.5},  # the final evaluation, same step
    ], samples=[{"step": 3, "task": "add", "prompt": "1+1", "completion": "<think>x</think> \\boxed{2}",
                 "ground_truth": "2", "reward": 1.0, "correct": True}])
    b = tmp_path / "b"
    _write_run(b, [step(1, 0.6), step(2, 0.7)])
    drawn = write_report([a, b], tmp_path / "out")
    out = tmp_path / "out"
    for name in ["reward.png", "accuracy.png", "time.png", "logp_mismatch.png", "overview.png"]:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    assert not (out / "entropy.png").exists()  # no run logged it

    def series(png, label):
        (line,) = [d for d in drawn[png] if d["label"] == label]
        return dict(zip(line["steps"], line["values"]))

    assert series("reward.png", "a: reward/mean") == {1: 0.1, 2: 0.3, 3: 0.4}
    assert series("reward.png", "b: reward/mean") == {1: 0.6, 2: 0.7}
    assert series("accuracy.png", "a: eval/acc") == {0: 0.25, 3: 0.75}
    assert series("accuracy.png", "a: eval/acc/add") == {0: 0.5, 3: 1.0}
    assert series("accuracy.png", "a: acc/mul") == {1: 0.9, 2: 0.7, 3: 0.6}
    assert series("time.png", "a: time/update") == {1: 0.25, 2: 0.25, 3: 0.25}
    assert not [d for d in drawn["time.png"] if d["label"].endswith("time/step")]  # the total is not a phase
    assert json.loads((out / "series.json").read_text()) == drawn
    page = (out / "index.html").read_text()
    assert "lr: 0.0002" in page and "eval_after.eval/acc" in page and "&lt;think&gt;x&lt;/think&gt;" in page
    assert all(f"<img src='{name}'>" in page for name in drawn)
    assert main([str(a), "--out", str(tmp_path / "cli")]) == 0 and (tmp_path / "cli" / "overview.png").exists()
    assert main([str(tmp_path / "missing")]) == 2


# ----- the console ------------------------------------------------------------------------------
QUIET_SCRIPT = textwrap.dedent("""
    import logging, os, sys, warnings
    from trainer.console import quiet, say
    with quiet(sys.argv[1], verbose=sys.argv[2] == "1"):
        say("framework line")
        print("library print")
        os.write(2, b"C-level stderr\\n")
        warnings.warn("library warning")
        logging.getLogger("somelib").warning("library log")
    print("after the block")
""")


@pytest.mark.parametrize("verbose", [False, True])
def test_quiet_console_keeps_only_framework_lines(tmp_path, verbose):
    out = subprocess.run([sys.executable, "-c", QUIET_SCRIPT, str(tmp_path / "logs"), "1" if verbose else "0"],
                         capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    noise = ["library print", "C-level stderr", "library warning", "library log"]
    shown = out.stdout + out.stderr
    assert "framework line" in out.stdout and "after the block" in out.stdout
    if verbose:
        assert all(n in shown for n in noise) and not (tmp_path / "logs").exists()
    else:
        log = (tmp_path / "logs" / "console.log").read_text()
        assert all(n in log for n in noise) and not any(n in shown for n in noise)
        assert "framework line" not in log


# ----- the command, end to end ------------------------------------------------------------------
SHORT = ["engine.ray=false", "rollout.engine=hf", "tracking.wandb.mode=disabled", "tracking.console=false",
         "reward.num_workers=0"]


# The quickstart shortened (cold start on batches of 32, 8 RL steps, 100 held-out prompts): measured 57% -> 66%
# on this machine (the recipe's batches of 64 give 84% -> 93%, at twice the SFT time). A regression in learning
# lands it outside the band, or no better than before RL, and fails here.
SHORT_QUICKSTART_BAND = (0.56, 0.80)


@pytest.mark.slow
def test_shortened_quickstart_lands_in_its_band_and_eval_agrees_with_its_last_evaluation(tmp_path):
    from trainer.eval_command import main
    from trainer.loop import train
    from trainer.recipe_config import compose_config

    quickstart = ["recipe=quickstart", "data.num_eval=100", "sft.batch_size=32", *SHORT]
    summary = train(compose_config([*quickstart, f"trainer.output_dir={tmp_path / 'run'}", "trainer.total_steps=8",
                                    "trainer.save_every=0"]))
    trained = summary["eval_after"]
    low, high = SHORT_QUICKSTART_BAND
    assert low <= trained["eval/acc"] <= high and trained["eval/acc"] > summary["eval_before"]["eval/acc"]
    assert summary["in_expected_band"] is False  # the recipe's band is for the full 100 steps, and says so
    out = tmp_path / "eval.json"
    assert main([str(tmp_path / "run" / "final_model"), *quickstart, f"trainer.output_dir={tmp_path / 'ev'}",
                 "evaluation.k=4", "rollout.temperature=1.0", f"evaluation.output={out}"]) == 0
    result = json.loads(out.read_text())
    assert result["metrics"]["eval/correct"] == trained["eval/correct"]
    assert result["metrics"]["eval/acc"] == trained["eval/acc"] == result["overall"]["greedy_acc"]
    assert result["settings"]["temperature"] == 1.0 and result["overall"]["prompts"] == 100
    # The estimators read the completions file back: 4 sampled completions per prompt.
    rows = [json.loads(line) for line in out.with_suffix(".completions.jsonl").read_text().splitlines()]
    sampled = [r for r in rows if r["kind"] == "sampled"]
    assert len(sampled) == 4 * 100 and sum(r["kind"] == "greedy" for r in rows) == 100
    per_prompt = [[r["correct"] for r in sampled[i:i + 4]] for i in range(0, len(sampled), 4)]  # prompt order
    assert all(len({r["id"] for r in sampled[i:i + 4]}) == 1 for i in range(0, len(sampled), 4))
    expected = sum(pass_at_k(4, sum(c), 2) for c in per_prompt) / len(per_prompt)
    assert result["overall"]["pass@2"] == pytest.approx(expected)
    assert result["overall"]["avg@4"] <= result["overall"]["pass@2"] <= result["overall"]["pass@4"]


@pytest.mark.slow
def test_eval_per_language_table_on_mthinker_tiny_data(tmp_path, capsys):
    from trainer.eval_command import main

    out = tmp_path / "eval.json"
    code = main(["recipe=mthinker", "preset=tiny", "data.num_eval=6", "evaluation.k=2", *SHORT,
                 f"trainer.output_dir={tmp_path}", f"evaluation.output={out}", "rollout.eval_max_new_tokens=16",
                 # A length-graded accuracy, so a random model gets some right and the table has something to count.
                 "reward.tasks={default: [{name: 'tests.reward_fixtures:fixture_len'}]}",
                 "reward.accuracy_reward=tests.reward_fixtures:fixture_len",
                 "reward.correct_at={multilingual_arithmetic: 40}"])
    assert code == 0
    result = json.loads(out.read_text())
    assert sorted(result["by_language"]) == ["en", "fr", "zh"]
    rows = [json.loads(line) for line in out.with_suffix(".completions.jsonl").read_text().splitlines()]
    for language, values in result["by_language"].items():
        greedy = [r["correct"] for r in rows if r["kind"] == "greedy" and r["language"] == language]
        assert values["prompts"] == len(greedy) == 6
        assert values["greedy_acc"] == pytest.approx(sum(greedy) / 6)
        sampled = [r["correct"] for r in rows if r["kind"] == "sampled" and r["language"] == language]
        assert values["avg@2"] == pytest.approx(sum(sampled) / 12)
    table = capsys.readouterr().out
    assert "language zh" in table and "pass@2" in table


def test_eval_names_a_missing_model_without_a_traceback(tmp_path, capsys):
    from trainer.eval_command import main

    assert main([str(tmp_path / "no-such-model"), "model.offline=true", f"trainer.output_dir={tmp_path}"]) == 2
    err = capsys.readouterr().err
    # The first line names the path; the lines after it list what was tried (trainer/hub.py), no traceback.
    assert err.startswith("error: model.path=") and "no-such-model" in err.splitlines()[0]
    assert "Traceback" not in err
    assert main(["a", "b"]) == 2 and "one MODEL" in capsys.readouterr().err


def test_language_consistency_rate_reads_the_first_completion_per_prompt():
    from data.schema import Sample
    from trainer.eval_command import language_scores, subset_metrics
    from trainer.rollout.sampling import Completion
    from trainer.rollouts import Rollout, Rollouts

    french = ("<think>Nous additionnons les deux nombres ensemble, puis nous vérifions le résultat obtenu.</think>"
              "La réponse finale est donc \\boxed{5}.")
    english = ("<think>We add the two numbers together and then check the result we obtained.</think>"
               "So the final answer is \\boxed{5}.")
    samples = [Sample(prompt="2+3", metadata={"language": "fr"}), Sample(prompt="2+3", metadata={"language": "fr"}),
               Sample(prompt="2+3")]
    run = Rollouts(samples=samples)
    for group, text, ok in [(0, french, True), (1, english, True), (2, english, False)]:
        run.items.append(Rollout(group=group, prompt_ids=[1], completion=Completion(group, [5, 6], [0.0, 0.0], True),
                                 text=text, correct=ok, score=float(ok)))
    scores = language_scores("language_consistency", run)
    assert scores == [1.0, 0.0, None]  # the third prompt has no language: not counted
    overall = subset_metrics([0, 1, 2], run, None, 0, scores)
    assert overall["language_consistency"] == 0.5 and overall["greedy_acc"] == pytest.approx(2 / 3)
    assert language_scores(None, run) == [None, None, None]
