"""python -m parity.check: the port checker from the command line, on your own model's factories.

    python -m parity.check --glue examples.ports.gpt2
    python -m parity.check --torch mypkg.models:make_torch --flax mypkg.models:make_flax --inputs batch.npz \\
        --steps 2 --optimizer adam --lr 1e-3 --output logits --ignore 'lm_head=tied to the embedding'

``--torch`` names a function returning the torch model; ``--flax`` one returning the port: ``(module, variables)``
for Linen, the NNX module, or a Linen module alone (then its variables are converted from the torch model's
state_dict by layer type); it may take the torch model as its one argument. ``--glue MODULE`` takes
``make_torch``, ``make_flax``, ``sample_inputs`` and ``flax_inputs`` from one module, and ``CHECK`` (a dict of
``check_port`` keywords) where it has one. Inputs: ``--inputs FILE.npz`` (the array ``targets``; the others are
the inputs, by name, or the one array ``inputs``) or ``--sample MODULE:FN`` returning ``(inputs, targets)``.

Prints the report with its diagnosis, writes ``<out-dir>/port_check.json`` and ``port_check.png`` (gap over
tolerance per layer and phase, the first divergence marked), and exits 0 on PASS, 1 on FAIL, 2 on bad input
with one ``error:`` line.
"""
from __future__ import annotations

import argparse
import importlib
import inspect
import json
import sys
from pathlib import Path

PROG = "python -m parity.check"


class UsageError(Exception):
    """A bad flag, factory or input: one ``error:`` line, exit 2."""


def _resolve(spec: str, what: str):
    module, sep, attr = spec.partition(":")
    if not sep or not module or not attr:
        raise UsageError(f"{what} {spec!r} is not MODULE:FUNCTION")
    try:
        mod = importlib.import_module(module)
    except Exception as e:  # noqa: BLE001 -- whatever the user's module raises on import is reported, not a traceback
        raise UsageError(f"{what} {spec!r}: cannot import {module!r}: {type(e).__name__}: {e}") from e
    if not hasattr(mod, attr):
        raise UsageError(f"{what} {spec!r}: module {module!r} has no {attr!r}")
    return getattr(mod, attr)


def _call_factory(fn, what: str, *args):
    try:
        n = len([p for p in inspect.signature(fn).parameters.values()
                 if p.default is inspect.Parameter.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)])
        return fn(*args[:n]) if n else fn()
    except UsageError:
        raise
    except Exception as e:  # noqa: BLE001 -- the user's factory failing is bad input: one line
        raise UsageError(f"{what} raised {type(e).__name__}: {e}") from e


def _load_npz(path: str):
    import numpy as np  # noqa: PLC0415 -- after the flags are parsed

    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (OSError, ValueError) as e:
        raise UsageError(f"--inputs {path}: {e}") from e
    if "targets" not in arrays:
        raise UsageError(f"--inputs {path}: no array named 'targets' (it holds {sorted(arrays)})")
    targets = arrays.pop("targets")
    if not arrays:
        raise UsageError(f"--inputs {path}: no input arrays besides 'targets'")
    inputs = arrays.pop("inputs") if list(arrays) == ["inputs"] else arrays
    return inputs, targets


def _pairs(items: list[str], flag: str) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"{flag} {item!r} is not KEY=VALUE")
        out[key] = value
    return out


