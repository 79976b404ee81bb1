"""Dreamer (DreamerV3 ingredients) on Brax: RSSM world model and actor-critic learned in imagination.

API used by other systems (e.g. ``dreamer_odt``); parameters are plain dicts held by the caller:

- ``agent = run.build_agent(config, obs_dim, action_dim)`` (or ``train.Agent(wm_cfg, ac_cfg, opt_cfg)``)
  bundles ``agent.wm`` (``world_model.WorldModel``), ``agent.ac`` (``actor_critic.ActorCritic``)
  and the three optax optimisers.
- ``learner = train.init_learner(agent, key)``: ``wm_params``, ``wm_opt`` and ``ac``
  (``ActorCriticState``: ``params = {actor, critic, slow_critic}``, optimiser states, return norm).
- ``world_model.world_model_update(agent.wm, agent.wm_opt, wm_params, wm_opt, batch, key)
  -> (wm_params, wm_opt, metrics, posteriors[B, T])`` for a replay ``batch`` of
  ``obs [B,T,O], action [B,T,A], reward [B,T], terminated [B,T], is_first [B,T]``
  (``action[t]`` is taken at ``obs[t]``; ``reward[t]``/``terminated[t]`` are its outcome).
- ``world_model.imagine_rollout(agent.wm, wm_params, start, policy, horizon, key) -> Imagined``
  with ``states/feats/obs [H+1, N]``, ``actions/rewards/continues [H, N]`` for any
  ``policy(feat, key) -> action``; ``actor_critic.imagine_with_values`` adds critic values
  ``[H+1, N]`` using the Dreamer actor.
- ``actor_critic.actor_critic_update(agent.ac, agent.actor_opt, agent.critic_opt, ac_state,
  agent.wm, wm_params, start, key) -> (ac_state, Imagined, metrics)``.
- ``train.train_step(agent, learner, batch, key)`` fuses both updates; ``train.make_policy_fn``
  gives the env policy whose carry (``PolicyCarry``) is the RSSM posterior and last action.
- ``eval.open_loop_error(agent.wm, wm_params, batch, context, horizon, key)`` measures the
  world model's multi-step prediction error.
"""
