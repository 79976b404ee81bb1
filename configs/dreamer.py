"""Dreamer (DreamerV3 ingredients) on Brax: presets "tiny" (tests), "cpu" (hopper in minutes), "" (accelerator)."""
import ml_collections


def get_config(preset: str = "") -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.experiment = "dreamer"
    c.seed = 0
    c.mesh = ml_collections.ConfigDict({"data": -1})

    c.env = ml_collections.ConfigDict({
        "name": "hopper", "backend": "spring", "episode_length": 1000, "num_envs": 16})
    c.replay = ml_collections.ConfigDict({"capacity": 65536})  # steps per env
    c.train = ml_collections.ConfigDict({
        "num_chunks": 2000, "env_steps": 64,  # per env, per chunk
        "updates": 32, "batch_size": 16, "seq_len": 64})
    c.model = ml_collections.ConfigDict({
        "deter": 1024, "stoch": 32, "classes": 32, "hidden": 768, "layers": 2, "num_bins": 255,
        "unimix": 0.01, "free_nats": 1.0, "dyn_scale": 0.5, "rep_scale": 0.1})
    c.actor_critic = ml_collections.ConfigDict({
        "hidden": 768, "layers": 2, "horizon": 15, "gamma": 0.99, "lam": 0.95,
        "entropy_coef": 3e-4, "min_std": 0.1, "max_std": 1.0, "slow_critic_decay": 0.98,
        "return_norm_decay": 0.99, "actor_grad": "dynamics",
        "num_starts": 0})
    c.optim = ml_collections.ConfigDict({
        "wm_lr": 1e-4, "actor_lr": 3e-5, "critic_lr": 3e-5, "wm_grad_clip": 1000.0,
        "ac_grad_clip": 100.0, "eps": 1e-8})
    c.eval = ml_collections.ConfigDict({"context": 16, "horizon": 32, "batch_size": 32})
    c.run = ml_collections.ConfigDict({"checkpoint_every": 100, "keep_checkpoints": 2, "eval_every": 100})

    if preset == "tiny":
        c.mesh.data = 1
        c.env.update(episode_length=50, num_envs=2)
        c.replay.capacity = 64
        c.train.update(num_chunks=2, env_steps=16, updates=2, batch_size=4, seq_len=8)
        c.model.update(deter=16, stoch=4, classes=4, hidden=16, num_bins=31)
        c.actor_critic.update(hidden=16, horizon=4)
        c.eval.update(context=4, horizon=4, batch_size=4)
        c.run.update(checkpoint_every=1, keep_checkpoints=1, eval_every=2)
    elif preset == "cpu":
        c.mesh.data = 1
        c.env.update(episode_length=1000, num_envs=4)
        c.replay.capacity = 16384
        c.train.update(num_chunks=1000, env_steps=32, updates=8, batch_size=16, seq_len=32)
        c.model.update(deter=128, stoch=8, classes=8, hidden=128)
        c.actor_critic.update(hidden=128, num_starts=128)
        c.optim.update(wm_lr=3e-4, actor_lr=1e-4, critic_lr=1e-4)
        c.eval.update(context=8, horizon=24, batch_size=32)
        c.run.update(checkpoint_every=100, keep_checkpoints=2, eval_every=100)
    elif preset:
        raise ValueError(f"unknown dreamer preset {preset!r}; choose from 'tiny', 'cpu' or '' (default)")
    return c
