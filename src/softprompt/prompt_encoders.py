"""The trainable reparameterisations of p_tuning and prefix_tuning, laid out as PEFT's modules.

    enc = PromptEncoder(init=torch.randn(P, H), kind=Encoder.MLP, hidden=H)     # p_tuning
    enc()                                      # [P, H]: the vectors put in front of the input embeddings
    pre = PrefixEncoder(layers=L, width=D, init_kv=kv)                           # prefix_tuning, no projection
    pre = PrefixEncoder(layers=L, width=D, init_inputs=torch.randn(P, D), hidden=512)   # with projection
    pre()                                      # [P, L * 2 * D]: per virtual token, layer-major keys then values

Submodule names and the math are PEFT's (tuners/p_tuning/model.py PromptEncoder, tuners/prefix_tuning/model.py
PrefixEncoder), so a PEFT encoder's state dict loads into ours and back unchanged (`embedding.weight`,
`mlp_head.*`, `lstm_head.*`, `transform.*`), which is what the exactness tests do:

    PromptEncoder, mlp:   embedding [P, H] -> Linear(H, h) ReLU Linear(h, h) ReLU Linear(h, H)
    PromptEncoder, lstm:  embedding [P, H] -> LSTM(H, h, 2 layers, bidirectional) -> Linear(2h, 2h) ReLU Linear(2h, H)
    PrefixEncoder:        embedding [P, L*2*D]                                   (no projection)
                          embedding [P, D] -> Linear(D, h) Tanh Linear(h, L*2*D)  (prefix_projection)

D is the model's key/value width (heads x head dim; fewer heads on a grouped-query model). PEFT runs the
encoder on a batch of index rows [B, P]; the output does not depend on the row, so ours runs it once on
[P] (the LSTM on a batch of one) and the caller expands it to the batch.
"""

from __future__ import annotations

import torch
from torch import nn

from .config import Encoder
from .errors import SoftPromptError

LSTM_LAYERS = 2
"""PEFT's default encoder_num_layers (its MLP ignores the setting; its LSTM uses it); dropout 0, its default."""


class PromptEncoder(nn.Module):
    """p_tuning's encoder: trainable inputs [P, H] through an MLP or a bidirectional LSTM + MLP, in fp32."""

    def __init__(self, init: torch.Tensor, kind: Encoder, hidden: int):
        super().__init__()
        P, H = init.shape
        self.kind = Encoder(kind)
        self.embedding = nn.Embedding(P, H)
        with torch.no_grad():
            self.embedding.weight.copy_(init.float())
        if self.kind is Encoder.LSTM:
            self.lstm_head = nn.LSTM(H, hidden, num_layers=LSTM_LAYERS, bidirectional=True, batch_first=True)
            self.mlp_head = nn.Sequential(nn.Linear(2 * hidden, 2 * hidden), nn.ReLU(), nn.Linear(2 * hidden, H))
        else:
            self.mlp_head = nn.Sequential(
                nn.Linear(H, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, H)
            )

    def forward(self) -> torch.Tensor:
        x = self.embedding.weight
        if self.kind is Encoder.LSTM:
            x = self.lstm_head(x.unsqueeze(0))[0].squeeze(0)  # [1, P, 2h]: the LSTM reads the P vectors in order
        return self.mlp_head(x)


class PrefixEncoder(nn.Module):
    """prefix_tuning's trainable part: the flat prefixes [P, L*2*D] themselves, or made by Li & Liang's MLP."""

    def __init__(
        self,
        layers: int,
        width: int,
        init_kv: torch.Tensor | None = None,
        init_inputs: torch.Tensor | None = None,
        hidden: int | None = None,
    ):
        """Without projection give `init_kv` [P, L*2*D]; with it, `init_inputs` [P, D] and `hidden`."""
        super().__init__()
        self.projection = init_inputs is not None
        init = init_inputs if self.projection else init_kv
        self.embedding = nn.Embedding(init.shape[0], init.shape[1])
        with torch.no_grad():
            self.embedding.weight.copy_(init.float())
        if self.projection:
            self.transform = nn.Sequential(nn.Linear(width, hidden), nn.Tanh(), nn.Linear(hidden, layers * 2 * width))

    def forward(self) -> torch.Tensor:
        x = self.embedding.weight
        return self.transform(x) if self.projection else x


def encoder_state(encoder: nn.Module) -> dict[str, torch.Tensor]:
    """An encoder's weights for trainer_state (resume needs them; inference needs only its output)."""
    return {k: v.detach() for k, v in encoder.state_dict().items()}


def load_encoder_state(encoder: nn.Module, tensors: dict[str, torch.Tensor], mismatch: str) -> None:
    """Load encoder weights from a checkpoint, refusing with `mismatch` when names or shapes differ."""
    own = encoder.state_dict()
    if set(tensors) != set(own) or any(tensors[k].shape != own[k].shape for k in own):
        raise SoftPromptError(mismatch)
    encoder.load_state_dict({k: v.to(own[k].device) for k, v in tensors.items()})
