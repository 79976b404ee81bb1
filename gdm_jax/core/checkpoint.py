"""Orbax checkpoints of the whole train state plus a little host-side JSON."""
from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp


class CheckpointError(RuntimeError):
    """A checkpoint exists but cannot be restored into this run's state."""


class Checkpointer:
    """Saves/restores ``(state, meta)`` under ``workdir/checkpoints/<chunk>``."""

    def __init__(self, workdir: str, keep: int = 2):
        self.directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=True,
            # Synchronous: the next chunk donates the state buffers we are writing.
            enable_async_checkpointing=False)
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    def latest(self) -> int | None:
        """Newest fully written checkpoint step (orbax ignores half-written temp dirs)."""
        return self._manager.latest_step()

    def save(self, step: int, state: Any, meta: dict) -> None:
        """Write ``state`` and ``meta`` as checkpoint ``step`` (no-op if it already exists)."""
        if step in self._manager.all_steps():
            return
        self._manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)), force=True)
        self._manager.wait_until_finished()

    def restore(self, template: Any, step: int | None = None) -> tuple[Any, dict]:
        """Restore into the structure/sharding of ``template`` (arrays or ShapeDtypeStructs)."""
        step = self.latest() if step is None else step
        abstract = jax.tree.map(_abstract, template)
        try:
            restored = self._manager.restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
        except Exception as e:  # orbax raises many types; name the file and keep it
            raise CheckpointError(
                f"checkpoint {os.path.join(self.directory, str(step))} could not be restored "
                f"({type(e).__name__}: {str(e)[:300]}). It was left untouched; move it away to "
                f"resume from an older one, or use a fresh --workdir.") from e
        return restored.state, dict(restored.meta)

    def close(self) -> None:
        self._manager.close()


def _abstract(x: Any) -> Any:
    if isinstance(x, jax.Array):
        return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
    return x
