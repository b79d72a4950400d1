"""``stockgym sweep CONFIG.toml`` (registered by :func:`register`): seeds, symbols and
hyperparameters searched on Ray Tune, each trial an ordinary ``stockgym train`` run.

Thin: parse the flags, check the sweep file (before Ray starts), call
:mod:`stockgym.sweep.runner`, write the tables with :mod:`stockgym.sweep.results`,
print. Ray is imported only when a sweep runs.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

from stockgym.core import UsageError

SWEEP_EXAMPLES = """examples:
  stockgym sweep sweep.toml                           (a local Ray on this machine)
  stockgym sweep sweep.toml --out runs/sweeps/lr --num-cpus 8
  stockgym sweep sweep.toml --dry-run                 (list the trials; run nothing)
  stockgym sweep sweep.toml --out runs/sweeps/lr --resume   (finished trials are not rerun)
  stockgym sweep sweep.toml --address 10.0.0.5:6379   (join a running Ray cluster)

A sweep file has [sweep] (metric, mode, search = grid | random | optuna, n_trials,
seeds, symbols, resources), [train] (a `stockgym train` config, or [sweep] base =
FILE) and [space] ("agent.learning_rate" = [3e-4, 1e-3] for a grid, {choice = [...]},
{uniform = [lo, hi]}, {loguniform = [lo, hi]}, {randint = [lo, hi]}). See docs/sweep.md.

