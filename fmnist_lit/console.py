"""What a run shows on the console and writes to train.log.

- `ProgressBar`: Lightning's tqdm bar on a terminal, titled `epoch k/N` (epochs count from 1 everywhere people read
  them) with the whole run's ETA; off when stdout is not a terminal (CI, `tee`, nohup), where its `\\r` redraws
  would become thousands of lines.
- `EpochLog`: one log line per finished epoch with everything logged for it (console and train.log alike), and on
  Ctrl-C the epoch reached and the command that resumes the run.
- `NetSummary`: Lightning's layer table restricted to the network (the metric objects around it have no weights).
- `quiet_third_party()`: the entry points call it; third-party deprecation notices, advertisements and device
  inventories say nothing a user of this project can act on.
"""

from __future__ import annotations

import logging
import math
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelSummary, TQDMProgressBar
from lightning.pytorch.callbacks.progress.tqdm_progress import Tqdm
from lightning.pytorch.utilities.exceptions import SIGTERMException
from lightning.pytorch.utilities.model_summary import get_human_readable_count

log = logging.getLogger(__name__)

# Lightning's INFO lines: device inventory ("GPU available: False", "TPU available"), "Seed set to 0", products
# ("💡 Tip: ... litlogger"), loop narration ("`Trainer.fit` stopped", printed onto the bar's line). What they say is
# in config.yaml and the epoch lines; quiet_third_party() keeps their warnings and errors only.
_CHATTY_LOGGERS = (
    "lightning.pytorch.utilities.rank_zero",
    "lightning.fabric.utilities.rank_zero",
    "lightning.fabric.utilities.seed",
    "lightning.pytorch.accelerators.cuda",
)
# Lightning's warnings about settings a short run makes moot: fewer batches than trainer.log_every_n_steps
_MOOT_WARNINGS = (r"The number of training batches \(\d+\) is smaller than the logging interval",)
_THIRD_PARTY = r"(torch|torchvision|torchmetrics|lightning|lightning_fabric|pytorch_lightning|hydra|omegaconf|tensorboard)"


def quiet_third_party() -> None:
    """Silence deprecation warnings raised inside third-party packages, Lightning's moot warnings, and
    Lightning's INFO chatter. `python -W ...` or PYTHONWARNINGS still decide for themselves (the Python
    convention)."""
    if not sys.warnoptions:
        for category in (DeprecationWarning, PendingDeprecationWarning, FutureWarning):
            warnings.filterwarnings("ignore", category=category, module=_THIRD_PARTY + r"(\.|$)")
        # ModelSummary's size estimate under bf16: about a number NetSummary does not print
        warnings.filterwarnings("ignore", message=r"Precision .* is not supported by the model summary")
        for message in _MOOT_WARNINGS:
            warnings.filterwarnings("ignore", message=message)
    for name in _CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def _duration(seconds: float) -> str:
    """12 s, 3 min 05 s, 1 h 02 min."""
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def _epochs(trainer: L.Trainer) -> str:
    """`/N` for `epoch k/N`, or nothing when the run has no epoch limit."""
    n = trainer.max_epochs
    return f"/{n}" if n is not None and n > 0 else ""


class _RunClock:
    """Time since training started and the ETA of the whole run (to max_epochs), from the fraction done so far."""

    t0: float | None = None
    first_epoch = 0

    def start(self, trainer: L.Trainer) -> None:
        # a resumed run starts mid-way
        self.t0, self.first_epoch = time.monotonic(), trainer.current_epoch

    def eta(self, trainer: L.Trainer, epochs_done: float) -> float | None:
        """Seconds left, given `epochs_done` (fractional) since this run's first epoch; None if unknown."""
        todo = (trainer.max_epochs or -1) - self.first_epoch
        if self.t0 is None or todo <= 0 or epochs_done <= 0:
            return None
        return (time.monotonic() - self.t0) / epochs_done * max(0.0, todo - epochs_done)


class ProgressBar(TQDMProgressBar):
    """Lightning's tqdm bars, titled `epoch k/N` with the whole run's ETA in the bar's postfix.

    bars: None = only when stdout is a terminal; off, nothing is drawn (EpochLog still reports every epoch).
    """

    def __init__(self, refresh_rate: int = 20, bars: bool | None = None) -> None:
        super().__init__(refresh_rate=refresh_rate)
        if not (sys.stdout.isatty() if bars is None else bars):
            self.disable()
        self._clock = _RunClock()

    def on_train_start(self, trainer: L.Trainer, *args: Any) -> None:
        super().on_train_start(trainer, *args)
        self._clock.start(trainer)

    def on_train_epoch_start(self, trainer: L.Trainer, *args: Any) -> None:
        super().on_train_epoch_start(trainer, *args)
        self.train_progress_bar.set_description(f"epoch {trainer.current_epoch + 1}{_epochs(trainer)}")

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        items = super().get_metrics(trainer, pl_module)
        # the logger's version: a run label here, shown in TensorBoard instead
        items.pop("v_num", None)
        batches = self.total_train_batches
        if isinstance(batches, (int, float)) and batches and not math.isinf(batches):
            done = trainer.current_epoch - self._clock.first_epoch + self.train_progress_bar.n / batches
            eta = self._clock.eta(trainer, done)
            if eta is not None:
                items["run eta"] = _duration(eta)
        return items


# in an epoch line these come first, the rest alphabetically
_FIRST = ("loss", "ce", "acc", "acc_best")


def _first_names(item: str) -> tuple[int, str]:
    name = item.split(" ", 1)[0]
    return (_FIRST.index(name) if name in _FIRST else len(_FIRST), name)


