"""Training: loop.py (train, resume and the loop itself, on a text already read: textgen.api
locks the folder and reads it), limits.py (when a run stops), optimization.py (AdamW, the
schedule, the weight average), snapshot.py (where a run stands, for exact resume), interrupt.py
(Ctrl-C and SIGTERM), run_data.py (the text laid out as batches and a validation set, whatever the
corpus), callbacks.py (what the loop reports)."""

from textgen.training.callbacks import EvaluationReport, RunPlan, StepReport, TrainingCallbacks, TrainingResult
from textgen.training.loop import resume, train

__all__ = [
    "EvaluationReport", "RunPlan", "StepReport", "TrainingCallbacks", "TrainingResult", "resume", "train",
]
