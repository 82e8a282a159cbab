"""What every command of the CLI shares: errors as one line (or one JSON object under --json), the
message after Ctrl-C or a full disk fitted to the command, -v after the subcommand, and the flag
types and checks that refuse bad values before any work."""

from __future__ import annotations

import errno
import json
import logging
import math
from pathlib import Path

import click

from .errors import ConfigError, ResQError

COMMAND_KEY, JSON_KEY = "resq_export.command", "resq_export.json"

# Only quantize keeps finished layers for a rerun (build through its quantize stage); the other
# commands write their output whole or not at all.
_RESUMES = {"quantize": " (quantize continues from its last finished layer)",
            "build": " (build keeps its finished stages and quantize continues from its last finished layer)"}
_INTERRUPTED = {
    "quantize": "the finished layers are kept in OUT.partial/; rerun the same command to continue from the last "
                "finished layer",
    "build": "finished stages are kept and nothing half-written is left under its final name; rerun the same "
             "command to continue (quantize resumes from its last finished layer)",
    "export": "nothing half-written is left under its final name; rerun the same command to write the ONNX folder",
    "engine": "nothing half-written is left under its final name; rerun the same command to build the engine",
    "report": "nothing half-written is left under its final name; rerun the same command to write the report",
    "generate": "nothing was written",
    "validate": "nothing was written",
    "eval": "nothing was recorded",
}


def _os_hint(code: int, command: str | None) -> str | None:
    if code in (errno.ENOSPC, errno.EDQUOT):
        return "free space and rerun the same command" + _RESUMES.get(command or "", "")
    return {errno.EROFS: "choose a writable location", errno.EACCES: "choose a location you may write to",
            errno.EPERM: "choose a location you may write to"}.get(code)


def fail(ctx: click.Context, message: str, code: int) -> None:
    """End the command: `error: message` on stderr, or under --json {"error", "exit_code"} on stdout
    (stdout then always holds one JSON object, the result or the error)."""
    if ctx.meta.get(JSON_KEY):
        click.echo(json.dumps({"error": message, "exit_code": code}))
    else:
        click.echo(f"error: {message}", err=True)
    ctx.exit(code)


