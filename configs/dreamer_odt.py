"""Dreamer + Online Decision Transformer: the flagship loop on Brax.

Presets: "tiny" (tests, seconds), "cpu" (the README's main job: learns on hopper in
minutes on 2 cores), "" (accelerator scale).
"""
import ml_collections


def get_config(preset: str = "") -> ml_collections.ConfigDict:
    """Config for ``python -m gdm_jax.launch --config=configs/dreamer_odt.py[:preset]``."""
    c = ml_collections.ConfigDict()
    c.experiment = "dreamer_odt"
    c.seed = 0
    c.mesh = ml_collections.ConfigDict({"data": -1})
    c.env = ml_collections.ConfigDict({
        "name": "hopper", "backend": "spring", "episode_length": 1000, "obs_mask": ()})
    c.replay = ml_collections.ConfigDict({"capacity": 2000})  # whole trajectories

    # The loop: collection, ratios and batch sizes (all static shapes).
    c.loop = ml_collections.ConfigDict({
        "num_envs": 64, "env_steps": 64,  # per env, per chunk
        "updates": 64,                    # fused steps per chunk
        "num_chunks": 2000,
        "wm_batch_size": 16, "wm_seq_len": 64,
        "num_starts": 1024,               # imagination starts per step
        "odt_batch_size": 256,
        "imagined_fraction": 0.5,         # share of each ODT batch imagined by the world model
        # Imagined return-to-go at the horizon: "critic" (Dreamer's discounted value) or
        # "return_head" (undiscounted, regressed on the real hindsight return-to-go: the scale of
        # real ODT windows, but the behaviour policies' return, not the imagining actor's; it
        # did worse in the sample-efficiency study, see results/sample_efficiency/).
        "rtg_bootstrap": "critic",
        "collector": "mix",               # who acts in the real envs: odt | dreamer | mix
        "odt_envs": 32,                   # envs acting with ODT under "mix"
    })

    # Optional offline start: seed the replay with a dataset and pretrain every part on it
    # (fused steps without acting) for offline.chunks chunks of loop.updates steps.
    c.offline = ml_collections.ConfigDict({"dataset": "", "chunks": 0})

    # Dreamer world model and actor-critic (same keys as configs/dreamer.py).
    c.model = ml_collections.ConfigDict({
        "deter": 1024, "stoch": 32, "classes": 32, "hidden": 768, "layers": 2, "num_bins": 255,
        "unimix": 0.01, "free_nats": 1.0, "dyn_scale": 0.5, "rep_scale": 0.1})
    c.actor_critic = ml_collections.ConfigDict({
        "hidden": 768, "layers": 2, "horizon": 20, "gamma": 0.99, "lam": 0.95,
        "entropy_coef": 3e-4, "min_std": 0.1, "max_std": 1.0, "slow_critic_decay": 0.98,
        "return_norm_decay": 0.99, "actor_grad": "dynamics", "num_starts": 0})
    c.optim = ml_collections.ConfigDict({
        "wm_lr": 1e-4, "actor_lr": 3e-5, "critic_lr": 3e-5, "wm_grad_clip": 1000.0,
        "ac_grad_clip": 100.0, "eps": 1e-8})

    # The ODT network and its learning (keys as in configs/odt.py).
    c.odt_model = ml_collections.ConfigDict({
        "embed_dim": 512, "num_layers": 4, "num_heads": 4, "dropout_rate": 0.1,
        "max_context_len": 20, "attention_backend": "xla"})
    c.odt = ml_collections.ConfigDict({
        "context_len": 20, "rtg_scale": 1e-3, "learning_rate": 1e-4, "weight_decay": 5e-4,
        "warmup_steps": 10_000, "grad_clip": 0.25, "temperature_lr": 1e-4,
        "init_temperature": 0.1, "target_entropy_per_dim": -1.0,
        # Target returns as multiples of the reference expert return of the env.
        "eval_return_factor": 1.0, "explore_return_factor": 2.0})

    c.eval = ml_collections.ConfigDict({"num_envs": 10, "context": 16, "horizon": 32, "batch_size": 32})
    c.run = ml_collections.ConfigDict({"checkpoint_every": 50, "keep_checkpoints": 2, "eval_every": 50})

    if preset == "tiny":
        c.env.episode_length = 50
        c.replay.capacity = 16
        c.offline.update(dataset="medium", chunks=1)
        c.loop.update(num_envs=2, env_steps=25, updates=2, num_chunks=2, wm_batch_size=2,
                      wm_seq_len=8, num_starts=8, odt_batch_size=4, odt_envs=1)
        c.model.update(deter=16, stoch=4, classes=4, hidden=16, num_bins=31)
        c.actor_critic.update(hidden=16, horizon=6)
        c.odt_model.update(embed_dim=16, num_layers=1, num_heads=2, max_context_len=4, dropout_rate=0.0)
        c.odt.update(context_len=4, warmup_steps=5, learning_rate=1e-3)
        c.eval.update(num_envs=2, context=4, horizon=4, batch_size=2)
        c.run.update(checkpoint_every=1, keep_checkpoints=2, eval_every=3)
    elif preset == "cpu":
        c.mesh.data = 1
        c.replay.capacity = 400
        c.offline.update(dataset="medium", chunks=40)
        c.loop.update(num_envs=8, env_steps=32, updates=16, num_chunks=100, wm_batch_size=16,
                      wm_seq_len=32, num_starts=256, odt_batch_size=64, odt_envs=4,
                      imagined_fraction=0.25)
        c.model.update(deter=128, stoch=8, classes=8, hidden=128)
        c.actor_critic.update(hidden=128, horizon=16)
        c.optim.update(wm_lr=3e-4, actor_lr=1e-4, critic_lr=1e-4)
        c.odt_model.update(embed_dim=64, num_layers=2, num_heads=2, max_context_len=10)
        c.odt.update(context_len=10, warmup_steps=200, learning_rate=5e-4)
        c.eval.update(num_envs=8, context=8, horizon=16, batch_size=16)
        c.run.update(checkpoint_every=20, eval_every=20)
    elif preset:
        raise ValueError(f"unknown dreamer_odt preset {preset!r}; choose from 'tiny', 'cpu' or '' (default)")
    return c
