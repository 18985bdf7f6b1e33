"""The batch-normalised head of the pretrained families (vit, resnet): hidden sizes (default 512-256-128-64), each
Linear -> BatchNorm1d -> ReLU -> Dropout(p), then the output Linear. (B, in_features) -> (B, num_labels).

The implementation lives in `hub_code/fer_head.py` because the modeling files import it relatively: a saved or
pushed model then carries the head's code with it (trust_remote_code) instead of depending on fer_hf.
"""

from fer_hf.models.hub_code.fer_head import (
    DEFAULT_HEAD_SIZES,
    BatchNormHead,
    check_head_dropout,
    check_head_sizes,
    match_channels,
)

__all__ = ["DEFAULT_HEAD_SIZES", "BatchNormHead", "check_head_dropout", "check_head_sizes", "match_channels"]
