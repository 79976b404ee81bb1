"""Sample efficiency of the flagship: dreamer_odt vs ODT alone vs Dreamer alone vs Brax SAC.

python benchmarks/sample_efficiency.py --envs hopper halfcheetah --seeds 0 1 2 --env_steps 32768
Every run is a subprocess (the launcher, or benchmarks/brax_baseline.py for SAC) run one
after another; a run whose workdir holds a finished summary.json is skipped, so rerunning
resumes. Scores are read from each workdir's metrics.jsonl, put on one env-step grid, and
written to results.json, a README.md table and one learning-curve PNG per task.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import os
import shlex
import signal
import subprocess
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # run as a script from anywhere
from gdm_jax.core import config_utils  # noqa: E402
from gdm_jax.core.runner import run_finished as finished  # noqa: E402  (a run that ended normally)
METHODS = ("dreamer_odt", "odt", "dreamer", "sac")
# Ablations and variants: dreamer_odt with ODT collecting all real data, as odt does (so it
# differs from odt only in imagination); dreamer_odt with imagined return-to-go bootstrapped by
# the return-to-go head instead of the critic; and an offline start, the same dreamer_odt vs
# odt pair pretrained on the task's medium-replay dataset first (the ODT's own setting).
EXTRA_METHODS = ("dreamer_odt_odt_collector", "dreamer_odt_return_head", "dreamer_odt_offline",
                 "odt_offline", "dreamer_odt_offline_odt_collector", "odt_offline_mix_collector",
                 "dreamer_odt_offline_return_head")
SAC_PREFILL = 1024  # brax_baseline's default min_replay_size
# Series derived from a method's runs: the Dreamer actor trained inside dreamer_odt.
DERIVED = {"dreamer_odt:dreamer_actor": "dreamer_odt"}


@dataclasses.dataclass(frozen=True)
class MethodSpec:
    """How to launch one method and where its evaluation return lives in metrics.jsonl."""
    name: str
    config: str = ""                    # configs/<file>.py:preset for launcher runs
    overrides: tuple[str, ...] = ()     # extra dotted overrides
    return_key: str = ""                # raw episode-return key read from metrics.jsonl
    note: str = ""


# Tasks without early termination (halfcheetah: every episode is 1,000 steps) fill the
# whole-trajectory replay only when an episode ends. With the preset's 8 envs x 32 steps per
# chunk, the first 8 episodes end together at 8,000 env steps, so nothing trains for half of a
# 16k budget. The same 256 env steps per chunk from 2 envs x 128 steps end an episode every
# 2,000 env steps instead (one ODT env and one Dreamer env under the mix collector).
LONG_EPISODE_LOOP = ("--config.loop.num_envs=2", "--config.loop.env_steps=128", "--config.loop.odt_envs=1")
TASK_OVERRIDES = {"halfcheetah": LONG_EPISODE_LOOP}


# Online only: every method starts from nothing, so env steps are the only data it sees.
ONLINE_ONLY = ("--config.offline.dataset=", "--config.offline.chunks=0")
# Offline start: 48 chunks x 16 fused steps on medium-replay (48 = 3 x the eval interval of a
# 4-point 16k budget, so online evaluations stay on the env-step grid).
OFFLINE_START = ("--config.offline.dataset=medium-replay", "--config.offline.chunks=48")
IMAGINATION = ("--config.loop.imagined_fraction=0.5",)
NO_IMAGINATION = ("--config.loop.imagined_fraction=0.0", "--config.loop.collector=odt")
FLAGSHIP = "configs/dreamer_odt.py:cpu"
ODT_EVAL = "eval/odt_episode_return"
CRITIC, RETURN_HEAD = "--config.loop.rtg_bootstrap=critic", "--config.loop.rtg_bootstrap=return_head"
SPECS = {
    "dreamer_odt": MethodSpec(
        "dreamer_odt", FLAGSHIP, (*ONLINE_ONLY, CRITIC, *IMAGINATION), ODT_EVAL,
        "ODT trained on real + imagined windows (imagined_fraction 0.5, collector mix, imagined return-to-go bootstrapped with the critic), online only (offline.chunks 0, no dataset); deterministic ODT eval"),
    "odt": MethodSpec(
        "odt", FLAGSHIP, (*ONLINE_ONLY, CRITIC, *NO_IMAGINATION), ODT_EVAL,
        "same loop, imagined_fraction 0.0 and collector odt: ODT alone, online only; deterministic ODT eval"),
    "dreamer_odt_odt_collector": MethodSpec(
        "dreamer_odt_odt_collector", FLAGSHIP, (*ONLINE_ONLY, CRITIC, *IMAGINATION, "--config.loop.collector=odt"),
        ODT_EVAL, "ablation: dreamer_odt but ODT collects all real data, as in odt; online only"),
    "dreamer_odt_return_head": MethodSpec(
        "dreamer_odt_return_head", FLAGSHIP, (*ONLINE_ONLY, RETURN_HEAD, *IMAGINATION), ODT_EVAL,
        "variant: dreamer_odt with imagined return-to-go bootstrapped by the return-to-go head (undiscounted, regressed on real hindsight return-to-go) instead of the discounted critic"),
    "dreamer_odt_offline": MethodSpec(
        "dreamer_odt_offline", FLAGSHIP, (*OFFLINE_START, CRITIC, *IMAGINATION), ODT_EVAL,
        "dreamer_odt after 768 offline fused steps on the medium-replay dataset (every part pretrained, ODT on real windows), then the same online budget"),
    "odt_offline": MethodSpec(
        "odt_offline", FLAGSHIP, (*OFFLINE_START, CRITIC, *NO_IMAGINATION), ODT_EVAL,
        "odt with the same offline start as dreamer_odt_offline: differs from it only in imagination and collector"),
    "dreamer_odt_offline_odt_collector": MethodSpec(
        "dreamer_odt_offline_odt_collector", FLAGSHIP,
        (*OFFLINE_START, CRITIC, *IMAGINATION, "--config.loop.collector=odt"), ODT_EVAL,
        "ablation: dreamer_odt_offline but ODT collects all real data, as in odt_offline: differs from it only in imagination"),
    "odt_offline_mix_collector": MethodSpec(
        "odt_offline_mix_collector", FLAGSHIP,
        (*OFFLINE_START, CRITIC, "--config.loop.imagined_fraction=0.0"), ODT_EVAL,
        "ablation: dreamer_odt_offline without imagination (the Dreamer actor still collects half the real data): differs from it only in imagination"),
    "dreamer_odt_offline_return_head": MethodSpec(
        "dreamer_odt_offline_return_head", FLAGSHIP, (*OFFLINE_START, RETURN_HEAD, *IMAGINATION), ODT_EVAL,
        "variant: dreamer_odt_offline with the return-to-go head bootstrap"),
    "dreamer": MethodSpec("dreamer", "configs/dreamer.py:cpu", (), "train/episode_return",
                          "Dreamer alone; its eval is open-loop error, so this is the mean return of the "
                          "training (exploring, sampled-action) episodes that ended in each chunk"),
    "sac": MethodSpec("sac", "", (), "eval/episode_return",
                      "brax.training.agents.sac, standard SAC settings (lr 3e-4, discount 0.99, batch 256, tau 0.005, observation normalisation), 8 envs, 0.5 updates per env step as in Brax's published SAC configs, replay prefilled with 1024 steps; deterministic eval"),
}
DERIVED_SPECS = {"dreamer_odt:dreamer_actor": MethodSpec(
    "dreamer_odt:dreamer_actor", return_key="eval/dreamer_episode_return",
    note="no extra run: the Dreamer actor trained inside the dreamer_odt runs, deterministic eval")}


def load_config(config_arg: str):
    """The ConfigDict a ``configs/<file>.py:preset`` argument names (no launcher needed)."""
    return config_utils.load_config(config_arg, REPO)


def env_steps_per_chunk(method: str) -> int:
    """Env steps one chunk of the method's preset collects (SAC: its own loop, 1)."""
    if method == "sac":
        return 1
    c = load_config(SPECS[method].config)
    if c.experiment == "dreamer_odt":
        return int(c.loop.num_envs * c.loop.env_steps)
    return int(c.env.num_envs * c.train.env_steps)


