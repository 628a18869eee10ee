"""export_embeds: [soft prompt ; token embeddings], fed to the Hugging Face model as inputs_embeds (as an engine
with a prompt_embeds API would take them), decode greedily to our generation's output."""

import json

from conftest import script_cli, smoke_config
from softprompt.config import load_config
from softprompt.data import load_raw
from softprompt.embeds import decode_embeds, encode_embeds, greedy_from_embeds, prompted_embeddings
from softprompt.generate import Generator
from softprompt.generation import decode_tokens


def test_prompt_embeddings_decode_to_our_generation(smoke_overrides, tmp_path):
    cfg = load_config(smoke_config("sum"), smoke_overrides)
    records = list(load_raw(cfg, ("test",), cap_eval=False)["test"])[:4]
    gen = Generator.load(cfg)
    ours = gen.predict(records)
    eos = gen.tokenizer.eos_token_id
    theirs = []
    for record in records:
        source, _ = gen.encode(record)
        embeds = decode_embeds(encode_embeds(prompted_embeddings(gen.model, source)))  # through the wire format
        assert embeds.shape == (gen.model.prompt_length + len(source), gen.model.prompt.shape[1])
        new = greedy_from_embeds(gen.model.base, embeds, gen.limit(None), eos)
        theirs.append(decode_tokens(new, gen.tokenizer, eos, cfg.task.stop_at_newline))
    assert theirs == ours and len(set(ours)) > 1

    out = tmp_path / "embeds.jsonl"
    sets = [a for s in smoke_overrides for a in ("--set", s)]
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in records[:2]), encoding="utf-8")
    cli = script_cli("export_embeds.py")
    assert cli("--config", str(smoke_config("sum")), *sets, "--input", str(src), "--output", str(out)) == 0
    rows = [json.loads(l) for l in out.open(encoding="utf-8")]
    first = decode_embeds(rows[0]["prompt_embeds"])
    assert rows[0]["shape"] == list(first.shape) and rows[0]["max_tokens"] == gen.limit(None)
    assert first.equal(prompted_embeddings(gen.model, gen.encode(records[0])[0]))
