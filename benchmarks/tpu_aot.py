"""Compile the flagship's fused chunk for a TPU pod slice without the hardware; report HBM and FLOPs.

Needs libtpu (``pip install -e ".[tpu-aot]"``, best in its own virtualenv: with libtpu
installed, plain runs print TPU-probe warnings). Runs on a CPU machine:

    JAX_PLATFORMS=cpu python benchmarks/tpu_aot.py --topology=v5e:4x4 --out=results/tpu_aot

For each topology it builds the ``dreamer_odt`` default (accelerator) preset with batches
scaled to the chip count, lowers one chunk (collection + K fused steps) and one ODT
update against abstract, sharded inputs, compiles them with XLA:TPU, and writes
``memory_analysis()`` (bytes per chip) and ``cost_analysis()`` (FLOPs, bytes accessed).
"""
from __future__ import annotations

import argparse
import json
import os
import time

import jax
import numpy as np
from jax.experimental import topologies
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_config(preset: str):
    from gdm_jax.core import config_utils

    return config_utils.load_config(f"configs/dreamer_odt.py:{preset}", ROOT)


def scaled_config(preset: str, num_chips: int, envs_per_chip: int, wm_seqs_per_chip: int,
                  odt_windows_per_chip: int):
    """A preset with every global batch a multiple of the chip count."""
    c = load_config(preset)
    c.mesh.data = num_chips
    c.loop.num_envs = envs_per_chip * num_chips
    c.loop.odt_envs = c.loop.num_envs // 2
    c.loop.wm_batch_size = wm_seqs_per_chip * num_chips
    c.loop.odt_batch_size = odt_windows_per_chip * num_chips
    c.loop.num_starts = min(c.loop.wm_batch_size * c.loop.wm_seq_len, 64 * num_chips)
    c.replay.capacity = max(c.replay.capacity, c.loop.num_envs)
    return c


def analyse(compiled) -> dict:
    mem = compiled.memory_analysis()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    fields = ("argument_size_in_bytes", "output_size_in_bytes", "temp_size_in_bytes",
              "alias_size_in_bytes", "generated_code_size_in_bytes")
    out = {f: int(getattr(mem, f)) for f in fields}
    out["peak_hbm_per_chip_gib"] = (out["argument_size_in_bytes"] + out["output_size_in_bytes"]
                                    + out["temp_size_in_bytes"] - out["alias_size_in_bytes"]) / 2**30
    out["flops"] = float(cost.get("flops", float("nan")))
    out["bytes_accessed"] = float(cost.get("bytes accessed", float("nan")))
    return out


def compile_for(topology: str, args) -> dict:
    from gdm_jax.core import mesh as mesh_lib
    from gdm_jax.dreamer_odt import run as run_lib
    from gdm_jax.dreamer_odt import train as loop_lib
    from gdm_jax.odt import learner as odt_learner
    from gdm_jax.odt.run import score_fn_for

    topo = topologies.get_topology_desc(platform="tpu", topology_name=topology)
    devices = np.array(topo.devices)
    n = devices.size
    mesh = Mesh(devices, (mesh_lib.DATA_AXIS,), axis_types=(jax.sharding.AxisType.Auto,))
    config = scaled_config(args.preset, n, args.envs_per_chip, args.wm_seqs_per_chip,
                           args.odt_windows_per_chip)
    env, agent, model, hp, cfg, reference = run_lib.build(config, num_devices=n)
    obs = env.obs_size
    rep = NamedSharding(mesh, P())
    abstract_state = jax.eval_shape(
        lambda k: loop_lib.init_state(agent, model, hp, cfg, env, config.replay.capacity, k,
                                      np.zeros(obs, np.float32), np.ones(obs, np.float32)),
        jax.random.key(0))
    abstract_state = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=rep),
                                  abstract_state)
    result = {"topology": topology, "preset": args.preset or "default", "chips": n, "hosts": len({d.process_index for d in devices.flat}),
              "global": {k: int(config.loop[k]) for k in ("num_envs", "env_steps", "updates",
                                                           "wm_batch_size", "wm_seq_len",
                                                           "num_starts", "odt_batch_size")}}
    t = time.perf_counter()
    chunk_fn = loop_lib.make_chunk_fn(agent, model, hp, cfg, env, mesh, score_fn_for(reference))
    result["chunk"] = analyse(chunk_fn.lower(abstract_state).compile())
    result["chunk"]["compile_seconds"] = time.perf_counter() - t

    t = time.perf_counter()
    dat = NamedSharding(mesh, P(mesh_lib.DATA_AXIS))
    B, K = cfg.odt_batch_size, hp.context_len
    batch = {"obs": jax.ShapeDtypeStruct((B, K, obs), np.float32, sharding=dat),
             "action": jax.ShapeDtypeStruct((B, K, env.action_size), np.float32, sharding=dat),
             "rtg": jax.ShapeDtypeStruct((B, K), np.float32, sharding=dat),
             "timestep": jax.ShapeDtypeStruct((B, K), np.int32, sharding=dat),
             "mask": jax.ShapeDtypeStruct((B, K), np.float32, sharding=dat)}
    step = jax.jit(lambda l, b, k: odt_learner.update_step(model, hp, l, b, k),
                   in_shardings=(rep, dat, rep), out_shardings=(rep, rep))
    key = jax.ShapeDtypeStruct((), jax.random.key(0).dtype, sharding=rep)
    result["odt_update"] = analyse(step.lower(abstract_state.odt, batch, key).compile())
    result["odt_update"]["compile_seconds"] = time.perf_counter() - t
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--topology", nargs="+", default=["v5e:2x2", "v5e:4x4", "v5e:16x16"])
    p.add_argument("--preset", default="", help="dreamer_odt preset whose model sizes to compile")
    p.add_argument("--envs_per_chip", type=int, default=8)
    p.add_argument("--wm_seqs_per_chip", type=int, default=2)
    p.add_argument("--odt_windows_per_chip", type=int, default=16)
    p.add_argument("--out", default=os.path.join(ROOT, "results", "tpu_aot"))
    args = p.parse_args()
    os.makedirs(args.out, exist_ok=True)
    results = []
    for topology in args.topology:
        r = compile_for(topology, args)
        results.append(r)
        c, u = r["chunk"], r["odt_update"]
        print(f"{topology:>10} chips={r['chips']:4d} hosts={r['hosts']:3d} | chunk: "
              f"{c['peak_hbm_per_chip_gib']:.2f} GiB/chip, {c['flops'] / 1e9:.1f} GFLOP, "
              f"compile {c['compile_seconds']:.0f}s | odt update: {u['peak_hbm_per_chip_gib']:.3f} "
              f"GiB/chip, {u['flops'] / 1e9:.1f} GFLOP", flush=True)
    with open(os.path.join(args.out, "tpu_aot.json"), "w") as f:
        json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
