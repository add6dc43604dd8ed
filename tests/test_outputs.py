"""Output dirs are ours before they are cleared; checkpoints count only when complete (#14).

Model-free: the recipes, the pipeline and export are exercised on files; PPO's resume is in test_ppo_trainer.py.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from paths import ROOT
from safetensors.torch import save_file

from rlhf_hf.cli import main
from rlhf_hf.outputs import (
    MARKER,
    STAGING_DIR,
    claim_run_dir,
    finish_output_dir,
    last_complete_checkpoint,
    prepare_output_dir,
    read_marker,
    resolve_checkpoint,
)

CONFIGS = ROOT / "recipes" / "configs"


def _foreign(directory: Path) -> dict[Path, str]:
    """A user's files: what must survive every command."""
    files = {directory / "notes.txt": "my notes\n", directory / "data" / "important.jsonl": '{"a": 1}\n'}
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return files


def _survived(files: dict[Path, str]) -> bool:
    return all(path.read_text() == text for path, text in files.items())


def _our_finished_run(directory: Path) -> None:
    prepare_output_dir(directory, "sft", overwrite=False)
    (directory / "merged").mkdir()
    (directory / "merged" / "model.safetensors").write_text("x")
    (directory / "metrics.json").write_text("{}")
    finish_output_dir(directory)


# ---------------------------------------------------------------------------------------------- output dirs
def test_shipped_configs_never_overwrite():
    for path in CONFIGS.glob("*.yaml"):
        assert "overwrite_output_dir" not in yaml.safe_load(path.read_text()), path


def test_a_dir_without_our_marker_is_never_cleared(tmp_path):
    files = _foreign(tmp_path / "out")
    with pytest.raises(FileExistsError, match="overwrite_output_dir"):
        prepare_output_dir(tmp_path / "out", "sft", overwrite=False)
    for write in (False, True):  # the check of the other processes, and the main one's
        with pytest.raises(
            FileExistsError, match=rf"not written by rlhf-hf \(no {MARKER}\).*data, notes.txt"
        ):
            prepare_output_dir(tmp_path / "out", "sft", overwrite=True, write=write)
    assert _survived(files)


@pytest.mark.parametrize("where", ["cwd", "parent of cwd", "git checkout", "home"])
def test_cwd_home_and_git_checkouts_are_refused_even_when_marked_ours(tmp_path, monkeypatch, where):
    target = tmp_path / "target"
    target.mkdir()
    (target / MARKER).write_text(json.dumps({"stage": "sft", "finished": False}))
    files = _foreign(target)
    monkeypatch.chdir(target if where == "cwd" else tmp_path)
    if where == "parent of cwd":
        monkeypatch.chdir(target / "data")
    if where == "git checkout":
        (target / ".git").mkdir()
    if where == "home":
        monkeypatch.setenv("HOME", str(target))
    expected = {
        "cwd": "it is the current directory",
        "parent of cwd": "it contains the current directory",
        "git checkout": r"it holds \.git \(a repository root\)",
        "home": "home directory",
    }[where]
    path = "." if where == "cwd" else str(target)
    with pytest.raises(FileExistsError, match=expected):
        prepare_output_dir(path, "sft", overwrite=True)
    assert _survived(files)


