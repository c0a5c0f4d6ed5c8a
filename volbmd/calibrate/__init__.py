"""HU → bone mineral density (mg/cm³): phantom, stored and internal (phantomless) calibration."""

from volbmd.calibrate.base import Calibration, RodResult, load_calibration, save_calibration

__all__ = ["Calibration", "RodResult", "load_calibration", "save_calibration"]
