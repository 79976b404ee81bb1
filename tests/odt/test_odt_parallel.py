"""Data-parallel ODT updates on 8 fake CPU devices equal the 1-device updates on the same global batch."""
import json
import os
import subprocess
import sys
import textwrap

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SCRIPT = textwrap.dedent("""
    import json
    import jax, jax.numpy as jnp, ml_collections, numpy as np
    from gdm_jax.core import mesh as mesh_lib
    from gdm_jax.nn.transformer import TransformerConfig
    from gdm_jax.odt.learner import ODTHParams, auto_mesh, init_learner, make_train_step
    from gdm_jax.odt.model import DecisionTransformer, ODTModelConfig

    O, A, B, K = 4, 2, 16, 5
    model = DecisionTransformer(ODTModelConfig(
        obs_dim=O, action_dim=A, context_len=K, max_ep_len=16,
        transformer=TransformerConfig(num_layers=1, num_heads=2, embed_dim=16, dropout_rate=0.1)))
    hp = ODTHParams(batch_size=B, context_len=K, target_entropy=-2.0, learning_rate=1e-3,
                    warmup_steps=1, temperature_lr=1e-2)

    def batch(i):
        k1, k2 = jax.random.split(jax.random.key(i))
        obs = jax.random.normal(k1, (B, K, O))
        return {"obs": obs, "action": 0.5 * jnp.tanh(obs[..., :A]),
                "rtg": jax.random.uniform(k2, (B, K)) * 100,
                "timestep": jnp.broadcast_to(jnp.arange(K), (B, K)).astype(jnp.int32),
                "mask": jnp.ones((B, K), jnp.float32).at[:3, 3:].set(0.0)}

    def train(devices):
        mesh = auto_mesh(mesh_lib.make_mesh(ml_collections.ConfigDict({"mesh": {"data": devices}})))
        step = make_train_step(model, hp, mesh)
        learner = mesh_lib.replicate(init_learner(model, hp, jax.random.key(0), jnp.zeros(O),
                                                  jnp.ones(O)), mesh)
        shards = 0
        for i in range(3):
            b = mesh_lib.shard_leading(batch(i), mesh)
            shards = len(b["obs"].addressable_shards)
            learner, metrics = step(learner, b, jax.random.key(10 + i))
        return jax.device_get(learner), shards

    l8, shards8 = train(8)
    l1, shards1 = train(1)
    diffs = jax.tree.leaves(jax.tree.map(lambda a, b: float(np.max(np.abs(a - b))),
                                         (l8.params, l8.log_temperature),
                                         (l1.params, l1.log_temperature)))
    moved = jax.tree.leaves(jax.tree.map(lambda a, b: float(np.max(np.abs(a - b))), l1.params,
                                         init_learner(model, hp, jax.random.key(0), jnp.zeros(O),
                                                      jnp.ones(O)).params))
    try:
        make_train_step(model, ODTHParams(batch_size=12), mesh_lib.make_mesh(
            ml_collections.ConfigDict({"mesh": {"data": 8}})))
        error = ""
    except ValueError as e:
        error = str(e)
    print("RESULT" + json.dumps({"devices": jax.device_count(), "max_diff": max(diffs),
                                 "max_move": max(moved), "shards": [shards8, shards1],
                                 "error": error}))
""")


def test_eight_device_updates_match_one_device():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
               JAX_PLATFORMS="cpu", PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True,
                          text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT")][-1]
    result = json.loads(line[len("RESULT"):])
    assert result["devices"] == 8
    assert result["shards"] == [8, 1]  # the global batch really was split over 8 devices
    assert result["max_move"] > 1e-4  # training changed the params, so the match means something
    assert result["max_diff"] < 1e-5, result
    assert "odt.batch_size=12" in result["error"] and "8 devices" in result["error"]