class EpochLog(L.Callback):
    """One INFO line per finished epoch: `epoch k/N (time; run eta) | train ... | val ...`, every metric logged
    for that epoch. Printed when the epoch is complete: Lightning runs validation, then `on_train_epoch_end` (where
    the train metrics are logged), so the line waits for the next epoch's start (or the end of training).
    On Ctrl-C it logs where the run stopped and the command that resumes it from last.ckpt."""

    def __init__(self) -> None:
        self._clock = _RunClock()
        # (epoch, seconds) finished but not yet printed
        self._pending: tuple[int, float] | None = None
        # the last epoch that ran validation: older val/* values are not this epoch's
        self._val_epoch = -1

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._clock.start(trainer)
        self._epoch_t0 = time.monotonic()

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._flush(trainer)
        self._epoch_t0 = time.monotonic()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._val_epoch = trainer.current_epoch

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._pending = (trainer.current_epoch, time.monotonic() - self._epoch_t0)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._flush(trainer)

    def _flush(self, trainer: L.Trainer) -> None:
        if self._pending is None or not trainer.is_global_zero:
            return
        epoch, seconds = self._pending
        self._pending = None
        eta = self._clock.eta(trainer, epoch + 1 - self._clock.first_epoch)
        head = f"epoch {epoch + 1}{_epochs(trainer)} ({_duration(seconds)}"
        head += f"; run eta {_duration(eta)})" if eta is not None and eta >= 0.5 else ")"
        line = " | ".join([head, *self.metric_groups(trainer.callback_metrics, val=self._val_epoch == epoch)])
        # a bar on the terminal is cleared, then redrawn under the line
        with Tqdm.external_write_mode():
            log.info(line)

    @staticmethod
    def metric_groups(metrics: dict[str, Any], val: bool = True) -> list[str]:
        """`train loss 0.4123 acc 0.8510`, `val ...`: epoch-level values by prefix (per-step `*_step` left out)."""
        groups: dict[str, list[str]] = {}
        for key, value in metrics.items():
            prefix, _, name = key.rpartition("/")
            if not prefix or name.endswith("_step") or (not val and prefix != "train"):
                # no prefix: Lightning's own (epoch); val/test_each_epoch only if validation ran
                continue
            groups.setdefault(prefix, []).append(f"{name} {float(value):.4f}")
        order = sorted(groups, key=lambda p: (p != "train", p != "val", p))
        return [f"{p} {' '.join(sorted(groups[p], key=_first_names))}" for p in order]

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        # Ctrl-C, or SIGTERM (a cluster's time limit, `kill`): Lightning stops the run and calls this hook
        if not isinstance(exception, (KeyboardInterrupt, SIGTERMException)) or not trainer.is_global_zero:
            return
        how = "interrupted (Ctrl-C)" if isinstance(exception, KeyboardInterrupt) else "stopped by SIGTERM"
        log.warning(
            "%s during epoch %d%s (step %d)",
            how,
            trainer.current_epoch + 1,
            _epochs(trainer),
            trainer.global_step,
        )
        ckpt = trainer.checkpoint_callback
        last = Path(ckpt.last_model_path) if ckpt is not None and ckpt.last_model_path else None
        if last is not None and last.is_file():
            # where last.ckpt stands: it is rewritten every few steps, so often in the middle of an epoch
            saved = torch.load(last, map_location="cpu", weights_only=True)
            log.warning(
                "resume from last.ckpt (written at step %d, in epoch %d), into a new run folder: %s",
                saved["global_step"],
                saved["epoch"] + 1,
                resume_command(last),
            )
        else:
            log.warning(
                "no checkpoint yet (none is written before the first epoch ends): run the command again"
            )


def resume_command(last_ckpt: Path) -> str:
    """The command line that continues this run from `last_ckpt`: the run's own overrides plus ckpt_path."""
    from hydra.core.hydra_config import HydraConfig

    args = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else sys.argv[1:]
    args = [a for a in args if not a.lstrip("+~").startswith(("ckpt_path=", "hydra.run.dir="))]
    return " ".join(["python train.py", *args, f"ckpt_path={last_ckpt}"])


# NetSummary's columns, as Lightning's summary names them
_SUMMARY_COLUMNS = ("Name", "Type", "Params")


class NetSummary(ModelSummary):
    """Lightning's layer table with the network's rows only (`net` and `net.*`): the LightningModule's metric
    objects and loss would otherwise fill it. Columns: name, type, parameters; Lightning's FLOPs column (0 unless
    the module has an example input) and its train/eval mode counts are left out. The totals are the whole
    module's (the metrics have no weights)."""

    @staticmethod
    def summarize(
        summary_data: list[tuple[str, list[str]]],
        total_parameters: int,
        trainable_parameters: int,
        model_size: float,
        *args: Any,
        **kwargs: Any,
    ) -> None:
        columns = dict(summary_data)
        keep = [i for i, n in enumerate(columns.get("Name", [])) if n == "net" or n.startswith("net.")]
        rows = [(str(k), *(columns[c][i] for c in _SUMMARY_COLUMNS)) for k, i in enumerate(keep)]
        header = ("", *_SUMMARY_COLUMNS)
        widths = [max(len(r[c]) for r in [header, *rows]) for c in range(len(header))]
        lines = [" | ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in [header, *rows]]
        rule = "-" * max(map(len, lines))
        params = f"{get_human_readable_count(total_parameters)} parameters"
        trainable = f"{get_human_readable_count(trainable_parameters)} trainable"
        log.info(
            "\n".join(["", lines[0], rule, *lines[1:], rule, f"{params} ({trainable}), {model_size:,.1f} MB"])
        )
