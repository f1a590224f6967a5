"""Fold ensembles: several networks of one model folder answering together.

nnU-Net predicts with every fold it is given (``nnUNetv2_predict -f 0 1 2 3 4``) and averages the
folds' softmax probabilities. nnint does the same when a model's ``use_fold`` is a list: each
``fold_<k>/checkpoint_final.pth`` of the folder is built with the folder's one ``plans.json``, and
:class:`FoldEnsemble` stands in for the network. The engine around it is unchanged; its forward
passes cost one pass per fold.

Why ensemble at all: networks trained with different seeds or recipes make different mistakes,
and the mean of their probabilities keeps what they agree on. Two ``small`` networks fit the
bundled model's 25 MB as float16. Session 20 measured two pairs of nnint's CPU-trained networks
and neither beat the better member alone (docs/training.md), so no model card uses it yet.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["FoldEnsemble"]


class FoldEnsemble(nn.Module):
    """The mean softmax of ``members``, returned as log-probabilities.

    A drop-in for one network: input ``[B, C, *patch]``, output ``[B, K, *patch]`` whose argmax is
    the argmax of the mean probabilities, and whose class difference ``out[:, 1] - out[:, 0]`` is
    the ensemble's logit (what the engine's intensity veto reads). The mean is taken in log space
    (log-mean-exp of the members' log-softmax), so confident answers keep their full logit: one
    member alone, or identical members, give exactly that member's logit difference.
    """

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        if len(members) < 1:
            raise ValueError("a fold ensemble needs at least one network")
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logp = torch.stack([torch.log_softmax(net(x).float(), dim=1) for net in self.members])
        return torch.logsumexp(logp, dim=0) - math.log(len(self.members))
