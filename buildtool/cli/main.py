"""The ``bt`` command line: a click group whose commands are imported only when run, and the
one place that turns exceptions into messages and exit codes.

Start-up time matters (``bt plan`` is run on every edit), so command modules and their heavy
dependencies (docker-py, rich) are imported lazily.

Exit codes: 0 ok, 1 a build failed, 2 usage or configuration error (``BtError``), 3 a bug in bt
(one line naming a log that holds the traceback, as pre-commit's error handler does), 130
interrupted, 141 standard output closed (``bt build --json | head -1``, handled as Ctrl-C is),
143 terminated (SIGTERM, what CI sends on cancel, handled as Ctrl-C is).
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import importlib
import os
import signal
import sys
from pathlib import Path
from typing import Any, NoReturn

import click

from buildtool import __version__
from buildtool.errors import BtError, Interrupted

INTERRUPTED = 130
TERMINATED = 128 + signal.SIGTERM
INTERNAL_ERROR = 3  # never 1, which says a build failed
CLOSED_OUTPUT = 128 + signal.SIGPIPE  # 141: what a shell reports of a writer `head` left

# name -> (module, one-line help). Kept here so `bt --help` imports no command module.
COMMANDS: dict[str, tuple[str, str]] = {
    "query": (
        "buildtool.cli.commands.query",
        "List targets matching a pattern or query expression.",
    ),
    "plan": ("buildtool.cli.commands.plan", "Show which platform builds are stale, and why."),
    "why": ("buildtool.cli.commands.why", "Explain what changed for one platform build."),
    "inputs": ("buildtool.cli.commands.inputs", "List the files one platform build's key covers."),
    "build": (
        "buildtool.cli.commands.build",
        "Build stale platform builds and record their digests.",
    ),
    "test": ("buildtool.cli.commands.test", "Run the image tests of built targets."),
    "merge": ("buildtool.cli.commands.merge", "Put multi-platform indexes for built images."),
    "promote": (
        "buildtool.cli.commands.promote",
        "Copy recorded images and indexes to other registries by digest.",
    ),
    "lock": ("buildtool.cli.commands.lock", "Work with lockfile fragments from parallel runs."),
    "watch": ("buildtool.cli.commands.watch", "Rebuild what each edit touches, until Ctrl-C."),
    "ci": ("buildtool.cli.commands.ci", "Plan CI jobs over native runners; write the workflow."),
    "clean": ("buildtool.cli.commands.clean", "Remove the cache directory's derived state."),
    "import-bake": (
        "buildtool.cli.commands.import_bake",
        "Write BUILD.images from `docker buildx bake --print` output.",
    ),
    "completion": ("buildtool.cli.commands.completion", "Print the shell completion script."),
}

# Every option can come from the environment: BT_<COMMAND>_<OPTION> (named from the long flag;
# click's auto_envvar_prefix covers the rest, such as -C's BT_DIRECTORY), and the options
# several commands share by one name (BT_JOBS, ...).
ENVVAR_PREFIX = "BT"


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return [name for name, (module, _) in COMMANDS.items() if _module_exists(module)]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        entry = COMMANDS.get(cmd_name)
        if entry is None or not _module_exists(entry[0]):
            return None
        module = importlib.import_module(entry[0])
        command: click.Command = module.command
        _take_directory(command)
        _name_envvars(command, f"{ENVVAR_PREFIX}_{cmd_name.replace('-', '_').upper()}")
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, COMMANDS[name][1]) for name in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


def _change_directory(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    if value:
        os.chdir(value)


def _take_directory(command: click.Command) -> None:
    """``-C DIR`` after the command too (``bt plan -C DIR //...``), as before it: relative to
    where an earlier ``-C`` (or BT_DIRECTORY, read once, by ``bt`` itself) went."""
    if not any(param.name == "directory" for param in command.params):
        command.params.insert(
            0,
            click.Option(
                ["-C", "directory"],
                type=click.Path(file_okay=False, exists=True),
                metavar="DIRECTORY",
                expose_value=False,
                is_eager=True,
                callback=_change_directory,
                allow_from_autoenv=False,
                help="Run as if bt was started in DIRECTORY (also before the command; "
                "env var: BT_DIRECTORY).  [default: the current directory]",
            ),
        )
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            _take_directory(sub)


def _name_envvars(command: click.Command, prefix: str) -> None:
    """Every option reads BT_<COMMAND>_<OPTION>, named after its long flag (BT_PLAN_ALL for
    `bt plan --all`), unless several commands share it (BT_PLATFORM); --help shows it."""
    for param in command.params:
        if not isinstance(param, click.Option) or param.name in ("help", "version", "directory"):
            continue
        if param.envvar is None:
            flag = next((o for o in param.opts if o.startswith("--")), param.opts[0])
            param.envvar = f"{prefix}_{flag.lstrip('-').replace('-', '_').upper()}"
        param.show_envvar = True
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            _name_envvars(sub, f"{prefix}_{name.replace('-', '_').upper()}")


def _module_exists(module: str) -> bool:
    from importlib.util import find_spec

    return find_spec(module) is not None


@click.group(
    cls=LazyGroup,
    context_settings={
        "help_option_names": ["-h", "--help"],
        "max_content_width": 100,
        "show_default": True,
    },
)
@click.version_option(__version__, "--version", prog_name="bt", message="%(prog)s %(version)s")
@click.option(
    "-C",
    "directory",
    type=click.Path(file_okay=False, exists=True),
    help="Run as if bt was started in DIRECTORY.  [default: the current directory]",
    metavar="DIRECTORY",
    show_envvar=True,
)
def cli(directory: str | None) -> None:
    """bt builds large matrices of Docker images incrementally.

    A platform build runs only when the content of something it depends on changed.
    Targets are declared in BUILD.images files; the workspace root holds .cache-spec.

    \b
    Labels:   //matrix:large-v3-zh   :name (relative to the current package)
    Patterns: //...  //matrix/...  //matrix:all

    Exit codes: 0 ok, 1 a build failed, 2 usage or configuration error, 3 internal error (bt
    names the log holding the details), 130 interrupted, 141 standard output closed (a run
    stops as on Ctrl-C), 143 terminated (SIGTERM).

    Every option can be set in the environment: one variable for an option several commands
    share (BT_DIRECTORY for -C, BT_PLATFORM, BT_PUSH, BT_PROGRESS, BT_JSON, BT_JOBS, BT_FORMAT,
    BT_DRY_RUN, BT_BUILDS_PER_JOB, BT_EVENT, BT_TAG_TEMPLATE, BT_TRACE), BT_<COMMAND>_<OPTION>
    for the others (BT_PLAN_ALL=1).
    -C DIRECTORY goes before or after the command. Each --help names the variable.
    """
    if directory:
        os.chdir(directory)


_terminated: list[int] = []  # the SIGTERM received, if any


def _terminate(signum: int, frame: object) -> None:
    """SIGTERM is Ctrl-C with another exit code: running builds are cancelled, finished ones
    recorded with the indexes that follow from them, and a summary printed."""
    _terminated.append(signum)
    raise KeyboardInterrupt


def _interrupted() -> int:
    return TERMINATED if _terminated else INTERRUPTED


def run() -> NoReturn:
    """The ``bt`` program: ``main``, then an exit that skips the interpreter's teardown, which
    frees every object one by one (a tenth of a large no-op plan; the kernel frees the memory
    at once). Exit handlers still run and output is flushed; with threads still running it
    exits as usual, waiting for them."""
    try:
        main()
        status = 0
    except SystemExit as stop:
        status = _status(stop.code)
    threading = sys.modules.get("threading")
    if threading is not None and threading.active_count() > 1:
        sys.exit(status)
    if sys.getprofile() is not None or sys.gettrace() is not None:
        sys.exit(status)  # a profiler or a debugger writes its findings at the usual exit
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe: nothing more to say
            stream.flush()
    atexit._run_exitfuncs()
    os._exit(status)


def _status(code: object) -> int:
    """The exit status ``sys.exit(code)`` gives, as the interpreter turns it into one."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> Any:
    with contextlib.suppress(ValueError):  # only the main thread may set handlers
        signal.signal(signal.SIGTERM, _terminate)
    # A plan allocates a few objects per file and per build and frees few of them: collecting
    # young objects every 700 allocations cost 15% of a 10,000-target no-op, for no memory.
    gc.set_threshold(50_000, 20, 20)
    try:
        if "_BT_COMPLETE" in os.environ:
            import buildtool.cli.completion  # noqa: F401  (registers bt's bash completion)
        return cli.main(
            args=argv, prog_name="bt", standalone_mode=False, auto_envvar_prefix=ENVVAR_PREFIX
        )
    except BtError as err:
        if isinstance(err, Interrupted) and _reader_gone():
            _stop_for_closed_output()
        click.echo(_scrubbed(str(err)), err=True)
        sys.exit(_interrupted() if isinstance(err, Interrupted) else err.exit_code)
    except (click.exceptions.Abort, KeyboardInterrupt):
        if _reader_gone():
            _stop_for_closed_output()
        click.echo("terminated" if _terminated else "interrupted", err=True)
        sys.exit(_interrupted())
    except click.UsageError as err:
        # One line, like every other bad input: the command, and what is wrong with it.
        command = err.ctx.command_path if err.ctx is not None else "bt"
        click.echo(f"{command}: {err.format_message()} (see {command} --help)", err=True)
        sys.exit(2)
    except click.ClickException as err:
        err.show()
        sys.exit(2 if err.exit_code != 0 else 0)
    except click.exceptions.Exit as err:
        sys.exit(err.exit_code)
    except BrokenPipeError:
        # Output piped into `head`: not an error of ours.
        sys.stderr.close()
        sys.exit(0)
    except Exception as err:  # a bug: one line for the user, the traceback in a log
        click.echo(_report_crash(err, argv if argv is not None else sys.argv[1:]), err=True)
        sys.exit(INTERNAL_ERROR)


def _reader_gone() -> bool:
    """Whether a run's output lost its reader (``reporter.ReaderGuard``)."""
    module = sys.modules.get("buildtool.cli.reporter")
    return module is not None and bool(module.ReaderGuard.closed_by_reader)


def _stop_for_closed_output() -> NoReturn:
    """``bt build --json | head -1``: the run stopped as an interrupt does; say so on stderr
    and exit as a process killed by SIGPIPE would."""
    click.echo(
        "bt: standard output was closed (its reader stopped reading), so the run stopped; "
        "finished builds are recorded: run again to resume",
        err=True,
    )
    sys.exit(CLOSED_OUTPUT)


def _scrubbed(text: str) -> str:
    """``text`` without secrets and credentials (``buildtool.secrets``), if any was seen."""
    module = sys.modules.get("buildtool.secrets")  # not imported: nothing to conceal yet
    return module.scrub(text) if module is not None else text


def _report_crash(err: Exception, argv: list[str]) -> str:
    """Write the traceback to the crash log; the one line to print."""
    import datetime
    import traceback

    what = _scrubbed(" ".join(f"{type(err).__name__}: {err}".split()))
    try:
        where = os.getcwd()
    except OSError:  # the current directory was removed
        where = "(a removed directory)"
    text = (
        f"bt {__version__}, python {sys.version.split()[0]}, in {where}\n"
        f"command: bt {' '.join(argv)}\n\n" + "".join(traceback.format_exception(err))
    )
    text = _scrubbed(text)
    from buildtool.state.cachedir import claim, crash_log_path

    now = datetime.datetime.now()
    for cache_dir in dict.fromkeys((_cache_dir(), None)):
        path = crash_log_path(cache_dir, now)
        try:
            if cache_dir is not None:
                claim(cache_dir)  # only into a cache directory bt can prove is its own
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        except BtError:
            continue
        except OSError:
            with contextlib.suppress(OSError):
                path.unlink()  # a full disk leaves no empty log behind
            continue  # an unusable cache directory may be the very bug: try the next place
        return f"bt: internal error ({what}); the traceback is in {path}"
    return f"bt: internal error ({what}); no log could be written"


def _cache_dir() -> Path | None:
    """The workspace's cache directory, if its configuration loads."""
    from buildtool.workspace.config import find_root, load_config

    try:
        return load_config(find_root(Path.cwd())).cache_dir
    except Exception:
        return None