def build(a) -> tuple:
    """The check_port arguments from the flags (UsageError on bad input)."""
    glue = None
    if a.glue:
        try:
            glue = importlib.import_module(a.glue)
        except Exception as e:  # noqa: BLE001 -- the user's module: one line
            raise UsageError(f"--glue {a.glue!r}: cannot import it: {type(e).__name__}: {e}") from e
    make_torch = _resolve(a.torch, "--torch") if a.torch else getattr(glue, "make_torch", None)
    make_flax = _resolve(a.flax, "--flax") if a.flax else getattr(glue, "make_flax", None)
    if make_torch is None or make_flax is None:
        raise UsageError("give --torch and --flax (MODULE:FUNCTION), or --glue MODULE with make_torch and make_flax")
    torch_model = _call_factory(make_torch, "the torch factory")
    import torch  # noqa: PLC0415 -- the factories decide what is imported first

    if not isinstance(torch_model, torch.nn.Module):
        raise UsageError(f"the torch factory returned a {type(torch_model).__name__}, not a torch.nn.Module")
    port = _call_factory(make_flax, "the Flax factory", torch_model)
    variables = None
    if isinstance(port, tuple):
        if len(port) != 2:
            raise UsageError(f"the Flax factory returned a tuple of {len(port)}, expected (module, variables)")
        port, variables = port
    else:
        import flax.linen as nn  # noqa: PLC0415

        if isinstance(port, nn.Module):  # a Linen module alone: torch's weights converted by layer type
            from quickstart_parity_common.convert import (  # noqa: PLC0415
                ConversionError,
                kinds_of,
                state_dict_to_variables,
            )

            try:
                variables = state_dict_to_variables(torch_model.state_dict(), kinds=kinds_of(torch_model.named_modules()))
            except ConversionError as e:
                raise UsageError(f"the torch weights do not convert to Flax variables: {e}") from e
    if a.inputs:
        batch = _load_npz(a.inputs)
    else:
        sample = _resolve(a.sample, "--sample") if a.sample else getattr(glue, "sample_inputs", None)
        if sample is None:
            raise UsageError("give --inputs FILE.npz or --sample MODULE:FUNCTION (or a --glue module with sample_inputs)")
        batch = _call_factory(sample, "the sample function")
        if not (isinstance(batch, tuple) and len(batch) == 2):
            raise UsageError("the sample function must return (inputs, targets)")
    kwargs = dict(getattr(glue, "CHECK", {}) or {})
    flax_inputs = _resolve(a.flax_inputs, "--flax-inputs") if a.flax_inputs else getattr(glue, "flax_inputs", None)
    if flax_inputs is not None:
        kwargs["flax_inputs"] = flax_inputs
    if a.output:
        kwargs["output"] = a.output
    if a.loss:
        kwargs["loss"] = a.loss
    if a.ignore:
        kwargs["ignore"] = {**kwargs.get("ignore", {}), **_pairs(a.ignore, "--ignore")}
    if a.names:
        kwargs["names"] = {**kwargs.get("names", {}), **_pairs(a.names, "--names")}
    from parity import SGD, Adam, AdamW  # noqa: PLC0415

    try:
        kwargs["optimizer"] = {"sgd": SGD, "adam": Adam, "adamw": AdamW}[a.optimizer](lr=a.lr)
    except ValueError as e:
        raise UsageError(f"--lr {a.lr}: {e}") from e
    kwargs["steps"] = a.steps
    return torch_model, port, variables, batch, kwargs


def report_dict(report) -> dict:
    return {"ok": report.ok, "seconds": report.seconds,
            "diagnosis": None if report.diagnosis is None else str(report.diagnosis),
            "problems": report.problems, "matched": report.matched, "ignored": report.ignored,
            "checks": [{"phase": c.phase, "name": c.name, "jax_name": c.jax_name, "gap": c.gap, "tol": c.tol,
                        "err_torch": c.err_torch, "err_jax": c.err_jax, "gap64": c.gap64, "tol64": c.tol64,
                        "ok": c.ok, "reason": c.reason} for c in report.checks]}


