"""From predicted masks to clinical numbers: volume curves, ED/ES, ventricular volumes, ejection fractions,
LV mass, quality control with a ``review`` flag, one figure per subject and an HTML report for the batch.

``autocmr_predict`` runs :func:`analyse_batch` after its batch (the ``after_batch`` hook of
:func:`autocmr.inference.batch.predict_folder`); :func:`analyse_masks` works in memory and :func:`find_ed_es`
(:mod:`autocmr.evaluation.phases`, below inference so that the fast cine path can use it) finds ED and ES on
any volume curve.
"""
from autocmr.analysis.measures import FrameMask, SubjectMeasures
from autocmr.analysis.pipeline import (AnalysisOutputs, analyse_batch, analyse_cases, analyse_masks,
                                      analyse_output_folder)
from autocmr.analysis.qc import QC_FLAGS, QcThresholds
from autocmr.evaluation.phases import EdEs, find_ed_es

__all__ = ["AnalysisOutputs", "EdEs", "FrameMask", "QC_FLAGS", "QcThresholds", "SubjectMeasures", "analyse_batch",
           "analyse_cases", "analyse_masks", "analyse_output_folder", "find_ed_es"]