def plan_chunks(method: str, env_steps: int, num_points: int) -> tuple[int, int]:
    """(num_chunks, eval_every): the budget in whole chunks, a multiple of ``num_points`` evals."""
    per = env_steps_per_chunk(method)
    chunks = math.ceil(env_steps / per)
    chunks = num_points * math.ceil(chunks / num_points)
    return chunks, chunks // num_points


def run_command(method: str, env: str, seed: int, env_steps: int, num_points: int,
                workdir: str) -> list[str]:
    """The argv that runs one (method, env, seed) at the given budget."""
    if method == "sac":
        return [sys.executable, os.path.join(REPO, "benchmarks", "brax_baseline.py"), "--env", env,
                "--env_steps", str(env_steps), "--num_evals", str(num_points + 1), "--seed", str(seed),
                "--workdir", workdir]
    spec = SPECS[method]
    chunks, every = plan_chunks(method, env_steps, num_points)
    flagship = load_config(spec.config).experiment == "dreamer_odt"
    section = "loop" if flagship else "train"
    return [sys.executable, "-m", "gdm_jax.launch", f"--config={spec.config}", f"--config.seed={seed}",
            f"--config.env.name={env}", f"--config.{section}.num_chunks={chunks}",
            f"--config.run.eval_every={every}", f"--config.run.checkpoint_every={every}",
            *spec.overrides, *(TASK_OVERRIDES.get(env, ()) if flagship else ()), f"--workdir={workdir}"]


