"""P-tuning (Liu et al. 2021, "GPT Understands, Too"): prompt tuning whose vectors an encoder makes.

    model = PTuningModel(base, PromptEncoder(init_prompt(base, tok, "words", 4, words), Encoder.MLP, hidden=64))
    out = model(input_ids, attention_mask, labels)      # as SoftPromptModel, the prompt = model.encoder()
    model.save_prompt("out/p")                          # prompt.safetensors: the encoder's output [P, H]

In training the P vectors [P, H] are `encoder()` (prompt_encoders.PromptEncoder, PEFT's layout), recomputed
at every forward so the gradient reaches the encoder's weights; everything else (the mask and label prefix,
the prompt after the left padding, positions from the mask) is SoftPromptModel's. Inference needs only the
output, so the prompt file holds just those vectors, as a prompt_tuning file does (PEFT saves the same:
`get_prompt_embedding_to_save`), and evaluation, MultiPromptModel and a PEFT export read it as one. The
encoder's weights go into training checkpoints only (trainer_state.safetensors, as `trainable.*`), for
--resume. `load_prompt` (final vectors) makes the model serve those vectors as they are (`fixed`);
`load_training_state` (encoder weights) makes it train again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from .model import SoftPromptModel
from .prompt_encoders import PromptEncoder, encoder_state, load_encoder_state


class PTuningModel(SoftPromptModel):
    """`base` frozen; the prompt [P, H] is `encoder()` while training, its saved output once loaded."""

    method = "p_tuning"

    def __init__(self, base: nn.Module, encoder: PromptEncoder, keep_dropout: bool = False, base_id: str | None = None):
        with torch.no_grad():
            first = encoder()
        super().__init__(base, first, keep_dropout=keep_dropout, base_id=base_id)
        self.prompt.requires_grad_(False)  # a copy of the encoder's output (what save_prompt writes), not trained
        self.encoder = encoder.float()
        self.fixed = False
        """True once final vectors were loaded: the model serves them and the encoder is unused."""

    def trainable_parameters(self) -> list[nn.Parameter]:
        return list(self.encoder.parameters())

    def prompt_vectors(self) -> torch.Tensor:
        return self.prompt if self.fixed else self.encoder()

    def final_prompt(self) -> torch.Tensor:
        with torch.no_grad():
            return self.prompt_vectors().detach().float()

    def training_state(self) -> dict[str, torch.Tensor]:
        return encoder_state(self.encoder)

    def load_training_state(self, tensors: dict[str, torch.Tensor], where: str) -> None:
        load_encoder_state(
            self.encoder,
            tensors,
            f"{where}: its encoder weights do not fit this run's p_tuning encoder "
            f"(prompt.encoder {self.encoder.kind.value}, prompt.encoder_hidden_size); resume with the config "
            "it was trained with",
        )
        self.fixed = False

    def save_prompt(self, directory: str | Path, **metadata: Any) -> None:
        with torch.no_grad():
            self.prompt.data = self.final_prompt().to(self.prompt.device)
        super().save_prompt(directory, **{"method": self.method, "encoder": self.encoder.kind.value, **metadata})

    def load_prompt(self, directory: str | Path, check_base: bool = True) -> dict[str, Any]:
        meta = super().load_prompt(directory, check_base)
        self.fixed = True
        return meta
