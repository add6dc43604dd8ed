"""Where our runs write: output dirs we can recognise as ours, and checkpoints that appear only when complete.

An output dir of ours holds `.rlhf_hf_run.json` (the marker), written when a run starts and rewritten with the
list of what the run wrote when it finishes. Overwriting (`overwrite_output_dir: true`, a pipeline re-run) removes
only that: never a dir without the marker, never one holding files the finished run did not write, and never
`.`, the home dir, a filesystem root or a git checkout (a dir holding `.git`), whatever it holds.

A checkpoint is written to `<output_dir>/.tmp-checkpoints/checkpoint-N` and renamed to `<output_dir>/checkpoint-N`
once every file (every process's, under DeepSpeed) is written, so a kill leaves at worst a temp dir that nothing
reads; resuming from "the last checkpoint" takes the newest complete one and names any damaged file it skips.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
import zipfile
from pathlib import Path
from typing import Any

from transformers.trainer import TRAINER_STATE_NAME  # Trainer writes it last into a checkpoint
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, rotate_checkpoints, sort_checkpoints

logger = logging.getLogger(__name__)

MARKER = ".rlhf_hf_run.json"
STAGING_DIR = ".tmp-checkpoints"


# ================================================================================================ output dirs
def protected_reason(path: str | os.PathLike) -> str | None:
    """Why `path` may never be cleared (the working dir or one above it, home, a root, a git checkout)."""
    p = Path(path).resolve()
    cwd, home = Path.cwd().resolve(), Path.home().resolve()
    if p == Path(p.anchor):
        return "it is a filesystem root"
    if p == cwd:
        return "it is the current directory"
    if p in cwd.parents:
        return "it contains the current directory"
    if p == home or p in home.parents:
        return "it is (or contains) the home directory"
    if (p / ".git").exists():
        return "it holds .git (a repository root)"
    return None


def read_marker(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads((path / MARKER).read_text())
    except (FileNotFoundError, NotADirectoryError):
        return None
    except json.JSONDecodeError:
        return {}  # ours, but damaged (a kill while writing it): treated as an unfinished run


def _listing(names: list[str], limit: int = 8) -> str:
    shown = ", ".join(sorted(names)[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def clear_output_dir(
    path: str | os.PathLike, what: str = "output dir", *, dry_run: bool = False
) -> list[str]:
    """Remove what an earlier run of ours wrote into `path`, raising (and removing nothing) if that is not all it
    holds; returns the removed entry names and logs them. `dry_run`: only check (and return the names)."""
    out = Path(path)
    if reason := protected_reason(out):
        raise FileExistsError(f"Refusing to clear {what} {out}: {reason}. Choose a new or empty directory.")
    entries = sorted(p.name for p in out.iterdir())
    marker = read_marker(out)
    if marker is None:
        raise FileExistsError(
            f"Refusing to clear {what} {out}: it was not written by rlhf-hf (no {MARKER}) and holds "
            f"{_listing(entries)}. Choose a new or empty directory, or remove it yourself."
        )
    if marker.get("finished"):
        written = set(marker.get("written", []))
        if foreign := [name for name in entries if name not in written and name != MARKER]:
            raise FileExistsError(
                f"Refusing to clear {what} {out}: it holds files the earlier {marker.get('stage', 'rlhf-hf')} run "
                f"did not write: {_listing(foreign)}. Move them away or choose another directory."
            )
    if dry_run:
        return entries
    # An unfinished run started in an empty dir (or one cleared like this), so all it holds is that run's.
    for name in entries:
        target = out / name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        else:
            target.unlink()
    logger.warning("overwrite: removed from %s what an earlier run wrote: %s", out, _listing(entries, 20))
    return entries


def start_output_dir(path: str | os.PathLike, stage: str) -> None:
    """Mark `path` as ours (created if needed), for a run that starts writing there now."""
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text(json.dumps({"stage": stage, "started": time.time(), "finished": False}))


def finish_output_dir(path: str | os.PathLike) -> None:
    """Record what the run wrote (every top-level entry now there), so a later overwrite removes just that."""
    out = Path(path)
    marker = read_marker(out) or {}
    marker.update(finished=True, written=sorted(p.name for p in out.iterdir() if p.name != MARKER))
    (out / MARKER).write_text(json.dumps(marker, indent=1))


def prepare_output_dir(
    path: str | os.PathLike, stage: str, *, overwrite: bool, resuming: bool = False, write: bool = True
) -> Path:
    """Check (and with `write`, clear and mark) a run's output dir before anything is written there.

    A non-empty dir is refused unless resuming (its checkpoints are read, nothing removed) or overwriting (see
    `clear_output_dir`). `write=False` checks only: every process of a multi-process run checks, so all raise
    alike, before the main one clears.
    """
    out = Path(path)
    entries = [p.name for p in out.iterdir() if p.name != MARKER] if out.is_dir() else []
    non_empty = bool(entries)
    # Resuming marks the dir ours, and a later overwrite clears what is ours: so a dir without our marker may hold
    # checkpoints (copied there to resume from) but nothing else.
    foreign = [n for n in entries if not n.startswith(f"{PREFIX_CHECKPOINT_DIR}-") and n != STAGING_DIR]
    if resuming and foreign and read_marker(out) is None:
        raise FileExistsError(
            f"Cannot resume in {out}: it was not written by rlhf-hf (no {MARKER}) and holds more than checkpoints "
            f"({_listing(foreign)}); resume in the output dir of an earlier run of ours, or in a dir with only "
            "the checkpoint(s) copied into it."
        )
    if non_empty and not resuming:
        if not overwrite:
            raise FileExistsError(
                f"Output dir {out} exists and is not empty; set `overwrite_output_dir: true` to replace an earlier "
                "run of ours there, or `resume_from_checkpoint` to continue it."
            )
        clear_output_dir(out, dry_run=not write)
    if write and not (resuming and read_marker(out) is not None):
        start_output_dir(out, stage)
    return out


def claim_run_dir(path: str | os.PathLike, stage: str) -> Path:
    """A dir several runs of ours share and that is never cleared (a pipeline's `run_dir`): new or empty, or one
    we marked earlier (resuming: its finished stages are kept); anything else is refused, as it may hold files
    of the same names as ours (`pipeline.yaml`, `summary.json`, stage dirs)."""
    out = Path(path)
    if out.is_dir() and any(out.iterdir()) and read_marker(out) is None:
        reason = protected_reason(out) or f"it was not written by rlhf-hf (no {MARKER})"
        raise FileExistsError(
            f"Refusing to write a {stage} into {out}: {reason}; it holds "
            f"{_listing([p.name for p in out.iterdir()])}. Choose a new or empty directory."
        )
    if read_marker(out) is None:
        start_output_dir(out, stage)
    return out


# ================================================================================================ checkpoints
def checkpoint_problem(checkpoint: str | os.PathLike) -> str | None:
    """What is missing or damaged in a checkpoint dir (None: every file reads), naming the file.

    Cheap checks only: safetensors headers against the file size, JSON parses, torch/zip archives end with their
    directory. A checkpoint renamed into place is complete unless a file was damaged afterwards.
    """
    root = Path(checkpoint)
    if not (root / TRAINER_STATE_NAME).is_file():
        return f"{root / TRAINER_STATE_NAME} is missing (written last: the checkpoint is incomplete)"
    for file in sorted(p for p in root.rglob("*") if p.is_file()):
        try:
            if file.suffix == ".safetensors":
                from safetensors import safe_open

                with safe_open(str(file), "pt"):
                    pass
            elif file.suffix == ".json":
                json.loads(file.read_text())
            elif file.suffix in (".pt", ".pth", ".bin") and not zipfile.is_zipfile(file):
                return f"{file} is truncated or damaged (not a complete torch archive)"
        except Exception as err:  # noqa: BLE001 - any read error means the file is damaged; say which one
            return f"{file} is truncated or damaged ({type(err).__name__}: {err})"
    return None


def last_complete_checkpoint(output_dir: str | os.PathLike) -> str | None:
    """The newest `checkpoint-N` in `output_dir` whose files all read; damaged newer ones are skipped, logged."""
    if not Path(output_dir).is_dir():
        return None
    for checkpoint in reversed(sort_checkpoints(str(output_dir))):
        if (problem := checkpoint_problem(checkpoint)) is None:
            return checkpoint
        logger.warning("Skipping %s for resuming: %s", checkpoint, problem)
    return None


def resolve_checkpoint(
    resume_from_checkpoint: str | bool | None, output_dir: str | os.PathLike
) -> str | None:
    """`True`: the last complete checkpoint in `output_dir`; a path: that checkpoint, checked file by file."""
    if resume_from_checkpoint is True:
        checkpoint = last_complete_checkpoint(output_dir)
        if checkpoint is None:
            raise ValueError(f"No complete checkpoint found in {output_dir} to resume from")
        return checkpoint
    if not resume_from_checkpoint:
        return None
    if not Path(resume_from_checkpoint).is_dir():
        raise FileNotFoundError(f"resume_from_checkpoint: no checkpoint dir {resume_from_checkpoint}")
    if problem := checkpoint_problem(resume_from_checkpoint):
        raise ValueError(f"Cannot resume from {resume_from_checkpoint}: {problem}")
    return str(resume_from_checkpoint)


class AtomicCheckpoints:
    """Trainer mixin: `checkpoint-N` appears by a rename once complete; resuming reads the last complete one.

    Trainer writes its checkpoint into `_get_output_dir(...)/checkpoint-N`; while saving, that dir is the staging
    dir. Subclasses add their own files in `save_extra_state(checkpoint_dir)` (called first, on the main process).
    """

    _staging_root: Path | None = None

    def _get_output_dir(self, trial: Any) -> str:
        if self._staging_root is not None:
            return str(self._staging_root)
        return super()._get_output_dir(trial)

    def save_extra_state(self, checkpoint_dir: Path) -> None:
        """Files of the subclass's own to put into every checkpoint (main process only)."""

    def train(self, resume_from_checkpoint: str | bool | None = None, *args: Any, **kwargs: Any) -> Any:
        checkpoint = resolve_checkpoint(resume_from_checkpoint, self.args.output_dir)
        return super().train(checkpoint, *args, **kwargs)

    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        run_dir = Path(self._get_output_dir(trial))
        name = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        staging, final = run_dir / STAGING_DIR, run_dir / name
        if self.args.should_save:
            shutil.rmtree(staging / name, ignore_errors=True)  # what a killed save left
            (staging / name).mkdir(parents=True)
            self.save_extra_state(staging / name)
        self.accelerator.wait_for_everyone()
        self._staging_root = staging
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self._staging_root = None
        best = self.state.best_model_checkpoint
        if best and Path(best).parent == staging:
            self.state.best_model_checkpoint = str(run_dir / Path(best).name)
            if self.args.should_save:
                self.state.save_to_json(str(staging / name / TRAINER_STATE_NAME))
        self.accelerator.wait_for_everyone()  # every process's files (DeepSpeed shards) are written
        if self.args.should_save and (staging / name).exists():
            if final.exists():  # a checkpoint of the same step from a run this one replays
                shutil.rmtree(final)
            (staging / name).rename(final)
            with contextlib.suppress(OSError):  # other steps' temp dirs may remain
                staging.rmdir()
            rotate_checkpoints(
                str(run_dir), self.args.save_total_limit, self.state.best_model_checkpoint, use_mtime=False
            )
        self.accelerator.wait_for_everyone()