def _set_verbose(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value:
        logging.getLogger().setLevel(logging.INFO)


def verbose_option() -> click.Option:
    return click.Option(["-v", "--verbose"], is_flag=True, expose_value=False, callback=_set_verbose,
                        help="Log progress details.")


class ResQGroup(click.Group):
    """Bad input of any stage becomes one clear line on stderr and exit code 1 (2: a missing
    runtime); an environment fault (read-only or full disk) one line naming the path and the remedy;
    Ctrl-C says what is kept, for the command that was running. Every command takes -v too."""

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        cmd.params.append(verbose_option())
        super().add_command(cmd, name)

    def resolve_command(self, ctx: click.Context, args: list[str]):
        name, cmd, rest = super().resolve_command(ctx, args)
        ctx.meta[COMMAND_KEY] = cmd.name if cmd else name
        # seen before the subcommand parses its flags, so that its usage errors come as JSON too
        ctx.meta[JSON_KEY] = bool(cmd) and "--json" in rest and any(p.name == "as_json" for p in cmd.params)
        return name, cmd, rest

    def invoke(self, ctx: click.Context):
        command = None
        try:
            return super().invoke(ctx)
        except click.ClickException as e:
            if not ctx.meta.get(JSON_KEY):
                raise
            fail(ctx, e.format_message(), e.exit_code)
        except ResQError as e:
            fail(ctx, str(e), e.exit_code)
        except OSError as e:
            command = ctx.meta.get(COMMAND_KEY)
            hint = _os_hint(e.errno, command)
            if hint is None:
                raise
            where = f" ({e.filename})" if e.filename else ""
            fail(ctx, f"{e.strerror}{where}: {hint}", 1)
        except KeyboardInterrupt:
            command = ctx.meta.get(COMMAND_KEY)
            if not ctx.meta.get(JSON_KEY):
                click.echo("", err=True)  # past the ^C the terminal echoed
            fail(ctx, f"interrupted: {_INTERRUPTED.get(command, 'nothing was written')}", 130)


class FiniteFloat(click.ParamType):
    """A float within [low, high) (or [low, high]); nan and inf are refused by name."""

    name = "number"

    def __init__(self, low: float | None = None, high: float | None = None, high_open: bool = False):
        self.low, self.high, self.high_open = low, high, high_open

    def _range(self) -> str:
        if self.high is None:
            return f">= {self.low:g}"
        return f"in [{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"

    def convert(self, value, param, ctx):
        try:
            x = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number", param, ctx)
        if not math.isfinite(x):
            self.fail(f"{value} is not a finite number; give one {self._range()}", param, ctx)
        above = self.high is not None and (x >= self.high if self.high_open else x > self.high)
        if (self.low is not None and x < self.low) or above:
            self.fail(f"{x:g} is not {self._range()}", param, ctx)
        return x


class GroupSize(click.ParamType):
    name = "auto|N"

    def __init__(self, auto: int):
        self.auto = auto

    def convert(self, value, param, ctx):
        if isinstance(value, int):
            return value
        text = str(value).strip().lower()
        if text == "auto":
            return self.auto
        try:
            n = int(text)
        except ValueError:
            n = None
        if n is None or n < 0:
            self.fail(f"{value!r} is neither auto nor a number of channels >= 0", param, ctx)
        return n


def nonempty(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """--model "" would otherwise name the current folder."""
    if value is not None and not value.strip():
        raise click.BadParameter("is empty: give a Hugging Face folder, a .gguf file or a built-in model name "
                                 "(resq-export models lists them)")
    return value


def check_ranges(ctx: click.Context, checks: list[tuple[str, int, bool, str]]) -> None:
    """(flag, value, ok, range) for each bounded flag: one `error:` line per bad one, exit code 2."""
    bad = [(flag, value, rng) for flag, value, ok, rng in checks if not ok]
    if not bad:
        return
    lines = [f"{flag} {value} is out of range: {rng}" for flag, value, rng in bad]
    if ctx.meta.get(JSON_KEY):
        fail(ctx, "; ".join(lines), 2)
    for line in lines:
        click.echo(f"error: {line}", err=True)
    ctx.exit(2)


def check_onnx_dir(onnx_dir: Path) -> Path:
    """A build folder or an artifact given where an ONNX folder is expected: say which to pass."""
    onnx_dir = Path(onnx_dir)
    if (onnx_dir / "export.json").is_file():
        return onnx_dir
    if (onnx_dir / "onnx" / "export.json").is_file():
        raise ConfigError(f"{onnx_dir} is a build folder, not an ONNX folder: pass --onnx {onnx_dir / 'onnx'}")
    if (onnx_dir / "manifest.json").is_file():
        raise ConfigError(f"{onnx_dir} is an artifact, not an ONNX folder: export it first "
                          f"(resq-export export --artifact {onnx_dir} --out ONNX_DIR) and pass --onnx ONNX_DIR")
    return onnx_dir


def check_artifact_dir(artifact: Path, flag: str = "--artifact") -> Path:
    """A model folder (or an ONNX/build folder) given where an artifact is expected: say what it is."""
    artifact = Path(artifact)
    if (artifact / "manifest.json").is_file():
        return artifact
    expected = f"{flag} expects the folder `resq-export quantize --out` wrote (with manifest.json)"
    if (artifact / "config.json").is_file():
        raise ConfigError(f"{artifact} is a model folder, not an artifact (no manifest.json): {expected}")
    if (artifact / "export.json").is_file():
        raise ConfigError(f"{artifact} is an ONNX folder, not an artifact (no manifest.json): {expected}")
    if (artifact / "artifact" / "manifest.json").is_file():
        raise ConfigError(f"{artifact} is a build folder: pass {flag} {artifact / 'artifact'}")
    return artifact
