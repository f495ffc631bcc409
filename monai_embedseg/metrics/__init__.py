"""Instance matching metrics (AP_dsb)."""

from .matching import ap_dsb, matching_report
from .ap_metric import APDSBMetric
