"""`dinf-worker compare`: exact-match rate, first divergence, top-k agreement."""

from __future__ import annotations

import json
import shutil

import pytest

from worker import contract
from worker.cli import run_command


def test_compare_identical_runs(single_run, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(single_run, copy)
    assert run_command(["compare", str(single_run), str(copy)]) == 0
    table = capsys.readouterr().out
    assert "| 6 | 6/6 | 100% | - | - |" in table
    result = json.loads((copy / contract.COMPARISON_FILE).read_text())
    assert result["exact_match_rate"] == 1.0 and result["topk_agreement_rate"] is None


def test_compare_reports_first_divergence_and_topk(single_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(single_run, run)
    lines = (run / contract.COMPLETIONS_FILE).read_text().splitlines()
    records = [json.loads(line) for line in lines]
    target = next(r for r in records if r["batch_size"] == 6 and r["index"] == 2)
    runner_up = target["topk_ids"][3][1]  # the baseline's second choice at step 3
    target["output_ids"][3] = runner_up
    target["topk_ids"][3] = [runner_up, *[t for t in target["topk_ids"][3] if t != runner_up]][:5]
    other = next(r for r in records if r["batch_size"] == 6 and r["index"] == 4)
    other["output_ids"][0] = 511 if other["output_ids"][0] != 511 else 510
    other["topk_ids"][0] = [other["output_ids"][0]] * 5
    (run / contract.COMPLETIONS_FILE).write_text("".join(json.dumps(r) + "\n" for r in records))

    assert run_command(["compare", str(single_run), str(run), "--batch-size", "6"]) == 0
    assert "| 6 | 4/6 | 67% | 1/2 | #2@3, #4@0 |" in capsys.readouterr().out
    result = json.loads((run / contract.COMPARISON_FILE).read_text())
    (group,) = result["by_batch_size"]
    by_index = {p["index"]: p for p in group["per_prompt"]}
    assert by_index[2]["first_divergence"] == 3 and by_index[2]["topk_agree"] is True
    assert by_index[4]["first_divergence"] == 0 and by_index[4]["topk_agree"] is False


def test_compare_refuses_a_directory_without_completions(single_run, tmp_path, capsys):
    assert run_command(["compare", str(single_run), str(tmp_path)]) == contract.EXIT_BAD_SPEC
    assert "completions.jsonl does not exist" in capsys.readouterr().err


def test_worker_compare_and_the_laptop_analysis_agree_when_one_output_stops_early():
    from tui.studies.analysis import check_prompt
    from worker.compare import compare_one

    base = {"index": 3, "prompt": "p", "output_ids": [5, 6, 7, 2], "topk_ids": [[5], [6], [7, 9], [2, 8]]}
    short = {"index": 3, "prompt": "p", "output_ids": [5, 6], "topk_ids": [[5], [6]]}
    other = {"index": 3, "prompt": "p", "output_ids": [5, 6, 9, 2], "topk_ids": [[5], [6], [9, 7], [2]]}
    worker_side, laptop_side = compare_one(base, short), check_prompt(base, short)
    assert worker_side["first_divergence"] == laptop_side.first_divergence == 2
    assert worker_side["topk_agree"] is False and laptop_side.topk_agree is False
    worker_side, laptop_side = compare_one(base, other), check_prompt(base, other)
    assert worker_side["topk_agree"] is True and laptop_side.topk_agree is True


def test_compare_refuses_runs_of_different_models(tmp_path):
    from worker.compare import CompareError, compare_dirs

    line = json.dumps({"batch_size": 1, "index": 0, "output_ids": [1], "topk_ids": [[1]]}) + "\n"
    for name, seed in (("a", 0), ("b", 1)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "completions.jsonl").write_text(line)
        (tmp_path / name / "spec.json").write_text(json.dumps({"model": {"source": "synthetic", "config": "tiny", "seed": seed}}))
    with pytest.raises(CompareError, match="model.seed"):
        compare_dirs(tmp_path / "a", tmp_path / "b", echo=False)