def execute(cmd: list[str], workdir: str, timeout_s: float) -> dict:
    """Run one subprocess to completion (SIGTERM at the timeout); returns status and wall time."""
    os.makedirs(workdir, exist_ok=True)
    env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3",
               JAX_COMPILATION_CACHE_DIR=os.path.join(REPO, ".jax_cache"),
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="1", PYTHONPATH=REPO)
    start = time.perf_counter()
    with open(os.path.join(workdir, "log.txt"), "a") as log:
        log.write("$ " + shlex.join(cmd) + "\n")
        log.flush()
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            rc = proc.wait(timeout=max(1.0, timeout_s))
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGTERM)  # the launcher checkpoints and exits
            try:
                rc = proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()
                rc = proc.wait()
    wall = time.perf_counter() - start
    status = "done" if rc == 0 and finished(workdir) else f"stopped (rc={rc})"
    record = {"status": status, "returncode": rc, "wall_seconds": round(wall, 1), "command": shlex.join(cmd)}
    with open(os.path.join(workdir, "bench_run.json"), "w") as f:
        json.dump(record, f, indent=2)
    return record


def read_curve(workdir: str, return_key: str, method: str) -> tuple[np.ndarray, np.ndarray]:
    """(env steps, raw episode return) points of one run; training-return lines need an ended episode."""
    steps, returns = [], []
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return np.zeros(0), np.zeros(0)
    for line in open(path):
        if not line.strip():
            continue
        rec = json.loads(line)
        value = rec.get(return_key)
        if value is None or (method == "dreamer" and not rec.get("train/episodes")):
            continue
        steps.append(rec["step"])
        returns.append(value)
    return np.asarray(steps, np.float64), np.asarray(returns, np.float64)


def normalise(env: str, backend: str, returns: np.ndarray) -> tuple[np.ndarray, bool]:
    """Normalised scores, or the raw returns (False) when the env has no reference yet."""
    from gdm_jax.envs import datasets

    try:
        return np.asarray(datasets.normalized_score(env, backend, returns), np.float64), True
    except ValueError:
        return returns, False


def on_grid(steps: np.ndarray, values: np.ndarray, grid: np.ndarray, window: float,
            late: float = 0.0) -> np.ndarray:
    """The value at each grid step g: the latest point in (g - window, g + late]; NaN where none."""
    out = np.full(grid.shape, np.nan)
    for i, g in enumerate(grid):
        sel = np.flatnonzero((steps <= g + late + 1e-6) & (steps > g - window))
        if sel.size:
            out[i] = values[sel[np.argmax(steps[sel])]]
    return out


def untrained_sac(env: str, runs: list[dict]) -> dict | None:
    """Score of SAC's step-0 (untrained, near-zero action) policy: what standing still earns."""
    raw = []
    for r in runs:
        if r["env"] == env and r["method"] == "sac" and r["status"] == "done":
            steps, returns = read_curve(r["workdir"], SPECS["sac"].return_key, "sac")
            raw += returns[steps == 0].tolist()
    if not raw:
        return None
    scores, ok = normalise(env, "spring", np.asarray(raw))
    return {"episode_return": float(np.mean(raw)), "score": float(np.mean(scores)) if ok else None}


