"""What the entry points share: where the configs are, the CPU thread count, and the rule that a mistake in the
user's input is one `error:` line and exit status 2, never a traceback, and changes nothing on disk.

Three places see the user's input, in this order, and each turns a mistake into that one line:
- `run_hydra_app` (the `__main__` of train.py and eval.py): Hydra's own errors while composing the config
  (unknown option or key, bad override syntax), which Hydra would print in ~13 lines and exit 1.
- `CheckBeforeWriting` (a Hydra callback in conf/): the entry point's checks on the composed config, run before
  Hydra creates the run folder and writes `.hydra/` into it; a sweep folder that already holds a sweep; a folder
  that cannot be made, or that another run has claimed (fmnist_lit/run_folder.py).
- `exit_on_user_error` / train.main: UserErrors raised while the task runs (data, checkpoints, divergence).
"""

from __future__ import annotations

import atexit
import functools
import logging
import os
import re
import string
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import hydra
from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
from hydra.experimental.callback import Callback
from hydra.utils import get_method
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

from fmnist_lit.run_folder import (
    SWEEP_MARKER,
    claim,
    join,
    joins_another_process,
    release_unused_sweep,
    set_hydra_dir,
    typed,
)
from fmnist_lit.utils import UserError

# the repo's conf/ (absolute: Hydra would otherwise look for a `conf` module inside the package)
CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")
# mistakes in the user's input (DatasetError and CSVFormatError are UserErrors too)
USER_ERRORS = (UserError, MissingMandatoryValue)
# config groups that may be switched off: `logger=null` means Hydra's `~logger` (Hydra 1.3 refuses `group=null`)
OPTIONAL_GROUPS = ("logger", "callbacks", "experiment", "debug", "hparams_search", "scheduler")
log = logging.getLogger(__name__)
# OMP_NUM_THREADS as the shell set it: what a run without `threads` gets back after one with (a sweep's jobs share
# this process)
SHELL_OMP_NUM_THREADS = os.environ.get("OMP_NUM_THREADS")


def set_threads(threads: int | None) -> None:
    """torch's CPU threads in this process: `threads`, or every core (parallel sweeps pass threads so that jobs x
    threads <= cores). `threads` also goes into OMP_NUM_THREADS, so that Lightning's DDP launcher keeps it (it would
    set cores // processes per node) and the ranks it starts inherit it: every layout of a world size (1 node of 2
    devices, 2 nodes of 1) then runs the same threads per process, and CPU kernels, whose sums depend on the thread
    count, train the same weights. Without `threads`, OMP_NUM_THREADS is as the shell set it."""
    # imported here: `--help` and the entry points' argument checks run without torch (fmnist_lit.cli stays light)
    import torch

    if threads is None:
        torch.set_num_threads(os.cpu_count() or 1)
        if SHELL_OMP_NUM_THREADS is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = SHELL_OMP_NUM_THREADS
        return
    torch.set_num_threads(threads)
    os.environ["OMP_NUM_THREADS"] = str(threads)