The sweep dir holds runs/ (one `stockgym train` run dir per configuration and seed),
results.csv / results.md (configurations by mean metric over seeds), runs.csv,
best.toml (stockgym train --config DIR/best.toml), best/ (the test-period backtest of
the best configuration, run once), tune/ (Ray Tune's state, for --resume) and ray/
(Ray's logs). Needs the [ray] extra: pip install "stockgym[ray]".
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``sweep`` subcommand."""
    p = subparsers.add_parser(
        "sweep",
        help="search seeds, symbols and hyperparameters on Ray Tune",
        description="Run a sweep: every configuration x seed is an ordinary `stockgym train` "
        "run, selected on the validation period; the best configuration is written as a "
        "runnable config and backtested once on the test period.",
        epilog=SWEEP_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("config", metavar="CONFIG.toml", help="the sweep file")
    p.add_argument(
        "--out",
        metavar="DIR",
        help="sweep dir (default: [sweep] out, else runs/sweeps/<CONFIG name>)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the sweep in --out: finished trials are kept, the rest run",
    )
    p.add_argument(
        "--trust",
        action="store_true",
        help="with --resume: restore Tune state that lacks this user's signature (Tune "
        "unpickles it, which can run code): only for sweep dirs you trust",
    )
    p.add_argument(
        "--address",
        metavar="HOST:PORT",
        help="join this running Ray cluster instead of starting a local Ray",
    )
    p.add_argument(
        "--num-cpus",
        type=int,
        help="CPUs of the local Ray (default: [sweep] num_cpus, else all of this machine's)",
    )
    p.add_argument(
        "--num-gpus",
        type=float,
        help="GPUs of the local Ray (default: [sweep] num_gpus, else detected)",
    )
    p.add_argument(
        "--ray-temp",
        metavar="DIR",
        help="local Ray's temp dir (default SWEEP/ray, or a short /tmp dir when "
        "that path is too long for Ray's unix sockets)",
    )
    p.add_argument(
        "--no-test",
        action="store_true",
        help="skip the test-period backtest of the best configuration",
    )
    p.add_argument("--no-plots", action="store_true", help="no PNG plots in that backtest")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="check the sweep file and list its trials; start nothing",
    )
    p.add_argument(
        "--threads",
        type=int,
        metavar="N",
        help="torch CPU threads of each trial (default: its [sweep.resources] cpu, 1 unless "
        "set; torch's own default collapses when trials share cores)",
    )
    p.add_argument("--quiet", action="store_true", help="no line per finished trial")
    p.add_argument(
        "--verbose",
        action="store_true",
        help="also Ray's log lines and Ray Tune's banner, progress tables and hints",
    )
    p.set_defaults(func=cmd_sweep)


def cmd_sweep(args: argparse.Namespace) -> None:
    """Handler of ``stockgym sweep``."""
    from stockgym.sweep.config import load_sweep

    sweep = load_sweep(args.config)
    out = Path(args.out or sweep.out or Path("runs") / "sweeps" / Path(args.config).stem)
    if args.address and (args.num_cpus is not None or args.num_gpus is not None or args.ray_temp):
        raise UsageError(
            "--num-cpus, --num-gpus and --ray-temp are for a local Ray; with "
            "--address the cluster's resources are used"
        )
    num_cpus = args.num_cpus if args.num_cpus is not None else sweep.num_cpus
    num_gpus = args.num_gpus if args.num_gpus is not None else sweep.num_gpus
    if num_cpus is not None and num_cpus < 1:
        raise UsageError(f"--num-cpus must be >= 1, got {num_cpus}")
    if num_gpus is not None and num_gpus < 0:
        raise UsageError(f"--num-gpus must be >= 0, got {num_gpus}")
    if not args.address:
        num_cpus = num_cpus or os.cpu_count() or 1
        if sweep.cpus_per_trial > num_cpus:
            raise UsageError(
                f"a trial needs {sweep.cpus_per_trial:g} CPUs ([sweep.resources] "
                f"cpu) but the local Ray gets {num_cpus} (--num-cpus)"
            )
    if not args.dry_run:
        from stockgym.sweep.runner import require_ray

        try:
            require_ray(sweep.search)
        except ImportError as exc:
            raise UsageError(str(exc)) from exc
    _check_out(out, sweep, args.resume)
    sweep.check(preflight=True)
    if args.dry_run:
        _print_plan(sweep, out)
        return
    run(sweep, out, args, num_cpus=num_cpus, num_gpus=num_gpus)


def _check_out(out: Path, sweep: Any, resume: bool) -> None:
    record = out / "sweep.json"
    if resume:
        if not record.is_file():
            raise UsageError(
                f"--resume: {out} holds no sweep (no sweep.json); run without --resume to start one"
            )
        try:
            old = json.loads(record.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise UsageError(f"--resume: cannot read {record}: {exc}") from exc
        if old.get("fingerprint") != sweep.fingerprint():
            raise UsageError(
                f"--resume: the sweep file ({old.get('config_file', 'CONFIG.toml')}) changed "
                f"since the sweep in {out} started (its "
                "metric, search, seeds, [train] or [space] differ); start a new sweep with "
                "another --out, or restore the old file"
            )
        return
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(
            f"{out} exists and is not empty: --resume continues the sweep "
            "there, or choose another --out"
        )


def _print_plan(sweep: Any, out: Path) -> None:
    print(f"sweep      {sweep.describe()}")
    print(f"dir        {out}")
    if sweep.search == "optuna":
        for e in sweep.space:
            print(f"space      {e.describe()}")
        print(f"seeds      {sweep.seeds}")
        return
    for c in sweep.configurations():
        params = ", ".join(f"{k}={v!r}" for k, v in c["params"].items()) or "(the base config)"
        runs = " ".join(f"{c['id']}-s{s}" for s in sweep.seeds)
        print(f"{c['id']:<10} {params}  ->  {runs}")
    print(
        "checked    every configuration; data, envs and agent built for the base config "
        "and each searched value; nothing started (--dry-run)"
    )


def run(
    sweep: Any, out: Path, args: argparse.Namespace, *, num_cpus: int | None, num_gpus: float | None
) -> None:
    """Run the sweep into ``out`` and write its outputs (see the module docstring)."""
    import pandas as pd

    from stockgym.core import write_json, write_text
    from stockgym.experiment.records import git_commit
    from stockgym.sweep import results as res
    from stockgym.sweep.runner import check_resources, ray_session, run_trials

    out.mkdir(parents=True, exist_ok=True)
    plan = sweep.plan(out)
    if args.threads is not None:
        if args.threads < 1:
            raise UsageError(f"--threads must be >= 1, got {args.threads}")
        plan["threads"] = args.threads
    if not args.resume:
        import stockgym

        write_text(out / "sweep.toml", Path(args.config).read_text(encoding="utf-8"))
        write_json(
            out / "sweep.json",
            {
                **plan,
                "config_file": str(Path(args.config).resolve()),
                "created": pd.Timestamp.now(tz="UTC").isoformat(timespec="seconds"),
                "stockgym": stockgym.__version__,
                "git": git_commit(),
            },
        )
    t0 = time.perf_counter()
    print(f"sweep      {sweep.describe()}{' (resumed)' if args.resume else ''}")
    print(f"dir        {out.resolve()}")
    with ray_session(
        out,
        address=args.address,
        num_cpus=num_cpus,
        num_gpus=num_gpus,
        temp_dir=args.ray_temp,
        verbose=args.verbose,
    ) as session:
        check_resources(sweep, session)
        r = session.resources
        where = (
            f"cluster {args.address}"
            if args.address
            else f"local (temp {session.temp_dir}, logs kept in {session.logs_dir})"
        )
        print(
            f"ray        {where}: {r.get('CPU', 0):g} CPUs, {r.get('GPU', 0):g} GPUs, ready "
            f"in {session.startup_seconds:.1f} s; per trial {sweep.cpus_per_trial:g} CPU, "
            f"{sweep.gpus_per_trial:g} GPU",
            flush=True,
        )
        outcome = run_trials(
            sweep,
            plan,
            out,
            resume=args.resume,
            trust=args.trust,
            verbose=0 if args.quiet else 2 if args.verbose else 1,
        )
    runs = res.run_rows(outcome.reports, sweep)
    configs = res.config_rows(outcome.reports, sweep)
    files = res.write_tables(out, sweep, configs, runs)
    n_ok = sum(1 for rep in outcome.reports if rep["status"] == "ok")
    failed = [rep for rep in outcome.reports if rep["status"] == "error"]
    unfinished = [rep for rep in outcome.reports if rep["status"] == "unfinished"]
    print()
    print(
        f"results    {sweep.metric} ({sweep.mode}) on the validation period, mean and "
        "sample std over seeds, best first:"
    )
    cols = ["rank", "config", *sweep.keys, "seeds", "mean", "std", "min", "max", "status"]
    print(res.to_text(configs[:30], cols))
    if len(configs) > 30:
        print(f"           ... {len(configs) - 30} more in {out / 'results.csv'}")
    print(
        f"trials     {len(outcome.reports)}: {n_ok} finished, {len(failed)} failed, "
        f"{len(unfinished)} unfinished; this invocation trained {outcome.trained_now} run(s)"
        f"{' (the rest finished earlier and were kept)' if outcome.restored else ''}"
    )
    summary: dict[str, Any] = {
        "sweep_dir": str(out.resolve()),
        "metric": sweep.metric,
        "mode": sweep.mode,
        "trials": {
            "total": len(outcome.reports),
            "finished": n_ok,
            "failed": len(failed),
            "unfinished": len(unfinished),
        },
        "trained_now": outcome.trained_now,
        "restored": outcome.restored,
        "ray": session.to_dict(),
        "tune_seconds": round(outcome.seconds, 2),
        "best": None,
        "test": None,
    }
    for rep in failed[:5]:
        print(f"failed     {rep['config']} {rep.get('names', [])}: {rep.get('error')}")
    if unfinished:
        write_json(out / "results.json", {**summary, "files": [str(f) for f in files]})
        raise UsageError(
            f"the sweep stopped with {len(unfinished)} trial(s) unfinished; "
            f"continue it: stockgym sweep {args.config} --out {out} --resume"
        )
    best = next((c for c in configs if c["mean"] is not None), None)
    if best is None:
        write_json(out / "results.json", {**summary, "files": [str(f) for f in files]})
        raise UsageError(
            f"every trial failed (see {out / 'runs.csv'} and Ray's logs in {out / 'ray'})"
        )
    files.append(res.write_best(out, sweep, best))
    spread = f" ± {best['std']:.4g}" if best["std"] is not None else ""
    params = ", ".join(f"{k}={res._cell(best[k])}" for k in sweep.keys) or "the base config"
    print(
        f"best       {best['config']} ({params}): {sweep.metric} {best['mean']:.4g}{spread} "
        f"over {best['seeds']} seeds"
    )
    summary["best"] = {k: v for k, v in best.items()}
    if sweep.test and not args.no_test:
        test = res.test_backtest(out, best, runs, plots=not args.no_plots)
        summary["test"] = {
            "mean": test["mean"],
            "std": test["std"],
            "period": test["period"],
            "file": str(out / "best" / "test.json"),
        }
        _print_test(test)
        files.append(out / "best" / "test.json")
    summary["seconds"] = round(time.perf_counter() - t0, 2)
    write_json(out / "results.json", res._finite({**summary, "files": [str(f) for f in files]}))
    print(
        f"wrote      {', '.join(str(Path(f).relative_to(out)) for f in files)} in {out}/ "
        "(runs/: one `stockgym train` run dir per configuration and seed)"
    )
    print(f"next       stockgym train --config {out / 'best.toml'}")


def _print_test(test: dict[str, Any]) -> None:
    p = test["period"] or {}
    when = (
        "backtested by an earlier invocation of this sweep (the test period is touched once)"
        if test.get("earlier")
        else "backtested once after selection (never used for it)"
    )
    print(
        f"test       {test['config']} on the test period {p.get('first')} .. {p.get('last')}, "
        f"{when}:"
    )
    rows = [
        {
            "run": r["run"],
            "log_return": r["log_return"],
            "buy_and_hold": r["buy_and_hold_log_return"],
            "random": r["random_log_return"],
            "sharpe": r["sharpe"],
            "max_drawdown": r["max_drawdown"],
        }
        for r in test["runs"]
    ]
    m = test["mean"]
    rows.append(
        {
            "run": "mean",
            "log_return": m["log_return"],
            "buy_and_hold": m["buy_and_hold_log_return"],
            "random": m["random_log_return"],
            "sharpe": m["sharpe"],
            "max_drawdown": m["max_drawdown"],
        }
    )
    from stockgym.sweep.results import to_text

    text = to_text(rows, ["run", "log_return", "buy_and_hold", "random", "sharpe", "max_drawdown"])
    print("\n".join("           " + line for line in text.splitlines()))
