"""deft6g.experiment: the engine every study and benchmark shares -- guarded output folders, a resumable
result store, the point runner, seed statistics (mean and confidence interval, log-space intervals, the
equivalence test TOST), plots, live TensorBoard scalars, configuration files checked key by key, measurements in a
fresh interpreter, and the study protocol with the command registry
(`Study`, `run`, `run_stages`, `register_study`)."""

from .store import (OutputFolderError, ResultStore, load_json, prepare_output, write_json_atomic, write_table,
                    write_text_atomic)
from .runner import PointsFailed, RayUnavailable, available_cores, require_ray, run_points, start_ray
from .stats import censored_median, ci_points, log_mean_ci, mean_ci, paired_ci, percentiles, summarise, to_db, tost
from .plots import interval, line_plot, merge_labels
from .tuning import Choice, candidates, tune, tuner, tuning_store
from .scalar_writer import ScalarWriter, check_log_dir, read_scalars, run_name
from .config import ConfigError, check_fields, load_flat_config, read_toml, require, require_int, require_positive
from .isolation import isolated, peak_rss_mb
from .protocol import (COMMANDS, Command, PointRows, PointTask, Stage, Study, StudyResult, Tuning, print_summary,
                       register_command, register_study, run, run_stages)