def aggregate(args, runs: list[dict]) -> dict:
    """Per task and method: scores on the shared grid (per seed, mean, std) and at each budget."""
    grid = np.asarray([args.env_steps * (k + 1) / args.num_points for k in range(args.num_points)])
    # The launcher runs evaluate exactly on the grid; Brax SAC evaluates after its replay prefill
    # and then every (budget - prefill) / (num_points) steps, so its points may trail the grid
    # by up to the prefill.
    window = args.env_steps / args.num_points
    tasks = {}
    for env in args.envs:
        normalised_all, task = True, {}
        for method in [*args.methods, *[d for d, src in DERIVED.items() if src in args.methods]]:
            spec = SPECS.get(method) or DERIVED_SPECS[method]
            source = DERIVED.get(method, method)
            per_seed = {}
            for r in runs:
                if r["env"] != env or r["method"] != source or r["status"] != "done":
                    continue
                steps, raw = read_curve(r["workdir"], spec.return_key, source)
                scores, ok = normalise(env, "spring", raw)
                normalised_all &= ok or len(raw) == 0
                late = SAC_PREFILL if source == "sac" else 0.0
                per_seed[str(r["seed"])] = on_grid(steps, scores, grid, window, late)
            if not per_seed:
                continue
            stack = np.stack(list(per_seed.values()))
            with np.errstate(all="ignore"):
                mean, std = np.nanmean(stack, 0), np.nanstd(stack, 0)
            task[method] = {"note": spec.note, "per_seed": {k: v.tolist() for k, v in per_seed.items()},
                            "mean": mean.tolist(), "std": std.tolist(), "num_seeds": len(per_seed)}
        tasks[env] = {"metric": "normalized_score" if normalised_all else "raw_episode_return",
                      "methods": task, "untrained_sac": untrained_sac(env, runs)}
    return {"grid_env_steps": grid.tolist(), "budget_fractions": [(k + 1) / args.num_points for k in range(args.num_points)],
            "tasks": tasks}


def _fmt(x: float) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:.1f}"


# Seed-paired comparisons reported under each table: (with imagination, without), in order.
PAIRS = (("dreamer_odt", "odt"), ("dreamer_odt_odt_collector", "odt"),
         ("dreamer_odt_offline", "odt_offline"), ("dreamer_odt_offline_odt_collector", "odt_offline"),
         ("dreamer_odt_offline", "odt_offline_mix_collector"))


def comparison(task: dict, grid: list[float], pairs=PAIRS) -> list[str]:
    """Seed-paired differences a − b at each budget for every pair whose runs exist (the study's claim)."""
    m = task["methods"]
    lines = []
    for a, b in pairs:
        if a not in m or b not in m:
            continue
        seeds = sorted(set(m[a]["per_seed"]) & set(m[b]["per_seed"]))
        for i, g in enumerate(grid):
            diffs = np.asarray([m[a]["per_seed"][s][i] - m[b]["per_seed"][s][i] for s in seeds])
            ok = diffs[np.isfinite(diffs)]
            if ok.size:
                lines.append(f"- at {int(g)} env steps: {a} − {b} = {ok.mean():+.1f} (mean over {ok.size} "
                             f"paired seed(s); per seed {', '.join(f'{d:+.1f}' for d in ok)}); {a} ahead in "
                             f"{int((ok > 0).sum())}/{ok.size}")
    return lines