def fail(message: str) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def exit_on_user_error(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Decorate an entry point: a USER_ERRORS exception becomes `error: <message>` on stderr and exit status 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except USER_ERRORS as e:
            fail(str(e))

    return wrapper


def _override(argv: list[str], key: str, value: str | None = None) -> str:
    """The last command-line override that sets `key` (to `value`), as typed; or `key` itself."""
    found = [
        a
        for a in argv
        if a.lstrip("+~").partition("=")[0] == key and (value is None or a.partition("=")[2] == value)
    ]
    return found[-1] if found else key


def hydra_error_line(e: Exception, argv: list[str]) -> str:
    """One line for an error Hydra raised while composing the config."""
    if isinstance(e, MissingConfigException) and e.missing_cfg_file and e.options:
        group, _, option = e.missing_cfg_file.rpartition("/")
        return (
            f"{_override(argv, group, option)}: Could not find '{e.missing_cfg_file}'; "
            f"the options are {', '.join(e.options)}"
        )
    text = str(e)
    m = re.match(r"Could not override '([^']+)'", text)
    if m and "not in struct" in str(e.__cause__):
        return (
            f"{_override(argv, m.group(1))}: no such key in the config (a typo? `+{m.group(1)}=...` adds a "
            "new key)"
        )
    lines = []
    for line in text.splitlines():
        if line.startswith(("Config search path", "See https://hydra.cc")):
            break
        lines.append(line.strip())
    line = " ".join(x for x in lines if x)
    if isinstance(e, OverrideParseException):
        return f"{e.override}: not a valid override ({line})"
    return line


HELP_FLAGS = ("--help", "-h")


def help_only() -> bool:
    """True when the command line asks for `--help`: answered without importing the task's module (torch,
    Lightning: seconds)."""
    return any(a in HELP_FLAGS for a in sys.argv[1:])


def print_help(config_name: str) -> None:
    """The entry point's `--help` (its `hydra.help.template` in conf/), without Hydra's own rendering, which
    composes every option of every config group to list them (seconds): the groups are read from conf/'s folders,
    and the config is composed once, with the other arguments as overrides."""
    from hydra import compose, initialize_config_dir

    overrides = [a for a in sys.argv[1:] if a not in HELP_FLAGS]
    try:
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            cfg = compose(config_name, overrides=overrides, return_hydra_config=True)
    except (ConfigCompositionException, OverrideParseException) as e:
        fail(hydra_error_line(e, overrides))
    groups = sorted(p.name for p in Path(CONF_DIR).iterdir() if p.is_dir() and p.name != "hydra")
    listing = (
        "\n".join(
            f"{g}: {', '.join(sorted(o.stem for o in (Path(CONF_DIR) / g).glob('*.yaml')))}" for g in groups
        )
        + "\n"
    )
    # as written, interpolations unresolved (`??? ` for what must be given)
    app = OmegaConf.to_yaml(OmegaConf.masked_copy(cfg, [k for k in cfg.keys() if k != "hydra"]))  # noqa: SIM118
    text = string.Template(str(cfg.hydra.help.template)).safe_substitute(
        APP_CONFIG_GROUPS=listing, CONFIG=app, HYDRA_CONFIG_GROUPS="", FLAGS_HELP=""
    )
    print(text)
    sys.exit(0)


def hydra_task(config_name: str, task: str) -> Callable[[], Any]:
    """The entry point's `@hydra.main` app, `task` ("module.function", called with the composed config) imported
    only once Hydra has composed the config: a typo in a group, key or override is answered without importing
    torch and Lightning (seconds). Lightning's chatter is silenced before the task runs."""

    @hydra.main(version_base="1.3", config_path=CONF_DIR, config_name=config_name)
    def app(cfg: DictConfig) -> Any:
        from fmnist_lit.console import quiet_third_party

        quiet_third_party()
        return get_method(task)(cfg)

    return app


def run_hydra_app(main: Callable[[], Any]) -> None:
    """Run a `@hydra.main` function with Hydra's composition errors as one `error:` line and exit status 2.

    HYDRA_FULL_ERROR=1 is Hydra's documented switch that makes it re-raise an error instead of printing its report
    and exiting 1; the task's own errors are handled inside the task (train.main, exit_on_user_error)."""
    argv = sys.argv[1:]
    for i, a in enumerate(argv):
        group, _, value = a.partition("=")
        if value == "null" and group in OPTIONAL_GROUPS:
            argv[i] = f"~{group}"
    sys.argv[1:] = argv
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        main()
    except (ConfigCompositionException, OverrideParseException) as e:
        fail(hydra_error_line(e, argv))
    except ValueError as e:
        # Hydra's defaults list: `model=null` for a group that cannot be switched off
        if "Config group override" not in str(e):
            raise
        nulls = [a for a in argv if a.endswith("=null") and "." not in a and not a.startswith(("+", "~"))]
        fail(
            f"{' '.join(nulls) or str(e)}: this config group needs an option (only "
            f"{', '.join(OPTIONAL_GROUPS)} can be null)"
        )


class CheckBeforeWriting(Callback):
    """Hydra callback (`hydra.callbacks` in conf/train.yaml, eval.yaml, export.yaml). Hydra creates the run folder
    and writes `.hydra/` into it before the task starts, so checks made by the task come too late to leave a refused
    run folder untouched. This runs `check(cfg, run_dir)` (the entry point's: output folder and settings) first,
    then makes and claims the folder (fmnist_lit/run_folder.py): two runs started together never share one.

    A multirun is refused when its sweep folder already holds a job or a leaderboard: its leaderboard would mix the
    old jobs with the new ones (job folders are numbered from 0 again). A sweep that ends before its first job
    gives its folder back (nothing is left in it)."""

    def __init__(self, check: str | None = None) -> None:
        self.check = check

    def _claim(
        self, config: DictConfig, key: str, marker: str, content: str | None, check: Callable[[Path], None]
    ) -> Path:
        """The folder `key` names, or the next free one if that name came from conf/ and is taken (said so)."""
        asked = Path(str(OmegaConf.select(config, key)))
        try:
            folder = claim(key, asked, not typed(config, key), marker, content, check)
        except USER_ERRORS as e:
            fail(str(e))
        if folder != asked:
            set_hydra_dir(config, key, folder)
            log.warning("%s is another run's: this one writes to %s", asked, folder)
        return folder

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        if joins_another_process():
            join(config)
            return
        marker = str(config.hydra.output_subdir or ".hydra")
        # the entry point's check of its settings and of a run folder (export.py has none)
        check = functools.partial(get_method(self.check), config) if self.check else lambda folder: None
        self._claim(config, "hydra.run.dir", marker, None, check)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        asked = Path(str(config.hydra.sweep.dir))
        made = not asked.exists()
        sweep = self._claim(config, "hydra.sweep.dir", SWEEP_MARKER, "", _check_sweep)
        # Hydra's basic sweeper writes it again; other sweepers (Optuna) leave this record of the sweep
        OmegaConf.save(config, sweep / SWEEP_MARKER)
        atexit.register(release_unused_sweep, sweep, made or sweep != asked)


def _check_sweep(folder: Path) -> None:
    if folder.is_dir() and any(p.name != SWEEP_MARKER for p in folder.iterdir()):
        raise UserError(
            f"hydra.sweep.dir={folder} already holds a sweep: a second one would mix its jobs and leaderboard "
            "with the first; choose a new hydra.sweep.dir"
        )
