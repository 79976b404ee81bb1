"""Does online fine-tuning improve an offline-pretrained ODT? Online runs vs an offline-only control.

python benchmarks/odt_online_gain.py --env halfcheetah --dataset medium-replay --seeds 0 1 2

For every seed it launches two runs of ``configs/odt.py:cpu`` through the launcher:
``online`` (offline pretraining, then ``--online_chunks`` online chunks) and ``control``
(offline training only, for the same total number of gradient updates, no env steps). A run
whose workdir holds a finished summary.json is skipped, so rerunning resumes. The table
(score after offline, after online, control at equal updates; per seed, mean ± std and the
seed-paired online − control gain) goes to ``--out``/README.md and results.json, and the
curves (score vs gradient updates) to ``--out``/<env>-<dataset>.png.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import subprocess
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # run as a script from anywhere
from gdm_jax.core import config_utils  # noqa: E402
from gdm_jax.core.runner import run_finished as finished  # noqa: E402


def preset(name: str = "cpu"):
    return config_utils.load_config(f"configs/odt.py:{name}", REPO)


def control_chunking(total_updates: int, max_per_chunk: int = 200) -> int:
    """Updates per offline chunk for the control: the largest divisor of the total <= max_per_chunk (200: evaluations every 800 updates)."""
    return max(d for d in range(1, max_per_chunk + 1) if total_updates % d == 0)


def commands(env: str, dataset: str, seed: int, online_chunks: int, eval_envs: int,
             runs_dir: str) -> dict[str, tuple[list[str], str]]:
    """{"online"|"control": (argv, workdir)} for one seed."""
    c = preset()
    total = c.odt.offline_updates + online_chunks * c.odt.online_updates_per_chunk
    base = [sys.executable, "-m", "gdm_jax.launch", "--config=configs/odt.py:cpu",
            f"--config.env.name={env}", f"--config.dataset={dataset}", f"--config.seed={seed}",
            f"--config.odt.eval_envs={eval_envs}"]
    out = {}
    for kind, extra in (
            ("online", [f"--config.odt.online_chunks={online_chunks}"]),
            ("control", [f"--config.odt.offline_updates={total}",
                         f"--config.odt.offline_updates_per_chunk={control_chunking(total)}",
                         "--config.odt.online_chunks=0"])):
        workdir = os.path.join(runs_dir, f"{env}-{dataset}-{kind}-s{seed}")
        out[kind] = ([*base, *extra, f"--workdir={workdir}"], workdir)
    return out


def evals(workdir: str) -> list[dict]:
    """The evaluation records of a run: updates, env steps, phase, normalised score."""
    out = []
    for line in open(os.path.join(workdir, "metrics.jsonl")):
        rec = json.loads(line)
        if "eval/normalized_score" in rec:
            out.append({"updates": rec["updates"], "env_steps": rec["step"], "phase": rec["phase"],
                        "score": rec["eval/normalized_score"]})
    return out


def summarise(online: list[dict], control: list[dict]) -> dict:
    offline_end = [e for e in online if e["phase"] == "offline"][-1]
    return {"after_offline": offline_end["score"], "offline_updates": offline_end["updates"],
            "after_online": online[-1]["score"], "best_online": max(e["score"] for e in online if e["phase"] == "online"),
            "online_env_steps": online[-1]["env_steps"], "updates": online[-1]["updates"],
            "control": control[-1]["score"], "control_updates": control[-1]["updates"],
            "gain_over_offline": online[-1]["score"] - offline_end["score"],
            "gain_over_control": online[-1]["score"] - control[-1]["score"]}


def dataset_best_score(env: str, dataset: str) -> float | None:
    """Normalised score of the best trajectory in the offline dataset (reference.json)."""
    from gdm_jax.envs import datasets

    ref = json.load(open(os.path.join(datasets.ASSETS_DIR, f"{env}-spring", "reference.json")))
    best = ref["returns"].get(dataset, {}).get("max")
    return None if best is None else float(datasets.normalized_score(env, "spring", best))


def plot(path: str, title: str, curves: dict[str, list[list[dict]]], best: float | None = None) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for kind, runs in curves.items():
        xs = sorted({e["updates"] for r in runs for e in r})
        table = np.full((len(runs), len(xs)), np.nan)
        for i, r in enumerate(runs):
            for e in r:
                table[i, xs.index(e["updates"])] = e["score"]
        ok = np.isfinite(table).all(0)
        x, mean, std = np.asarray(xs)[ok], table[:, ok].mean(0), table[:, ok].std(0)
        (line,) = ax.plot(x, mean, marker="o", ms=3, label=f"{kind} (n={len(runs)})")
        ax.fill_between(x, mean - std, mean + std, color=line.get_color(), alpha=0.2)
    if best is not None:
        ax.axhline(best, color="black", ls="--", lw=1, label="best trajectory in the dataset")
    if curves.get("online"):
        start = max(e["updates"] for e in curves["online"][0] if e["phase"] == "offline")
        ax.axvline(start, color="grey", ls=":", lw=1)
        ax.text(start, ax.get_ylim()[0], " online starts", color="grey", fontsize=8, va="bottom")
    ax.set_xlabel("gradient updates")
    ax.set_ylabel("normalised score")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--env", default="halfcheetah")
    p.add_argument("--dataset", default="medium-replay")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--online_chunks", type=int, default=None, help="default: the cpu preset's")
    p.add_argument("--eval_envs", type=int, default=16, help="evaluation episodes (one per env)")
    p.add_argument("--runs_dir", default=os.path.join(REPO, "runs", "odt_online_gain"))
    p.add_argument("--out", default=os.path.join(REPO, "results", "odt", "online_gain"))
    p.add_argument("--aggregate_only", action="store_true")
    args = p.parse_args(argv)
    online_chunks = args.online_chunks if args.online_chunks is not None else preset().odt.online_chunks
    command = "python " + shlex.join(["benchmarks/odt_online_gain.py", *(argv if argv is not None else sys.argv[1:])])

    per_seed, curves, walls = {}, {"online": [], "control": []}, {}
    for seed in args.seeds:
        runs = commands(args.env, args.dataset, seed, online_chunks, args.eval_envs, args.runs_dir)
        for kind, (cmd, workdir) in runs.items():
            if finished(workdir) or args.aggregate_only:
                continue
            os.makedirs(workdir, exist_ok=True)
            print(f"[odt_online_gain] {shlex.join(cmd)}", flush=True)
            start = time.perf_counter()
            with open(os.path.join(workdir, "log.txt"), "a") as log:
                rc = subprocess.call(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                     env=dict(os.environ, PYTHONPATH=REPO))
            print(f"[odt_online_gain]   -> rc {rc} in {time.perf_counter() - start:.0f} s", flush=True)
        if all(finished(w) for _, w in runs.values()):
            online, control = evals(runs["online"][1]), evals(runs["control"][1])
            per_seed[seed] = summarise(online, control)
            curves["online"].append(online)
            curves["control"].append(control)
            walls[seed] = {k: json.load(open(os.path.join(w, "summary.json"))).get("wall_seconds")
                           for k, (_, w) in runs.items()}
    if not per_seed:
        sys.exit("no seed has both runs finished")

    keys = ("after_offline", "after_online", "best_online", "control", "gain_over_offline", "gain_over_control")
    stats = {k: {"mean": float(np.mean([s[k] for s in per_seed.values()])),
                 "std": float(np.std([s[k] for s in per_seed.values()]))} for k in keys}
    ahead = sum(s["gain_over_control"] > 0 for s in per_seed.values())
    name = f"{args.env}-{args.dataset}"
    os.makedirs(args.out, exist_ok=True)
    result = {"generated_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"),
              "command": command, "env": args.env, "dataset": args.dataset, "online_chunks": online_chunks,
              "eval_envs": args.eval_envs, "per_seed": per_seed, "stats": stats,
              "online_ahead_of_control": f"{ahead}/{len(per_seed)}", "wall_seconds": walls}
    with open(os.path.join(args.out, f"{name}.json"), "w") as f:
        json.dump(result, f, indent=1)
    best = dataset_best_score(args.env, args.dataset)
    result["dataset_best_trajectory_score"] = best
    with open(os.path.join(args.out, f"{name}.json"), "w") as f:
        json.dump(result, f, indent=1)
    plot(os.path.join(args.out, f"{name}.png"), f"ODT {args.env} ({args.dataset}): online vs offline-only",
         curves, best)

    fmt = lambda k: f"{stats[k]['mean']:.1f} ± {stats[k]['std']:.1f}"
    any_seed = next(iter(per_seed.values()))
    lines = [f"## {args.env}, `{args.dataset}` dataset ({len(per_seed)} seeds)", "",
             f"Generated {result['generated_utc']} UTC by `{command}`.", "",
             f"Online: {any_seed['offline_updates']} offline updates, then {online_chunks} online chunks "
             f"({any_seed['online_env_steps']:,} env steps, {any_seed['updates']} updates in all). Control: "
             f"offline only, {any_seed['control_updates']} updates, no env steps. Evaluation: "
             f"{args.eval_envs} episodes, mean action, fixed start states.", "",
             "| seed | after offline | after online | best online eval | control (same updates) | online − control |",
             "|---|---|---|---|---|---|"]
    for seed, s in per_seed.items():
        lines.append(f"| {seed} | {s['after_offline']:.1f} | {s['after_online']:.1f} | {s['best_online']:.1f} | "
                     f"{s['control']:.1f} | {s['gain_over_control']:+.1f} |")
    lines += [f"| mean ± std | {fmt('after_offline')} | {fmt('after_online')} | {fmt('best_online')} | "
              f"{fmt('control')} | {fmt('gain_over_control')} |", "",
              f"Online ahead of its seed's control in {ahead}/{len(per_seed)} seeds."
              + (f" The best trajectory in the `{args.dataset}` dataset scores {best:.1f}." if best is not None else ""), "",
              f"![{name}]({name}.png)", ""]
    with open(os.path.join(args.out, f"{name}.md"), "w") as f:
        f.write("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
