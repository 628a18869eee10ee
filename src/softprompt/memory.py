"""How much memory prompt tuning a model takes: its weights per dtype and rank, and its activations.

    python scripts/memory_table.py            # the table in docs/bigger-models.md

Nothing is allocated: the model is built and run under PyTorch's FakeTensorMode (tensors with shapes and
dtypes but no storage, dispatched as on a CPU), so a 70B model takes a second. Activations are not estimated
by a formula but counted: the bytes autograd saves for the backward pass of one training step, hooked with
`torch.autograd.graph.saved_tensors_hooks`, the frozen weights left out. Since only the prompt needs a
gradient, autograd keeps less than in full fine-tuning (no layer input is kept just for a weight gradient).

Shapes: a batch of B rows of L positions (the prompt's P included), the loss on the last T of them.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .config import Precision
from .devices import DTYPES

GiB = 2**30
BYTES = {p.value: t.itemsize for p, t in DTYPES.items()}  # "bf16" -> 2


def model_configs() -> dict[str, object]:
    """The table's models by name: architecture only (the sizes of the public configs), no weights."""
    from transformers import GPT2Config, LlamaConfig

    llama = dict(vocab_size=128256, max_position_embeddings=8192, tie_word_embeddings=False, rope_theta=500000.0)
    return {
        "gpt2": GPT2Config(),
        "gpt2-xl": GPT2Config(n_embd=1600, n_layer=48, n_head=25),
        "Llama-3-8B": LlamaConfig(
            hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
            num_key_value_heads=8, **llama,
        ),
        "Llama-3-70B": LlamaConfig(
            hidden_size=8192, intermediate_size=28672, num_hidden_layers=80, num_attention_heads=64,
            num_key_value_heads=8, **llama,
        ),
    }  # fmt: skip


@dataclass(frozen=True)
class Footprint:
    parameters: int
    """Parameters of the frozen base."""
    root_parameters: int
    """Those outside the transformer blocks (embeddings, final norm, output layer): FSDP's root unit."""
    block_parameters: int
    """Parameters of one transformer block."""
    activation_bytes: int
    """Bytes autograd saves for the backward pass of one step (all blocks)."""
    block_activation_bytes: int
    """The most any one block saves."""
    checkpointed_bytes: int
    """With train.gradient_checkpointing: each block's input kept, one block's activations at a time."""

    def weights(self, dtype: str, world: int = 1) -> int:
        """Bytes of the frozen weights on one rank, sharded evenly over `world` ranks."""
        return self.parameters * BYTES[dtype] // world


@contextlib.contextmanager
def _no_packed_sequence_check():
    # Fake tensors have no values, so transformers' data-dependent check for packed sequences (done when no
    # attention mask is given) cannot run; a batch of whole rows has none, which is what this answers.
    import transformers.masking_utils as masking

    original = masking.find_packed_sequence_indices
    masking.find_packed_sequence_indices = lambda position_ids: None
    try:
        yield
    finally:
        masking.find_packed_sequence_indices = original


def footprint(
    config, dtype: str = "bf16", batch: int = 2, length: int = 1024, targets: int = 128, prompt: int = 4, fake=True
) -> Footprint:
    """The Footprint of prompt tuning `config`'s model stored in `dtype` at one batch shape, as softprompt
    runs it: fused GELU, the output layer on the target positions only, the loss in fp32.

    fake=False runs on real CPU tensors instead (small models only; the tests check both count the same).
    """
    from torch._subclasses.fake_tensor import FakeTensorMode
    from transformers import AutoModelForCausalLM

    from .surgery import fuse_gelu, transformer_blocks

    torch_dtype = DTYPES[Precision(dtype)]
    with FakeTensorMode() if fake else contextlib.nullcontext(), _no_packed_sequence_check():
        base = fuse_gelu(AutoModelForCausalLM.from_config(config, dtype=torch_dtype))
        base.requires_grad_(False)
        base.eval()
        blocks = transformer_blocks(base)
        frozen = {id(t) for t in (*base.parameters(), *base.buffers())}
        saved: dict[int, int] = {}  # tensor id -> bytes (a tensor saved twice counts once)
        per_block: dict[int, int] = {}
        running = [-1]  # the block whose forward is running (-1: outside the blocks)
        for k, block in enumerate(blocks):
            block.register_forward_pre_hook(lambda module, args, k=k: running.__setitem__(0, k))
            block.register_forward_hook(lambda module, args, out: running.__setitem__(0, -1))

        def pack(t):
            whole = t._base if t._base is not None else t
            if id(whole) not in frozen and id(t) not in frozen and id(whole) not in saved:
                saved[id(whole)] = whole.numel() * whole.element_size()
                per_block[running[0]] = per_block.get(running[0], 0) + saved[id(whole)]
            return t

        hidden = base.get_input_embeddings().weight.shape[1]
        soft = torch.zeros(prompt, hidden, requires_grad=True)  # the prompt stays fp32
        ids = torch.zeros(batch, length - prompt, dtype=torch.long)
        targets = min(targets, length)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            embeds = torch.cat([soft.to(torch_dtype).expand(batch, -1, -1), base.get_input_embeddings()(ids)], 1)
            out = base.base_model(inputs_embeds=embeds, use_cache=False)[0]
            logits = base.get_output_embeddings()(out[:, -targets:])
            F.cross_entropy(logits.float().flatten(0, 1), torch.zeros(batch * targets, dtype=torch.long))
        n_params = sum(p.numel() for p in base.parameters())
        n_block = sum(p.numel() for p in blocks[0].parameters())
    total = sum(saved.values())
    in_blocks = [v for k, v in per_block.items() if k >= 0]
    outside = per_block.get(-1, 0)
    block_input = batch * length * hidden * BYTES[dtype]
    return Footprint(
        parameters=n_params,
        root_parameters=n_params - n_block * len(blocks),
        block_parameters=n_block,
        activation_bytes=total,
        block_activation_bytes=max(in_blocks),
        checkpointed_bytes=outside + len(blocks) * block_input + max(in_blocks),
    )


def gib(n: float) -> str:
    return f"{n / GiB:,.1f}" if n >= GiB else f"{n / GiB:.2f}"


def count(n: int) -> str:
    return f"{n / 1e9:.2f} B" if n >= 1e9 else f"{n / 1e6:.0f} M"


def memory_table(world: int = 8, batch: int = 2, length: int = 1024) -> str:
    """The table of docs/bigger-models.md, in Markdown (GiB = 2^30 bytes)."""
    rows = [
        "| model | parameters | weights fp32 | weights bf16 | bf16 per rank, FSDP N=" + f"{world}"
        + f" | activations bf16, {batch} × {length:,} | with gradient checkpointing |",
        "|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for name, config in model_configs().items():
        f = footprint(config, "bf16", batch, length)
        # FSDP: each rank keeps its shard and, while a unit computes, the unit's whole weights: the root (kept
        # gathered for the whole forward) plus about two blocks (one computing, the next prefetched).
        gathered = (f.root_parameters + 2 * f.block_parameters) * BYTES["bf16"]
        rows.append(
            f"| {name} | {count(f.parameters)} | {gib(f.weights('fp32'))} | {gib(f.weights('bf16'))} "
            f"| {gib(f.weights('bf16', world))} + {gib(gathered)} gathered | {gib(f.activation_bytes)} "
            f"| {gib(f.checkpointed_bytes)} |"
        )
    return "\n".join(rows)
