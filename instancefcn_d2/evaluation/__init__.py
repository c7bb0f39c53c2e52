"""Scoring and export of class-agnostic segment proposals (see ``segment_proposals``)."""
from .export import (
    instances_to_coco_results,
    instances_to_proposal_record,
    write_coco_results,
    write_proposal_pickle,
)
from .recall import format_ar_table, proposal_recall, run_proposal_cocoeval, score_proposals
from .segment_proposals import SegmentProposalEvaluator, load_coco_gt
from .timing import TimedModel, drop_undefined

__all__ = [
    "SegmentProposalEvaluator",
    "TimedModel",
    "drop_undefined",
    "format_ar_table",
    "instances_to_coco_results",
    "instances_to_proposal_record",
    "load_coco_gt",
    "proposal_recall",
    "run_proposal_cocoeval",
    "score_proposals",
    "write_coco_results",
    "write_proposal_pickle",
]
