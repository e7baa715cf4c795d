"""Run-level operations as plain functions, for the CLI and for notebooks alike.

A run directory is the unit a user keeps (see :mod:`.rundir`). This package is split by stage:

- :mod:`.rundir`: the run directory: prepare it, resume from it, open a trained run (never touching
  its data), metrics I/O; :mod:`.lock`: one training process per run directory;
- :mod:`.build`: the diffusion, denoiser and classifier a config describes;
- :mod:`.training`: ``train_run`` and ``train_classifier_run``, one training path;
- :mod:`.conditions`: which label or string each sample gets, grid rows, the CLI's label and text specs;
- :mod:`.guided`: the denoiser a request asks for (classifier-free and/or classifier guidance);
- :mod:`.sampling`: samplers from a run's config, per-sample seeds, batches over processes, trajectories;
- :mod:`.grids`: sample grids during training; :mod:`.toy_report`: toy runs against the truth;
  :mod:`.demo`: ``ddpmlab demo``;
- :mod:`.diffusers` (with :mod:`.diffusers_scheduler`): a run as a diffusers pipeline folder and back
  (``ddpmlab export --diffusers``, ``ddpmlab import-diffusers``).

Everything public is re-exported here: ``from ddpmlab.runs import open_run, sample_run``.
"""

from ddpmlab.data import DataInfo
from ddpmlab.runs.build import build_classifier_for, build_diffusion, build_model_for
from ddpmlab.runs.conditions import (
    ConditionPlan,
    class_grid_labels,
    condition_labels,
    place_conditions,
    plan_conditions,
    text_grid_labels,
)
from ddpmlab.runs.diffusers import export_diffusers, import_diffusers
from ddpmlab.runs.guided import check_classifier, classifier_free, guidance_scale, guided_denoiser
from ddpmlab.runs.lock import RunLock
from ddpmlab.runs.rundir import (
    CHECKPOINT,
    CONFIG_FILE,
    ClassifierRun,
    Run,
    RunError,
    append_metrics,
    open_classifier,
    open_run,
    read_metrics,
    resume_config,
)
from ddpmlab.runs.sampling import (
    Trajectory,
    draw_samples,
    make_run_sampler,
    sample_images,
    sample_run,
    sample_trajectory,
    seed_generators,
    snapshot_steps,
)
from ddpmlab.runs.training import (
    check_sampling_plan,
    dry_run,
    resolve_batch_size,
    train_classifier_run,
    train_kind_run,
    train_run,
)

__all__ = [
    "CHECKPOINT",
    "DataInfo",
    "CONFIG_FILE",
    "RunError",
    "Run",
    "ClassifierRun",
    "open_run",
    "open_classifier",
    "append_metrics",
    "read_metrics",
    "build_diffusion",
    "build_model_for",
    "build_classifier_for",
    "train_run",
    "train_classifier_run",
    "train_kind_run",
    "resolve_batch_size",
    "dry_run",
    "ConditionPlan",
    "class_grid_labels",
    "text_grid_labels",
    "condition_labels",
    "place_conditions",
    "plan_conditions",
    "classifier_free",
    "guidance_scale",
    "guided_denoiser",
    "check_classifier",
    "make_run_sampler",
    "seed_generators",
    "draw_samples",
    "sample_run",
    "sample_images",
    "Trajectory",
    "snapshot_steps",
    "sample_trajectory",
    "export_diffusers",
    "import_diffusers",
    "resume_config",
    "RunLock",
    "check_sampling_plan",
]
