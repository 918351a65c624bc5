"""Bad input is refused before any work, naming every field at fault; nothing is written."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.worker.conftest import run_cli
from worker.cli import build_parser, run_command, spec_from_args
from worker.contract import EXIT_BAD_SPEC


def test_bad_spec_file_names_every_field_and_writes_nothing(tmp_path):
    spec = tmp_path / "spec.json"
    out = tmp_path / "out"
    spec.write_text(json.dumps({"mode": "ring", "dtype": "float8", "batch_sizes": [4, 0], "max_new_tokens": 0,
                                "colour": "blue", "output_dir": str(out)}))
    proc = run_cli("run", "--spec", str(spec))
    assert proc.returncode == EXIT_BAD_SPEC
    for field in ("mode", "dtype", "batch_sizes", "max_new_tokens", "colour"):
        assert f"  {field}:" in proc.stderr, proc.stderr
    assert not out.exists()


def _refused(capsys, *argv: str) -> str:
    assert run_command(["run", *argv]) == EXIT_BAD_SPEC
    return capsys.readouterr().err


def test_more_stages_than_layers_is_refused(capsys, tiny_checkpoint, tmp_path):
    err = _refused(capsys, "--checkpoint", str(tiny_checkpoint), "--mode", "pp", "--pp-size", "8",
                   "--out", str(tmp_path / "o"))
    assert "pp_size: 8 pipeline stages but the model has only 4 layers" in err
    assert not (tmp_path / "o").exists()


def test_batch_size_zero_is_refused(capsys, tmp_path):
    err = _refused(capsys, "--batch-sizes", "1,0", "--out", str(tmp_path / "o"))
    assert "batch_sizes: every batch size must be an integer >= 1; bad: [0]" in err


def test_checkpoint_without_weights_is_refused(capsys, tiny_checkpoint, tmp_path):
    broken = tmp_path / "noweights"
    shutil.copytree(tiny_checkpoint, broken)
    (broken / "model.safetensors").unlink()
    err = _refused(capsys, "--checkpoint", str(broken), "--out", str(tmp_path / "o"))
    assert "model.path:" in err and "holds no weights" in err
    assert not (tmp_path / "o").exists()


def test_checkpoint_not_matching_its_config_is_refused(capsys, tiny_checkpoint, tmp_path):
    broken = tmp_path / "mismatch"
    shutil.copytree(tiny_checkpoint, broken)
    config = json.loads((broken / "config.json").read_text())
    config["intermediate_size"] = 400
    (broken / "config.json").write_text(json.dumps(config))
    err = _refused(capsys, "--checkpoint", str(broken), "--out", str(tmp_path / "o"))
    assert "does not match its config.json" in err and "mlp.up_proj.weight has shape [344, 128]" in err


def test_missing_directory_and_prompts_are_both_named(capsys, tmp_path):
    err = _refused(capsys, "--checkpoint", str(tmp_path / "nowhere"), "--prompts", str(tmp_path / "none.jsonl"),
                   "--out", str(tmp_path / "o"))
    assert "model.path:" in err and "does not exist" in err
    assert "prompts_file:" in err


def test_flags_override_the_spec_file(tmp_path):
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"max_new_tokens": 3, "mode": "pp", "batch_sizes": [2], "output_dir": "x"}))
    args = build_parser().parse_args(["run", "--spec", str(spec), "--max-new-tokens", "5", "--batch-sizes", "1,4",
                                      "--checkpoint", str(tmp_path), "--micro-batches", "1"])
    parsed = spec_from_args(args)
    assert (parsed.max_new_tokens, parsed.batch_sizes, parsed.mode) == (5, [1, 4], "pp")
    assert parsed.model.source == "checkpoint" and parsed.model.path == str(tmp_path.resolve())


@pytest.mark.parametrize("line", ['{"text": "x"}', "not json", '{"prompt": ""}'])
def test_malformed_prompts_file_is_refused(capsys, tmp_path, line):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(line + "\n")
    err = _refused(capsys, "--prompts", str(prompts), "--out", str(tmp_path / "o"))
    assert f"prompts_file: {prompts}:1:" in err


def test_a_checkpoint_with_more_layers_than_its_config_or_no_tokenizer_is_refused(tiny_checkpoint, tmp_path):
    from worker.checkpoint import CheckpointError, check_checkpoint

    fewer = tmp_path / "fewer-layers"
    shutil.copytree(tiny_checkpoint, fewer)
    config = json.loads((fewer / "config.json").read_text())
    config["num_hidden_layers"] -= 1
    (fewer / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="tensors the config does not use"):
        check_checkpoint(fewer)
    untokenized = tmp_path / "no-tokenizer"
    shutil.copytree(tiny_checkpoint, untokenized)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (untokenized / name).unlink(missing_ok=True)
    with pytest.raises(CheckpointError, match="no tokenizer"):
        check_checkpoint(untokenized)