def write_readme(path: str, args, results: dict, command: str) -> None:
    """Markdown tables: mean ± std over seeds at each budget fraction, per task; wall times."""
    grid = results["grid_env_steps"]
    fracs = results["budget_fractions"]
    cols = [i for i, f in enumerate(fracs) if any(abs(f - q) < 1e-9 for q in (0.25, 0.5, 0.75, 1.0))] or list(range(len(fracs)))
    lines = ["# Sample efficiency of dreamer_odt (Brax, spring backend, cpu presets)", "",
             f"Generated by `benchmarks/sample_efficiency.py` at {results['generated_utc']} UTC. Command:", "",
             f"    {command}", "",
             "Score: normalised return 100·(R − R_random)/(R_expert − R_random) with the reference returns in "
             "`gdm_jax/assets/datasets/<env>-spring/reference.json`, unless a task says raw return. Each cell is "
             "the mean ± std over seeds (n = seeds) of the score at that env-step budget: the latest "
             "evaluation at or before it (SAC: its evaluation up to 1024 steps later, as Brax SAC "
             "evaluates after its replay prefill; dreamer: the latest training-episode return).", ""]
    for env, task in results["tasks"].items():
        lines += [f"## {env} ({task['metric'].replace('_', ' ')})", "",
                  "| method | n | " + " | ".join(f"{int(100 * fracs[i])}% ({int(grid[i])} steps)" for i in cols) + " |",
                  "|---|---|" + "---|" * len(cols)]
        for method, r in task["methods"].items():
            cells = [f"{_fmt(r['mean'][i])} ± {_fmt(r['std'][i])}" for i in cols]
            lines.append(f"| {method} | {r['num_seeds']} | " + " | ".join(cells) + " |")
        base = task.get("untrained_sac")
        if base:
            lines += ["", f"Untrained SAC policy (step 0, deterministic, near-zero actions): return "
                      f"{base['episode_return']:.1f}, score {_fmt(base['score'])}."]
        lines += ["", *comparison(task, grid), "", f"![{env}]({env}.png)", ""]
    lines += ["## Methods", ""] + [f"- **{m}**: {(SPECS.get(m) or DERIVED_SPECS[m]).note}"
                                   for m in [*SPECS, *DERIVED_SPECS]]
    lines += ["", "## Runs and wall time", "", "| env | method | seed | status | wall s (incl. compile) |",
              "|---|---|---|---|---|"]
    for r in results["runs"]:
        lines.append(f"| {r['env']} | {r['method']} | {r['seed']} | {r['status']} | {_fmt(r.get('wall_seconds'))} |")
    notes = os.path.join(os.path.dirname(path), "notes.md")
    if os.path.exists(notes):  # the study author's reading of the numbers, kept across regenerations
        lines += ["", open(notes).read().strip()]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def plot(path: str, env: str, task: dict, grid: list[float]) -> None:
    """Mean learning curve per method with a ±1 std band over seeds; online-only and
    offline-start methods in separate panels."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = {"online only": [m for m in task["methods"] if "offline" not in m],
              "offline start (medium-replay)": [m for m in task["methods"] if "offline" in m]}
    groups = {k: v for k, v in groups.items() if v}
    fig, axes = plt.subplots(1, len(groups), figsize=(6.4 * len(groups), 4.4), sharey=True, squeeze=False)
    x = np.asarray(grid)
    for ax, (title, methods) in zip(axes[0], groups.items()):
        for method in methods:
            r = task["methods"][method]
            mean, std = np.asarray(r["mean"]), np.asarray(r["std"])
            ok = np.isfinite(mean)
            style = "--" if method in DERIVED else "-"
            (line,) = ax.plot(x[ok], mean[ok], style, marker="o", ms=3, label=f"{method} (n={r['num_seeds']})")
            ax.fill_between(x[ok], (mean - std)[ok], (mean + std)[ok], color=line.get_color(), alpha=0.15)
        ax.set_xlabel("online env steps")
        ax.set_title(f"{env} (spring), {title}: mean ± std over seeds", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("normalised score" if task["metric"] == "normalized_score" else "episode return")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_args(argv: list[str] | None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--envs", nargs="+", default=["hopper", "halfcheetah"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS + EXTRA_METHODS)
    p.add_argument("--env_steps", type=int, default=32768, help="env-step budget of every run")
    p.add_argument("--num_points", type=int, default=8, help="evaluations per run (grid of budgets)")
    p.add_argument("--runs_dir", default=os.path.join(REPO, "runs", "sample_efficiency"))
    p.add_argument("--out", default=os.path.join(REPO, "results", "sample_efficiency"))
    p.add_argument("--deadline_utc", default="", help="HH:MM: start no run after it, stop a running one at it")
    p.add_argument("--run_timeout_s", type=float, default=3600.0)
    p.add_argument("--aggregate_only", action="store_true", help="run nothing; tabulate the finished runs")
    p.add_argument("--no_report", action="store_true",
                   help="run only; leave --out (results.json, README.md, PNGs) as it is")
    p.add_argument("--quick", action="store_true", help="pipeline check: 1 seed, tiny budget, 2 evaluations")
    args = p.parse_args(argv)
    if args.quick:
        args.seeds, args.env_steps, args.num_points = args.seeds[:1], 2048, 2
        args.runs_dir = args.runs_dir.rstrip("/") + "_quick"
        args.out = os.path.join(args.out, "quick")
    for env in args.envs:
        from gdm_jax.envs.brax_envs import ENV_NAMES
        if env not in ENV_NAMES:
            p.error(f"--envs: unknown env {env!r}; choose from {ENV_NAMES}")
    if args.env_steps < args.num_points or args.num_points < 1:
        p.error(f"--env_steps={args.env_steps} must be >= --num_points={args.num_points} >= 1")
    return args


def seconds_to_deadline(deadline: str) -> float:
    """Seconds until the next HH:MM UTC (inf without a deadline).

    A time up to 12 h in the past counts as passed (negative); an earlier one means tomorrow,
    so a deadline of 01:30 set at 23:20 leaves 2 h 10 min."""
    if not deadline:
        return math.inf
    now = datetime.datetime.now(datetime.timezone.utc)
    hh, mm = (int(x) for x in deadline.split(":"))
    left = (now.replace(hour=hh, minute=mm, second=0, microsecond=0) - now).total_seconds()
    return left + 86400.0 if left < -12 * 3600 else left


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    command = "python " + shlex.join(["benchmarks/sample_efficiency.py", *(argv if argv is not None else sys.argv[1:])])
    os.makedirs(args.out, exist_ok=True)
    runs = []
    for seed in args.seeds:  # seed-major: if time runs out, every method has the same seeds
        for env in args.envs:
            for method in args.methods:
                workdir = os.path.join(args.runs_dir, f"{env}-{method}-s{seed}-{args.env_steps}")
                record = {"env": env, "method": method, "seed": seed, "workdir": workdir}
                if method != "sac" and SPECS[method].config.startswith("configs/dreamer_odt"):
                    from gdm_jax.envs import datasets
                    try:  # the dreamer_odt loop needs the reference returns to set ODT's target return
                        datasets.reference_returns(env, "spring")
                    except ValueError as e:
                        runs.append({**record, "status": f"skipped: {e}"})
                        print(f"[sample_efficiency] skip {env}/{method}/seed {seed}: {e}", flush=True)
                        continue
                if args.aggregate_only and not finished(workdir):
                    runs.append({**record, "status": "not run"})
                    continue
                if finished(workdir):
                    prior = os.path.join(workdir, "bench_run.json")
                    wall = json.load(open(prior))["wall_seconds"] if os.path.exists(prior) else \
                        json.load(open(os.path.join(workdir, "summary.json"))).get("wall_seconds")
                    runs.append({**record, "status": "done", "wall_seconds": wall, "resumed": True})
                    continue
                left = seconds_to_deadline(args.deadline_utc)
                if left < 60:
                    runs.append({**record, "status": "not run (deadline)"})
                    continue
                cmd = run_command(method, env, seed, args.env_steps, args.num_points, workdir)
                print(f"[sample_efficiency] {env}/{method}/seed {seed}: {shlex.join(cmd)}", flush=True)
                out = execute(cmd, workdir, min(args.run_timeout_s, left))
                print(f"[sample_efficiency]   -> {out['status']} in {out['wall_seconds']} s", flush=True)
                runs.append({**record, **out})
    if args.no_report:
        return
    results = aggregate(args, runs)
    results.update({"generated_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"),
                    "command": command, "env_steps": args.env_steps, "seeds": args.seeds,
                    "chunks": {m: plan_chunks(m, args.env_steps, args.num_points) for m in args.methods if m != "sac"},
                    "runs": runs})
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    for env, task in results["tasks"].items():
        if task["methods"]:
            plot(os.path.join(args.out, f"{env}.png"), env, task, results["grid_env_steps"])
    write_readme(os.path.join(args.out, "README.md"), args, results, command)
    print(open(os.path.join(args.out, "README.md")).read())


if __name__ == "__main__":
    main()
