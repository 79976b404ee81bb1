"""Runs two fused steps on a 1-device and an 8-device mesh (same global batch); prints the differences."""
import json

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from fused_common import setup, tiny_config
from gdm_jax.dreamer_odt import train as loop_lib


def run(num_devices):
    config = tiny_config(wm_batch_size=8, odt_batch_size=8, num_starts=16, imagined_fraction=0.5)
    agent, model, hp, cfg, replay, learners = setup(config)
    mesh = jax.make_mesh((num_devices,), ("data",), axis_types=(jax.sharding.AxisType.Auto,),
                         devices=jax.devices()[:num_devices])
    rep, dat = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
    replay, learners = jax.device_put((replay, learners), rep)
    step = jax.jit(lambda l, k: loop_lib.fused_step(agent, model, hp, cfg, replay, l, k, dat),
                   in_shardings=(rep, rep), out_shardings=(rep, rep))
    for i in range(2):
        learners, metrics = step(learners, jax.random.key(i))
    return jax.device_get(learners), jax.device_get(metrics)


if __name__ == "__main__":
    (l1, m1), (l8, m8) = run(1), run(8)
    diffs = jax.tree.leaves(jax.tree.map(lambda a, b: float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)))) if np.asarray(a).size else 0.0, l1, l8))
    rel = [abs(float(m1[k]) - float(m8[k])) / max(1e-6, abs(float(m1[k]))) for k in m1]
    print(json.dumps({"devices": jax.device_count(), "max_param_diff": max(diffs),
                      "max_metric_rel_diff": max(rel)}))
