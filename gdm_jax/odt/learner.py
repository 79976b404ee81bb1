"""ODT learner: parameters, optimizers, temperature, and one (data-parallel) update step."""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import optax
from flax import struct
from jax.sharding import AxisType, Mesh

from gdm_jax.core import mesh as mesh_lib
from gdm_jax.odt.loss import odt_loss, temperature_loss
from gdm_jax.odt.model import DecisionTransformer

Batch = Mapping[str, jax.Array]


@dataclasses.dataclass(frozen=True)
class ODTHParams:
    """Optimisation hyperparameters; defaults follow Zheng et al. 2022 (the presets scale them)."""
    batch_size: int = 256
    context_len: int = 20
    rtg_scale: float = 1e-3
    target_entropy: float = -3.0
    learning_rate: float = 1e-4
    weight_decay: float = 5e-4
    warmup_steps: int = 10_000
    grad_clip: float = 0.25
    temperature_lr: float = 1e-4
    init_temperature: float = 0.1


@struct.dataclass
class Learner:
    """Everything the gradient step touches (plus the frozen observation statistics)."""
    params: Any
    opt_state: Any
    log_temperature: jax.Array
    temperature_opt_state: Any
    obs_mean: jax.Array
    obs_std: jax.Array
    updates: jax.Array  # int32 number of gradient steps taken


def policy_params(learner: Learner) -> dict:
    """What ``policy_fn`` and ``policy_outputs`` take as parameters."""
    return {"params": learner.params, "obs_mean": learner.obs_mean, "obs_std": learner.obs_std}


def make_optimizers(hp: ODTHParams) -> tuple[optax.GradientTransformation,
                                             optax.GradientTransformation]:
    """LAMB with linear warmup and gradient clipping for the policy; Adam for log λ."""
    schedule = lambda step: hp.learning_rate * jnp.minimum(1.0, (step + 1) / max(hp.warmup_steps, 1))
    policy_tx = optax.chain(optax.clip_by_global_norm(hp.grad_clip),
                            optax.lamb(schedule, weight_decay=hp.weight_decay))
    return policy_tx, optax.adam(hp.temperature_lr)


def init_learner(model: DecisionTransformer, hp: ODTHParams, key: jax.Array,
                 obs_mean: jax.Array, obs_std: jax.Array) -> Learner:
    """Fresh parameters, optimizer states and temperature."""
    cfg = model.config
    K = cfg.context_len
    params = model.init(key, jnp.zeros((1, K)), jnp.zeros((1, K, cfg.obs_dim)),
                        jnp.zeros((1, K, cfg.action_dim)), jnp.zeros((1, K), jnp.int32),
                        jnp.ones((1, K), bool))["params"]
    policy_tx, temperature_tx = make_optimizers(hp)
    log_temperature = jnp.log(jnp.asarray(hp.init_temperature, jnp.float32))
    return Learner(params=params, opt_state=policy_tx.init(params),
                   log_temperature=log_temperature,
                   temperature_opt_state=temperature_tx.init(log_temperature),
                   obs_mean=jnp.asarray(obs_mean, jnp.float32),
                   obs_std=jnp.asarray(obs_std, jnp.float32),
                   updates=jnp.zeros((), jnp.int32))


def update_step(model: DecisionTransformer, hp: ODTHParams, learner: Learner, batch: Batch,
                key: jax.Array) -> tuple[Learner, dict]:
    """One gradient step on the policy and one dual step on the temperature."""
    policy_tx, temperature_tx = make_optimizers(hp)
    obs_stats = {"obs_mean": learner.obs_mean, "obs_std": learner.obs_std}
    (loss, aux), grads = jax.value_and_grad(odt_loss, has_aux=True)(
        learner.params, learner.log_temperature, model, obs_stats, batch, key,
        rtg_scale=hp.rtg_scale, target_entropy=hp.target_entropy)
    updates, opt_state = policy_tx.update(grads, learner.opt_state, learner.params)
    params = optax.apply_updates(learner.params, updates)
    t_loss, t_grad = jax.value_and_grad(temperature_loss)(learner.log_temperature,
                                                          aux["entropy"], hp.target_entropy)
    t_updates, t_opt_state = temperature_tx.update(t_grad, learner.temperature_opt_state)
    learner = learner.replace(params=params, opt_state=opt_state,
                              log_temperature=learner.log_temperature + t_updates,
                              temperature_opt_state=t_opt_state, updates=learner.updates + 1)
    metrics = {"loss": loss, "temperature_loss": t_loss, "grad_norm": optax.tree.norm(grads),
               **aux}
    return learner, metrics


def auto_mesh(mesh: Mesh) -> Mesh:
    """The same devices and axis names with Auto axis types.

    Under Explicit axes every gather (embedding lookups, replay sampling) would need an
    explicit out_sharding; with Auto axes the in/out shardings and sharding constraints
    place the batch and XLA inserts the gradient all-reduce.
    """
    return Mesh(mesh.devices, mesh.axis_names, axis_types=(AxisType.Auto,) * len(mesh.axis_names))


def make_train_step(model: DecisionTransformer, hp: ODTHParams,
                    mesh: Mesh) -> Callable[[Learner, Batch, jax.Array], tuple[Learner, dict]]:
    """Jitted ``(learner, batch, key) -> (learner, metrics)``: batch split over ``data``, params replicated."""
    mesh_lib.check_divisible("odt.batch_size", hp.batch_size, mesh)
    mesh = auto_mesh(mesh)
    rep, dat = mesh_lib.replicated(mesh), mesh_lib.data_sharding(mesh)
    return jax.jit(lambda learner, batch, key: update_step(model, hp, learner, batch, key),
                   in_shardings=(rep, dat, rep), out_shardings=(rep, rep))
