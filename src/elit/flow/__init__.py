"""Training objectives: rectified flow (and, later, distillation from a teacher)."""
from elit.flow.objective import TimeSampler, flow_loss, interpolate, shift_time, t_bin_index, velocity_target

__all__ = ["TimeSampler", "flow_loss", "interpolate", "shift_time", "t_bin_index", "velocity_target"]
