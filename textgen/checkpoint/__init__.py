"""The on-disk checkpoint: format.py (the files, their records, the one reader and writer of each,
loading that never runs code), atomic.py (the one way a file or folder is replaced), lock.py (one
training run per checkpoint folder)."""

from textgen.checkpoint.format import (
    CONFIG_FILE, METRICS_FILE, TRAINER_FILE, WEIGHTS_FILE, CheckpointInfo, TrainerState, check_output_directory,
    check_vocabulary,
    is_checkpoint, load_trainer_state, load_weights, read_info, read_metrics, read_whole, recover_interrupted_save,
    save_checkpoint, save_trainer_state, update_records, weights_sha256,
)

__all__ = [
    "CONFIG_FILE", "METRICS_FILE", "TRAINER_FILE", "WEIGHTS_FILE", "CheckpointInfo", "TrainerState",
    "check_output_directory", "check_vocabulary", "is_checkpoint", "load_trainer_state", "load_weights", "read_info", "read_metrics",
    "read_whole", "recover_interrupted_save", "save_checkpoint", "save_trainer_state", "update_records",
    "weights_sha256",
]
