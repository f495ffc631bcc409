"""Ignite handlers: loss-term logging, TensorBoard instance panels, resuming."""

from .ap_report import APReportHandler, format_ap_table, write_ap_tables
from .bounded_validation import BoundedValidationHandler
from .final_validation import FinalValidationHandler
from .instance_panels import InstancePanelsHandler, instance_colors, middle_slice
from .loss_terms import LossTermsHandler
from .resume import BestModelSaver, ResumeHandler, TrainingCheckpointSaver, latest_checkpoint
from .step_time import STEP_PARTS, StepTimeHandler
from .summary_writer import LazySummaryWriter
from .thread_count import ThreadCountHandler
from .time_limit import TrainingTimeLimit
from .time_to_accuracy import TimeToAccuracyHandler