def plot(report, path: Path, title: str) -> Path:
    """Gap / tolerance per entry in torch's order, one panel per phase family, the line at 1, the first divergence
    marked and the diagnosis as the caption; the steps' loss gap against its tolerance below."""
    import matplotlib  # noqa: PLC0415 -- only the command draws

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415

    phases = [p for p in ("start", "forward (eval)", "forward (train)", "gradients") if p in report.phases()]
    steps = [p for p in report.phases() if p.startswith("step")]
    fig, axes = plt.subplots(len(phases) + (1 if steps else 0), 1, figsize=(11, 2.3 * (len(phases) + bool(steps)) + 1),
                             squeeze=False)
    first = report.first_divergence()
    floor = 1e-3
    for ax, phase in zip(axes[:, 0], phases, strict=False):
        mine = [c for c in report.checks if c.phase == phase]
        ratio = np.array([(c.gap / c.tol) if c.tol > 0 and np.isfinite(c.gap) else (0.0 if c.gap == 0 else 1e6)
                          for c in mine])
        ratio = np.clip(np.nan_to_num(ratio, nan=1e6), floor, 1e6)
        colors = ["tab:green" if c.ok else "tab:red" for c in mine]
        ax.scatter(range(len(mine)), ratio, c=colors, s=14, zorder=3)
        ax.plot(range(len(mine)), ratio, color="0.7", lw=0.8, zorder=2)
        ax.axhline(1.0, color="k", lw=1, ls="--")
        ax.set_yscale("log")
        ax.set_ylabel("gap / tol")
        exact = " (entries equal to the bit drawn at 1e-3)" if any(c.gap == 0 for c in mine) else ""
        ax.set_title(f"{phase}: {sum(not c.ok for c in mine)}/{len(mine)} beyond tolerance{exact}", loc="left", fontsize=9)
        if first is not None and first.phase == phase:
            i = mine.index(first)
            left = i > len(mine) / 2  # the label on the side with room
            ax.annotate(f"first divergence: {first.name}", (i, ratio[i]), xytext=(-10 if left else 10, -4),
                        textcoords="offset points", fontsize=8, color="tab:red", va="top",
                        ha="right" if left else "left")
        ticks = range(0, len(mine), max(1, len(mine) // 12))
        ax.set_xticks(list(ticks))
        ax.set_xticklabels([mine[i].name[-28:] for i in ticks], rotation=20, ha="right", fontsize=6)
    if steps:
        ax = axes[-1, 0]
        x = np.arange(1, len(steps) + 1)

        def ratio_of(c):
            return min(max(c.gap / c.tol if c.tol > 0 and np.isfinite(c.gap) else 1e6, floor), 1e6)
        worst = [max(ratio_of(c) for c in report.checks if c.phase == s) for s in steps]
        loss = [ratio_of(next(c for c in report.checks if c.phase == s and c.name == "loss")) for s in steps]
        ax.semilogy(x, worst, "o-", color="tab:red" if any(w > 1 for w in worst) else "tab:green",
                    label="worst entry (loss, parameters, buffers)")
        ax.semilogy(x, loss, "s--", color="tab:blue", label="loss")
        ax.axhline(1.0, color="k", lw=1, ls="--")
        bad = [sum(not c.ok for c in report.checks if c.phase == s) for s in steps]
        ax.set_title("optimizer steps: " + ", ".join(f"{s}: {b} beyond" for s, b in zip(steps, bad, strict=True)),
                     loc="left", fontsize=9)
        ax.set_xticks(x)
        ax.set_xlim(0.5, len(steps) + 0.5)
        ax.set_ylabel("gap / tol")
        ax.set_xlabel("optimizer step")
        ax.legend(fontsize=8, loc="best")
    verdict = "PASS" if report.ok else "FAIL"
    caption = f"{title}: {verdict}"
    if report.diagnosis is not None:
        caption += f"\ndiagnosis: {report.diagnosis}"
    caption = _wrap(caption, 150)
    fig.suptitle(caption, fontsize=9, x=0.01, ha="left")
    top = 1 - (0.5 + 0.18 * caption.count("\n")) / fig.get_figheight()  # the caption's lines, in inches
    fig.tight_layout(rect=(0, 0, 1, top))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _wrap(text: str, width: int) -> str:
    import textwrap  # noqa: PLC0415

    return "\n".join(textwrap.fill(line, width) for line in text.splitlines())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--glue", help="a module with make_torch, make_flax, sample_inputs (and flax_inputs, CHECK)")
    p.add_argument("--torch", help="MODULE:FUNCTION returning the torch model")
    p.add_argument("--flax", help="MODULE:FUNCTION returning the port ((module, variables), an NNX module, or a "
                                  "Linen module to convert torch's weights into)")
    p.add_argument("--inputs", help="an .npz with 'targets' and the inputs")
    p.add_argument("--sample", help="MODULE:FUNCTION returning (inputs, targets)")
    p.add_argument("--flax-inputs", help="MODULE:FUNCTION turning torch's inputs into the port's")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--optimizer", choices=("sgd", "adam", "adamw"), default="sgd")
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--loss", choices=("cross_entropy", "token_cross_entropy", "mse"))
    p.add_argument("--output", help="the output's key or attribute that is the prediction (e.g. logits)")
    p.add_argument("--ignore", action="append", default=[], metavar="GLOB=REASON")
    p.add_argument("--names", action="append", default=[], metavar="TORCH_PREFIX=FLAX_PREFIX")
    p.add_argument("--out-dir", default="runs", help="where port_check.json and port_check.png go")
    p.error = lambda message: (print(f"{PROG}: error: {message}", file=sys.stderr), sys.exit(2))  # one line
    a = p.parse_args(argv)
    out = Path(a.out_dir)
    try:
        if a.steps < 0:
            raise UsageError(f"--steps must be >= 0, got {a.steps}")
        if out.exists() and not out.is_dir():
            raise UsageError(f"--out-dir {out} is not a folder")
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".port_check_write_test"
        probe.write_text("")
        probe.unlink()
        torch_model, port, variables, batch, kwargs = build(a)
        from parity import PortCheckError, check_port  # noqa: PLC0415

        try:
            report = check_port(torch_model, port, variables, batch, **kwargs)
        except PortCheckError as e:
            raise UsageError(str(e)) from e
    except UsageError as e:
        print(f"{PROG}: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"{PROG}: error: {out}: {e.strerror or e}", file=sys.stderr)
        return 2
    print(report)
    print(f"({report.seconds:.1f} s)")
    (out / "port_check.json").write_text(json.dumps(report_dict(report), indent=2, default=float) + "\n")
    title = a.glue or f"{a.torch} vs {a.flax}"
    plot(report, out / "port_check.png", title)
    print(f"wrote {out / 'port_check.json'} and {out / 'port_check.png'}")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