def test_overwrite_removes_only_what_our_finished_run_wrote_and_logs_it(tmp_path, caplog):
    out = tmp_path / "out"
    _our_finished_run(out)
    files = _foreign(out)  # the user added files after the run
    with pytest.raises(FileExistsError, match="did not write: data, notes.txt"):
        prepare_output_dir(out, "sft", overwrite=True)
    assert _survived(files) and (out / "merged" / "model.safetensors").exists()
    for path in files:
        path.unlink()
    (out / "data").rmdir()
    with caplog.at_level(logging.WARNING, logger="rlhf_hf.outputs"):
        prepare_output_dir(out, "sft", overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == [MARKER]  # the new run's marker
    assert "removed from" in caplog.text and f"{MARKER}, merged, metrics.json" in caplog.text
    assert json.loads((out / MARKER).read_text())["finished"] is False


def test_an_interrupted_run_of_ours_is_cleared_and_resuming_keeps_it(tmp_path):
    out = tmp_path / "out"
    prepare_output_dir(out, "ppo", overwrite=False)
    (out / "samples.jsonl").write_text("{}\n")
    (out / STAGING_DIR / "checkpoint-2").mkdir(parents=True)
    prepare_output_dir(out, "ppo", overwrite=False, resuming=True)
    assert (out / "samples.jsonl").exists()
    prepare_output_dir(out, "ppo", overwrite=True)
    assert [p.name for p in out.iterdir()] == [MARKER]


def test_resuming_in_a_foreign_dir_is_refused_and_leaves_it_unmarked(tmp_path):
    """Else the marker would make the user's files ours, and the next overwrite would delete them."""
    out = tmp_path / "theirs"
    files = _foreign(out)
    (out / "checkpoint-2").mkdir()
    with pytest.raises(FileExistsError, match="Cannot resume in .*not written by rlhf-hf.*data, notes.txt"):
        prepare_output_dir(out, "ppo", overwrite=False, resuming=True)
    assert not (out / MARKER).exists()
    with pytest.raises(FileExistsError, match="not written by rlhf-hf"):
        prepare_output_dir(out, "ppo", overwrite=True)
    assert _survived(files)
    copied = tmp_path / "copied"  # a checkpoint copied into a new dir to resume there: allowed
    (copied / "checkpoint-2").mkdir(parents=True)
    prepare_output_dir(copied, "ppo", overwrite=False, resuming=True)
    assert (copied / MARKER).exists() and (copied / "checkpoint-2").is_dir()


def test_every_recipe_refuses_a_foreign_output_dir_before_loading_a_model(tmp_path, tiny_base):
    out = tmp_path / "mine"
    files = _foreign(out)
    common = ["--output_dir", str(out), "--overwrite_output_dir", "true"]
    stage_args = {
        "sft": ["--config", str(CONFIGS / "sft_tiny.yaml"), "--max_steps", "1"],
        "reward": ["--config", str(CONFIGS / "reward_tiny.yaml"), "--model_name_or_path", str(tiny_base)],
        "ppo": ["--config", str(CONFIGS / "ppo_tiny.yaml"), "--model_name_or_path", str(tiny_base)]
        + ["--reward_model_path", str(tiny_base)],
    }
    for stage, args in stage_args.items():
        with pytest.raises(FileExistsError, match="not written by rlhf-hf"):
            main([stage, *args, *common])
        assert _survived(files), stage


def test_pipeline_refuses_a_foreign_run_dir_and_export_a_foreign_dir(tmp_path):
    run = tmp_path / "run"
    files = _foreign(run)
    config = tmp_path / "p.yaml"
    config.write_text(yaml.safe_dump({"run_dir": str(run), "task": "tiny-sort"}))
    with pytest.raises(
        FileExistsError, match="Refusing to write a pipeline run into .*not written by rlhf-hf"
    ):
        main(["pipeline", "--config", str(config)])
    with pytest.raises(FileExistsError, match="Refusing to export into .*not an earlier export"):
        main(["export", "--model", str(tmp_path / "no-model"), "--output", str(run)])
    assert _survived(files) and sorted(p.name for p in run.iterdir()) == ["data", "notes.txt"]
    assert claim_run_dir(tmp_path / "new", "pipeline run") == tmp_path / "new"
    assert read_marker(tmp_path / "new")["stage"] == "pipeline run"
    claim_run_dir(tmp_path / "new", "pipeline run")  # ours: claimed again to resume, no error
    assert sorted(p.name for p in (tmp_path / "new").iterdir()) == [MARKER]


# ---------------------------------------------------------------------------------------------- checkpoints
def _checkpoint(path: Path, step: int) -> Path:
    """A minimal complete checkpoint, in the order PPO writes one (its state, weights, optimizer, Trainer state)."""
    path.mkdir(parents=True)
    (path / "ppo_state.json").write_text(json.dumps({"prompt_position": step}))
    (path / "policy").mkdir()
    save_file({"w": torch.full((4,), float(step))}, path / "policy" / "adapter_model.safetensors")
    torch.save({"step": step}, path / "optimizer.pt")
    (path / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    return path


WRITE_ORDER = ["ppo_state.json", "policy/adapter_model.safetensors", "optimizer.pt", "trainer_state.json"]


@pytest.mark.parametrize("files_written", range(len(WRITE_ORDER)))
def test_the_last_checkpoint_is_the_last_complete_one(tmp_path, files_written):
    """Killed between two files of checkpoint-4: in its temp dir (how we write) or, as older versions left it,
    visible under its final name; either way resuming takes checkpoint-2."""
    complete = _checkpoint(tmp_path / "out" / "checkpoint-2", 2)
    full = _checkpoint(tmp_path / "full-4", 4)
    for partial in (tmp_path / "out" / STAGING_DIR / "checkpoint-4", tmp_path / "out" / "checkpoint-4"):
        for name in WRITE_ORDER[:files_written]:
            (partial / name).parent.mkdir(parents=True, exist_ok=True)
            (partial / name).write_bytes((full / name).read_bytes())
        partial.mkdir(parents=True, exist_ok=True)
        assert resolve_checkpoint(True, tmp_path / "out") == str(complete)
        if partial.name == "checkpoint-4" and partial.parent.name == "out":
            with pytest.raises(ValueError, match=r"checkpoint-4/trainer_state.json is missing"):
                resolve_checkpoint(str(partial), tmp_path / "out")


@pytest.mark.parametrize("name", ["policy/adapter_model.safetensors", "optimizer.pt", "ppo_state.json"])
def test_a_truncated_file_names_itself(tmp_path, name):
    complete = _checkpoint(tmp_path / "out" / "checkpoint-2", 2)
    damaged = _checkpoint(tmp_path / "out" / "checkpoint-4", 4)
    data = (damaged / name).read_bytes()
    (damaged / name).write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=rf"checkpoint-4/{name} is truncated or damaged"):
        resolve_checkpoint(str(damaged), tmp_path / "out")
    assert last_complete_checkpoint(tmp_path / "out") == str(complete)  # skipped, with a warning
    with pytest.raises(ValueError, match="No complete checkpoint"):
        resolve_checkpoint(True, tmp_path / "empty")


# ---------------------------------------------------------------------------------------------- paths, stages
def test_missing_local_model_paths_are_named(tmp_path, monkeypatch):
    from rlhf_hf.modeling import resolve_inference_model, resolve_model_path

    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    for path in ("./nope", str(tmp_path / "nope"), "runs/sft/merged", "runs/sft"):
        with pytest.raises(FileNotFoundError, match=f"Model path {path} does not exist"):
            resolve_model_path(path)
    assert resolve_model_path("Qwen/Qwen2.5-0.5B") == "Qwen/Qwen2.5-0.5B"  # a Hub id stays one
    (tmp_path / "runs" / "metrics.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="runs holds no model: expected config.json"):
        resolve_inference_model("runs")
    adapter = tmp_path / "runs" / "ppo" / "policy"
    adapter.mkdir(parents=True)
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "/gone/sft/merged"}))
    with pytest.raises(FileNotFoundError, match=r"base model of adapter .*policy \(/gone/sft/merged"):
        resolve_inference_model("runs/ppo")
    with pytest.raises(FileNotFoundError, match="Model path runs/nope does not exist"):
        main(["sft", "--config", str(CONFIGS / "sft_tiny.yaml"), "--model_name_or_path", "runs/nope"])
    from rlhf_hf.data import load_split

    for path in ("data/sft.jsonl", "sft.jsonl", "./data", "runs/x"):
        with pytest.raises(FileNotFoundError, match=f"Dataset {path} does not exist"):
            load_split(path, "train")


