"""deft6g.experiment: the engine every study and benchmark shares -- guarded output folders, a resumable
result store, the point runner, seed statistics (mean and confidence interval) and plots."""

from .store import OutputFolderError, ResultStore, prepare_output, write_table
from .runner import PointsFailed, RayUnavailable, available_cores, require_ray, run_points, start_ray
from .stats import mean_ci, paired_ci, percentiles, summarise
from .plots import line_plot, merge_labels
