"""Instance matching metrics (AP_dsb)."""

from .ap_metric import APDSBMetric
from .matching import ap_dsb, matching_report
