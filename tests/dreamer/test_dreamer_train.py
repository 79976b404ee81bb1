"""Dreamer training pieces: fused step learning, replay windows, open-loop error, config validation."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.dreamer import get_config
from gdm_jax.dreamer import eval as eval_lib
from gdm_jax.dreamer import replay as replay_lib
from gdm_jax.dreamer import train as train_lib
from gdm_jax.dreamer.run import build_agent, validate
from gdm_jax.envs.rollout import Transitions

OBS, ACT = 3, 2


def _linear_system_batch(key, batch, length):
    """Sequences of a fixed stable linear system with reward = first obs dim and one reset."""
    k_obs, k_act = jax.random.split(key)
    A = jnp.array([[0.9, 0.1, 0.0], [-0.1, 0.9, 0.0], [0.0, 0.0, 0.5]])
    Bm = jnp.array([[0.5, 0.0], [0.0, 0.5], [0.3, -0.3]])
    actions = jax.random.uniform(k_act, (batch, length, ACT), minval=-1, maxval=1)
    x0 = jax.random.normal(k_obs, (batch, OBS))

    def step(x, a):
        nxt = x @ A.T + a @ Bm.T
        return nxt, (x, nxt[:, 0])

    _, (obs, reward) = jax.lax.scan(step, x0, jnp.swapaxes(actions, 0, 1))
    return {"obs": jnp.swapaxes(obs, 0, 1), "action": actions, "reward": jnp.swapaxes(reward, 0, 1),
            "terminated": jnp.zeros((batch, length)), "is_first": jnp.zeros((batch, length), bool)}


@pytest.fixture(scope="module")
def agent():
    config = get_config("tiny")
    config.optim.wm_lr = 3e-3  # a few dozen steps must show learning
    return build_agent(config, OBS, ACT)


def test_fused_train_step_reduces_world_model_loss(agent):
    batch = _linear_system_batch(jax.random.key(0), 8, 12)
    learner = train_lib.init_learner(agent, jax.random.key(1))

    @jax.jit
    def train(learner):
        def body(l, k):
            return train_lib.train_step(agent, l, batch, k)
        return jax.lax.scan(body, learner, jax.random.split(jax.random.key(2), 40))

    learner, metrics = train(learner)
    wm_loss = np.asarray(metrics["wm/loss"])
    assert np.all(np.isfinite(wm_loss)) and np.all(np.isfinite(metrics["actor/loss"]))
    assert wm_loss[-5:].mean() < 0.7 * wm_loss[:5].mean(), wm_loss
    assert metrics["wm/recon_loss"][-1] < metrics["wm/recon_loss"][0]
    assert metrics["wm/reward_loss"][-1] < metrics["wm/reward_loss"][0]
    # The slow critic trails the critic: it moved, but by less than the critic did.
    p0 = train_lib.init_learner(agent, jax.random.key(1)).ac.params
    moved = lambda name: sum(float(jnp.abs(a - b).sum()) for a, b in zip(
        jax.tree.leaves(learner.ac.params[name]), jax.tree.leaves(p0[name])))
    assert 0 < moved("slow_critic") < moved("critic")


def test_world_model_loss_ignores_masked_rows(agent):
    from gdm_jax.dreamer import world_model as wm_lib
    params = agent.wm.init(jax.random.key(6))
    batch = _linear_system_batch(jax.random.key(7), 4, 6)
    batch["mask"] = jnp.zeros((4, 6)).at[:2].set(1.0)
    other = dict(batch, obs=batch["obs"].at[2:].set(50.0), reward=batch["reward"].at[2:].set(-9.0))
    loss_a, _ = wm_lib.world_model_loss(agent.wm, params, batch, jax.random.key(8))
    loss_b, _ = wm_lib.world_model_loss(agent.wm, params, other, jax.random.key(8))
    np.testing.assert_allclose(loss_a, loss_b, rtol=1e-6)
    loss_c, _ = wm_lib.world_model_loss(agent.wm, params, dict(other, mask=jnp.ones((4, 6))),
                                        jax.random.key(8))
    assert abs(float(loss_c) - float(loss_a)) > 1.0


def _transitions(start, steps, num_envs, first_every=5):
    t = jnp.arange(start, start + steps, dtype=jnp.float32)
    obs = jnp.broadcast_to(t[:, None, None], (steps, num_envs, OBS)) + jnp.arange(num_envs)[None, :, None] * 1000
    zeros = jnp.zeros((steps, num_envs))
    return Transitions(obs=obs, action=jnp.zeros((steps, num_envs, ACT)), reward=obs[..., 0],
                       next_obs=obs + 1, terminated=zeros, truncated=zeros,
                       first=jnp.broadcast_to((t % first_every == 0)[:, None], (steps, num_envs)),
                       episode_return=zeros, episode_length=zeros.astype(jnp.int32), episode_mask=zeros)


def test_replay_windows_are_contiguous_recent_and_per_env():
    replay = replay_lib.create(num_envs=3, capacity=10, obs_dim=OBS, action_dim=ACT)
    for start in (0, 4, 8):  # 12 steps into a 10-step ring: steps 0 and 1 are overwritten
        replay = replay_lib.add(replay, _transitions(start, 4, 3))
    assert int(replay.size) == 10 and int(replay.cursor) == 2
    batch = replay_lib.sample(replay, jax.random.key(0), 64, 5)
    obs = np.asarray(batch["obs"][..., 0])
    env = obs // 1000
    t = obs % 1000
    assert np.all(env == env[:, :1])  # one env per window
    np.testing.assert_array_equal(np.diff(t, axis=1), 1)  # consecutive steps across the ring seam
    assert t.min() >= 2 and t.max() <= 11  # only the 10 most recent steps
    assert len(np.unique(t[:, 0])) > 3
    np.testing.assert_array_equal(batch["is_first"], (t % 5 == 0))
    np.testing.assert_array_equal(batch["reward"], obs)
    with pytest.raises(ValueError, match="capacity"):
        replay_lib.add(replay, _transitions(0, 11, 3))


def test_open_loop_error_masks_resets_and_checks_length(agent):
    learner = train_lib.init_learner(agent, jax.random.key(3))
    batch = _linear_system_batch(jax.random.key(4), 4, 10)
    batch["is_first"] = batch["is_first"].at[0, 6].set(True)  # a reset inside row 0's window
    err = eval_lib.open_loop_error(agent.wm, learner.wm_params, batch, 4, 6, jax.random.key(5))
    assert err["obs_mse"].shape == (6,)
    np.testing.assert_allclose(err["valid_fraction"], 0.75)  # row 0 is dropped at every step
    # The copy baseline is the MSE of repeating obs[3], computed here by hand over valid rows.
    obs = np.asarray(batch["obs"])
    want = np.mean((obs[1:, 9] - obs[1:, 3]) ** 2)
    np.testing.assert_allclose(err["copy_obs_mse"][-1], want, rtol=1e-5)
    with pytest.raises(ValueError, match="context"):
        eval_lib.open_loop_error(agent.wm, learner.wm_params, batch, 5, 6, jax.random.key(5))


def test_validate_accepts_presets():
    for preset in ("tiny", "cpu", ""):
        validate(get_config(preset))


@pytest.mark.parametrize("section,key,value,match", [
    ("train", "seq_len", 17, "train.seq_len"),  # longer than replay holds when training starts
    ("eval", "horizon", 64, "eval.context"),  # open-loop window longer than replay provides
    ("replay", "capacity", 8, "train.env_steps"),
    ("actor_critic", "horizon", 80, "actor_critic.horizon"),
    ("actor_critic", "gamma", 1.5, "actor_critic.gamma"),
    ("actor_critic", "actor_grad", "magic", "actor_critic.actor_grad"),
    ("optim", "wm_lr", -1e-3, "optim.wm_lr"),
    ("train", "batch_size", 0, "train.batch_size"),
    ("model", "unimix", 1.0, "model.unimix"),
    ("env", "name", "cartpole", "env.name"),
])
def test_validate_rejects_bad_values(section, key, value, match):
    config = get_config("tiny")
    config[section][key] = value
    with pytest.raises(ValueError, match=match):
        validate(config)


def test_unknown_preset_is_rejected():
    with pytest.raises(ValueError, match="preset"):
        get_config("huge")
