"""Resuming a training run: which checkpoint it continues, whether that checkpoint fits the run, and what changed.

A resumed run records the learning-rate schedules it has followed (``step_totals``) and, for a resume that
changed an option, the values before (``TrainingRun.resume_changes``), so a model card can give the exact commands.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path

from fastnst.errors import ModelFileError
from fastnst.models.spec import TransformerSpec
from fastnst.train.config import DEFAULT_EPOCHS, RESUMABLE_CHANGES, UNRECORDED, TrainConfig

log = logging.getLogger(__name__)


def resume_path(config: TrainConfig, ckpt_path: Path) -> Path | None:
    """The checkpoint ``config.resume`` names (``auto``: the one beside the output, if any), or None: a fresh start."""
    if config.resume is None:
        return None
    if config.resume == "auto":
        if ckpt_path.is_file():
            return ckpt_path
        log.info("--resume auto: no checkpoint at %s, starting from scratch", ckpt_path)
        return None
    return Path(config.resume)


def step_totals(state: dict, step: int, total_steps: int, batches_per_epoch: int) -> list[list[int]]:
    """The learning-rate schedules a resumed run has followed: ``[step, total]`` pairs, a new one when the run is
    resumed with another ``--steps``/``--epochs``. The decay then goes on from ``step``'s factor on the new total,
    so a model extended this way is only reproduced by the same sequence of commands (its card lists them)."""
    if "step_totals" in state:
        totals = json.loads(state["step_totals"])
    else:  # a checkpoint written before step totals were kept: its own config says the total it ran to
        saved = json.loads(state.get("config", "{}"))
        totals = [[0, saved.get("steps") or (saved.get("epochs") or DEFAULT_EPOCHS) * batches_per_epoch]]
    return totals if totals[-1][1] == total_steps else [*totals, [step, total_steps]]


def check_resumable(state: dict, config: TrainConfig, path: Path, spec: TransformerSpec) -> dict:
    """Refuse a checkpoint of another network; warn about options that changed since it was written and return
    their values before (what the run recorded, as JSON), so the model's card can say how each part ran."""
    missing = [k for k in ("model", "optimizer", "scheduler", "scaler", "step", "epoch", "batch_in_epoch", "rng")
               if k not in state]
    if missing:
        raise ModelFileError(path, f"a training checkpoint without {', '.join(missing)}; resume from the .ckpt.pt "
                                   "file that fastnst train wrote, or start afresh without --resume")
    if state.get("spec") != spec.to_dict():
        raise ModelFileError(path, f"holds a network of spec {state.get('spec')}, this run trains {spec.to_dict()} "
                                   f"(--spec {config.spec}, {spec.num_styles} style(s)); use the same --spec and "
                                   "styles or another output")
    saved = {**UNRECORDED, **json.loads(state.get("config", "{}"))}
    now = json.loads(json.dumps(asdict(config), default=str))
    changed = sorted(k for k in now if k not in RESUMABLE_CHANGES and saved.get(k) != now[k])
    if changed:
        log.warning("resuming %s with changed option(s) %s: the run will not match an uninterrupted one",
                    path, ", ".join(changed))
    return {k: saved.get(k) for k in changed}
