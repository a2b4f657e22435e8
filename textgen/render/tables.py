"""The result tables: how a training run ended, a checkpoint's record (with its loss chart), a
model's scores on a text, and several models compared on one text. Each fits the terminal it is
drawn in (render.fitting)."""

from __future__ import annotations

from pathlib import Path

from rich import box
from rich.console import Group
from rich.text import Text

from textgen.checkpoint import CheckpointInfo
from textgen.checkpoint.records import LineageRecord, MetricsRow
from textgen.render.charts import LossChart
from textgen.render.console import figure
from textgen.render.fitting import Column, FittedTable
from textgen.reports import EvaluationResult, ModelRow, TrainingResult

_UNSEEN_HANDLING = {"skipped": "left out of the score", "replaced": "replaced by a known stand-in",
                    "<unk>": "scored as <unk>"}


def facts_table(title: str, rows: list[tuple[str, str]]) -> FittedTable:
    """A titled list of name and value, the name dimmed; a long value wraps, it is never cut."""
    columns = [Column("", style="dim", importance=1), Column("", importance=1)]
    return FittedTable(columns, [list(row) for row in rows], title=title, show_header=False, box=box.HEAVY_HEAD)


def training_summary(result: TrainingResult) -> FittedTable:
    best = result.best
    rows = [("stopped by", result.stop_reason), ("steps", f"{result.steps:,}"), ("time", f"{result.elapsed:.1f} s"),
            ("last training loss", figure(result.final_train_loss, 4))]
    if best.val_loss is not None:
        rows += [("best validation loss", f"{best.val_loss:.4f} nats/token (step {best.step:,})"),
                 ("best bits per character", figure(best.val_bits_per_char, 4)),
                 ("best perplexity", figure(best.val_perplexity, 2))]
    rows.append(("checkpoint", str(result.checkpoint)))
    return facts_table("training finished", rows)


def evaluation_table(result: EvaluationResult, what: str) -> FittedTable:
    rows = [("loss", f"{result.loss:.4f} nats/token"), ("perplexity", figure(result.perplexity, 3)),
            ("bits per character", figure(result.bits_per_char, 4)), ("tokens scored", f"{result.tokens:,}"),
            ("characters", f"{result.characters:,}")]
    if result.unseen:
        rows.append(("unseen symbols", f"{result.unseen:,} {_UNSEEN_HANDLING[result.unseen_handling]}"))
    return facts_table(f"evaluation of {what}", rows)


# Older checkpoints' records have no optimizer field and read as AdamW, which is what they used.
_OPTIMIZER_LABELS = {"adamw": "AdamW", "muon": "Muon on the recurrent matrices, AdamW on the rest"}


def info_table(path: Path, info: CheckpointInfo, parameters: int | None = None) -> FittedTable:
    model, tok, corpus, best, training = info.model, info.tokenizer, info.corpus, info.best, info.training
    rows = [("model", f"{model.cell} {model.layers} x {model.hidden_size}, embedding {model.embedding_size}, "
                      f"dropout {model.dropout:g}{', tied' if model.tie_weights else ''}"
                      f"{', skip connections' if model.skip_connections else ''}"
                      f"{f', mixed with {model.ngram_order}-gram counts' if model.ngram_order else ''}")]
    if parameters is not None:
        rows.append(("parameters", f"{parameters:,}"))
    documents = getattr(tok, "documents", "none")
    per_document = "" if documents == "none" else f", one document per {'line' if documents == 'lines' else 'paragraph'}"
    rows.append(("tokenizer", f"{tok.kind}, vocabulary {model.vocab_size:,}{per_document}"))
    rows.append(("corpus", f"{corpus.source} ({corpus.characters:,} characters, "
                           f"last {corpus.val_fraction:g} held out)"))
    config = training.config
    preset = f", preset {config.preset}" if config.preset else ""
    rows.append(("trained", f"{training.steps:,} steps in {training.elapsed:.0f} s, "
                            f"batch {config.batch_size} x window {config.seq_len}, "
                            f"{_OPTIMIZER_LABELS.get(config.optimizer, config.optimizer)}{preset}"))
    regularisers = [f"{name} {value:g}" for name, value in (
        ("weight decay", config.weight_decay), ("weight drop", model.weight_drop),
        ("embedding dropout", model.embedding_dropout), ("AR", config.activation_penalty),
        ("TAR", config.activation_change_penalty), ("weight average decay", config.ema_decay)) if value]
    if regularisers:
        rows.append(("regularisers", ", ".join(regularisers)))
    if best.val_loss is not None:
        rows.append(("best validation", f"{best.val_loss:.4f} nats/token, "
                                        f"{figure(best.val_bits_per_char, 4)} bits/char at step {best.step:,}"))
    if info.base is not None:
        rows.append(("fine-tuned from", lineage_text(info.base)))
    return facts_table(f"checkpoint {path}", rows)


def lineage_text(base: LineageRecord) -> str:
    """"/runs/base (weights sha256 1a2b3c4d5e6f, 2,000 steps on shakespeare), itself fine-tuned from ..."."""
    def one(record: LineageRecord) -> str:
        digest = (record.weights_sha256 or "unknown")[:12]
        return f"{record.path} (weights sha256 {digest}, {record.steps:,} steps on {record.corpus})"

    return ", itself fine-tuned from ".join(map(one, base.generations()))


def run_report(path: Path, info: CheckpointInfo, parameters: int | None, metrics: list[MetricsRow]) -> Group:
    """What a checkpoint holds and how its run went: the info table over the loss chart
    (a chart needs two evaluations to show a trend)."""
    if len(metrics) < 2:
        return Group(info_table(path, info, parameters))
    return Group(info_table(path, info, parameters), Text(), LossChart(metrics))


def comparison_table(rows: list[ModelRow], what: str) -> FittedTable:
    """Several models on one text, best first; bits per character is the column that compares,
    and in a narrow terminal the columns that explain it give way first."""
    flattered = any(row.unseen for row in rows)  # then the unseen column says why a figure is low
    columns = [Column("model", importance=9), Column("cell", importance=5),
               Column("parameters", "right", importance=4), Column("tokenizer", importance=6),
               Column("tokens", "right", importance=2), Column("nats/token", "right", importance=3),
               Column("perplexity", "right", importance=1), Column("bits/char", "right", "bold", importance=9),
               Column("bits/byte", "right", importance=0), Column("unseen", "right", importance=8 if flattered else 0)]
    cells = [[row.name, f"{row.cell} {row.layers} x {row.hidden_size}", f"{row.parameters:,}",
              f"{row.tokenizer} {row.vocab_size:,}", f"{row.tokens:,}", figure(row.nats_per_token, 4),
              figure(row.perplexity, 2), figure(row.bits_per_char, 4), figure(row.bits_per_byte, 4),
              f"{row.unseen:,} {row.unseen_handling}" if row.unseen else "0"] for row in rows]
    return FittedTable(columns, cells, title=f"models on {what}, best first")
