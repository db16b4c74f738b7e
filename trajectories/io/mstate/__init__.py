"""R mstate's long format (msprep) in: :func:`from_mstate` (:mod:`.read`). Writing it is not
supported."""

from trajectories.io.mstate.read import ENTRY_RULES, MSTATE_EXTRA, WHAT, from_mstate

__all__ = ["ENTRY_RULES", "MSTATE_EXTRA", "WHAT", "from_mstate"]
