"""A trained prompt as the input embeddings an engine with a `prompt_embeds` API takes (vLLM's route).

    embeds = prompted_embeddings(model, source_ids)      # [P + L, H]: the soft prompt, then the tokens' embeddings
    text = encode_embeds(embeds)                         # base64 of a safetensors file holding "prompt_embeds"
    embeds = decode_embeds(text)

An engine that takes embeddings instead of token ids (vLLM with --enable-prompt-embeds) can then run a trained
prompt without knowing about soft prompts: one row, no padding, positions 0..P+L-1 as training saw them.
`greedy_from_embeds` feeds such a tensor to the Hugging Face model as inputs_embeds; the tests check that its
greedy output is our generation's (docs/serving.md says what was and was not run against vLLM itself).
"""

from __future__ import annotations

import base64

import torch
from safetensors.torch import load, save

from .model import SoftPromptModel

EMBEDS_KEY = "prompt_embeds"


@torch.no_grad()
def prompted_embeddings(model: SoftPromptModel, source_ids: list[int]) -> torch.Tensor:
    """[soft prompt ; token embeddings of source_ids], [P + L, H], in the base's dtype, on the CPU."""
    table = model.base.get_input_embeddings()
    tokens = table(torch.tensor(source_ids, dtype=torch.long, device=table.weight.device))
    return torch.cat([model.prompt.to(tokens.dtype), tokens]).cpu()


def encode_embeds(embeds: torch.Tensor) -> str:
    """Base64 text of a safetensors file with one tensor, `prompt_embeds` [N, H] (no pickle)."""
    return base64.b64encode(save({EMBEDS_KEY: embeds.detach().contiguous().cpu()})).decode("ascii")


def decode_embeds(text: str) -> torch.Tensor:
    """The tensor encode_embeds wrote."""
    return load(base64.b64decode(text))[EMBEDS_KEY]


@torch.no_grad()
def greedy_from_embeds(base, embeds: torch.Tensor, max_new_tokens: int, eos_token_id: int) -> list[int]:
    """New token ids from greedy decoding of one row of input embeddings [N, H] by the Hugging Face model."""
    device = base.get_input_embeddings().weight.device
    row = embeds.to(device).unsqueeze(0)
    mask = torch.ones(row.shape[:2], dtype=torch.long, device=device)
    out = base.generate(
        inputs_embeds=row,
        attention_mask=mask,
        max_new_tokens=max_new_tokens,
        do_sample=False,
        num_beams=1,
        eos_token_id=eos_token_id,
        pad_token_id=eos_token_id,
    )
    return out[0].tolist()