def test_eval_names_the_missing_run_and_the_unfinished_stage(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"Run dir .*nope does not exist \(no .*nope/pipeline.yaml\)"):
        main(["eval", "--run", str(tmp_path / "nope")])
    run = tmp_path / "run"
    (run / "sft").mkdir(parents=True)
    (run / "pipeline.yaml").write_text(
        yaml.safe_dump({"run_dir": str(run), "rounds": 1, "task": "tiny-sort"})
    )
    (run / "sft" / "metrics.json").write_text("{}")
    (run / "round_1" / "reward").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"Stage 1\. reward model of run .* was started but has not"):
        main(["eval", "--run", str(run)])
    (run / "round_1" / "reward" / "metrics.json").write_text("{}")
    with pytest.raises(
        FileNotFoundError, match=r"Stage 1\. PPO of run .* has not run \(no .*round_1/ppo/metr"
    ):
        main(["eval", "--run", str(run)])


def test_demo_help_prints_help_and_starts_nothing(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "rlhf_hf.cli", "demo", "--help"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert proc.returncode == 0 and "usage: rlhf-hf demo [-h] [--seed SEED] [run_dir]" in proc.stdout
    assert list(tmp_path.iterdir()) == []


def test_cli_flags_are_not_abbreviated(capsys):
    with pytest.raises(SystemExit):
        main(["pipeline", "--config", "x.yaml", "--round", "2"])  # not --rounds
    assert "unrecognized arguments: --round 2" in capsys.readouterr().err
    with pytest.raises(ValueError, match="learning_rat"):
        main(["sft", "--config", str(CONFIGS / "sft_tiny.yaml"), "--learning_rat", "1e-3"])


def test_a_stage_reruns_into_its_own_dir_and_keeps_a_file_added_there(tmp_path, tiny_base):
    """What the pipeline does with `force: true` and a user with `overwrite_output_dir: true`."""
    from rlhf_hf import SFTRecipe

    out = tmp_path / "sft"
    args = dict(output_dir=str(out), max_steps=1, eval_gold_prompts=0, merge=False, overwrite_output_dir=True)
    SFTRecipe.from_yaml(CONFIGS / "sft_tiny.yaml", **args).run()
    first = json.loads((out / MARKER).read_text())
    assert first["finished"] and {"adapter_model.safetensors", "metrics.json"} <= set(first["written"])
    SFTRecipe.from_yaml(CONFIGS / "sft_tiny.yaml", **args).run()  # ours: replaced
    assert json.loads((out / MARKER).read_text())["started"] > first["started"]
    (out / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="did not write: notes.txt"):
        SFTRecipe.from_yaml(CONFIGS / "sft_tiny.yaml", **args).run()
    assert (out / "notes.txt").read_text() == "mine" and (out / "adapter_model.safetensors").exists()
