"""One whole prompt-tuning step on a Llama 3 or Qwen 2.5 shape, minway against Hugging Face transformers + peft.

``bench_step.py`` for the second family: both sides get the same random-weight model shape, batch,
sequence length, prompt length and dtype, and do forward, backward to the prompt, clipping and AdamW,
the loss on the last few tokens of each row. Llama sequences begin with <|begin_of_text|> on both
sides (minway's model puts it before the prompt, PEFT's input ids carry it after): the same number of
positions either way.

    pip install transformers peft        # the baseline only, never needed by minway
    python benchmarks/bench_llama_step.py [--shape small-llama] [--batch 8] [--tokens 64] [--prompt 14] [--dtype fp32]

``--shape qwen2.5-0.5b`` or ``llama-3.2-1b`` are the real models' shapes (random weights); on a GPU
add ``--dtype bf16``.
"""
import argparse
import json
import platform
import subprocess
from dataclasses import replace
from datetime import date

import torch
from bench_step import DTYPES, OUTPUT_TOKENS, ROOT, time_steps

from minway.llama import Llama, Llama3Scaling, LlamaConfig, init_weights
from minway.objective import bank_losses
from minway.prompt import PromptBank

LLAMA_3_2_1B = LlamaConfig(vocab_size=128256, n_embd=2048, n_layer=16, n_head=32, n_kv_head=8, head_dim=64,
                           n_inner=8192, max_positions=131072, rms_norm_eps=1e-5, rope_theta=500000.0,
                           rope_scaling=Llama3Scaling(32.0, 1.0, 4.0, 8192), tie_word_embeddings=True,
                           bos_token_id=128000)
SHAPES = {
    "llama-3.2-1b": LLAMA_3_2_1B,
    "qwen2.5-0.5b": LlamaConfig(vocab_size=151936, n_embd=896, n_layer=24, n_head=14, n_kv_head=2, head_dim=64,
                                n_inner=4864, max_positions=32768, rope_theta=1000000.0, tie_word_embeddings=True,
                                qkv_bias=True, model_type="qwen2"),
    # Llama 3's vocabulary and scaling on a model small enough for a 2-core CPU
    "small-llama": replace(LLAMA_3_2_1B, n_embd=512, n_layer=4, n_head=8, n_kv_head=2, n_inner=1536,
                           tie_word_embeddings=False),
}


def minway_step(config, ids, n_prompt, dtype, device, attention):
    """The step of ``minway.run.training``: a PromptBank of one prompt and its objective."""
    model = init_weights(Llama(config, attention=attention)).to(device, dtype).freeze()
    bank = PromptBank(model, [list(range(n_prompt))])
    optimizer = torch.optim.AdamW(bank.parameters(), lr=0.01)
    rows = ids.tolist()
    inputs, outputs = [r[:-OUTPUT_TOKENS] for r in rows], [r[-OUTPUT_TOKENS:] for r in rows]
    owner, gammas = torch.zeros(len(rows), dtype=torch.long, device=device), torch.full((1,), 0.01, device=device)

    def step():
        loss = bank_losses(model, bank, owner, inputs, outputs, gammas).total.sum()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(bank.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return step


def hf_peft_step(config, ids, n_prompt, dtype, device):
    import transformers
    from peft import PromptTuningConfig, TaskType, get_peft_model

    sizes = dict(vocab_size=config.vocab_size, hidden_size=config.n_embd, intermediate_size=config.n_inner,
                 num_hidden_layers=config.n_layer, num_attention_heads=config.n_head,
                 num_key_value_heads=config.n_kv_head, max_position_embeddings=config.max_positions,
                 rms_norm_eps=config.rms_norm_eps, tie_word_embeddings=config.tie_word_embeddings)
    if config.model_type == "qwen2":
        hf_config, model_class = transformers.Qwen2Config(**sizes, rope_theta=config.rope_theta), \
            transformers.Qwen2ForCausalLM
    else:
        s = config.rope_scaling
        hf_config = transformers.LlamaConfig(**sizes, head_dim=config.head_dim, bos_token_id=config.bos_token_id,
                                             rope_theta=config.rope_theta, rope_scaling={
                                                 "rope_type": "llama3", "factor": s.factor,
                                                 "low_freq_factor": s.low_freq_factor,
                                                 "high_freq_factor": s.high_freq_factor,
                                                 "original_max_position_embeddings": s.original_max_positions})
        model_class = transformers.LlamaForCausalLM
    with torch.device(device):
        model = model_class(hf_config).to(dtype)
    model = get_peft_model(model, PromptTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=n_prompt))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.01)
    if config.bos_token_id is not None:  # the tokenizer's <|begin_of_text|> first, as a user's input ids have it
        ids = torch.cat([torch.full_like(ids[:, :1], config.bos_token_id), ids], dim=1)
    labels = torch.full_like(ids, -100)
    labels[:, -OUTPUT_TOKENS:] = ids[:, -OUTPUT_TOKENS:]
    mask = torch.ones_like(ids)

    def step():
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return step


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", default="small-llama", choices=sorted(SHAPES))
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--tokens", type=int, default=64)
    p.add_argument("--prompt", type=int, default=14)
    p.add_argument("--dtype", default="fp32", choices=sorted(DTYPES))
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--attention", default="auto")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    args = p.parse_args()

    device, dtype, config = torch.device(args.device), DTYPES[args.dtype], SHAPES[args.shape]
    ids = torch.randint(0, 128000, (args.batch, args.tokens), generator=torch.Generator().manual_seed(0))
    ids = ids.to(device)
    steps = {"hf+peft": hf_peft_step(config, ids, args.prompt, dtype, device),
             "minway": minway_step(config, ids, args.prompt, dtype, device, args.attention)}
    seconds = time_steps(steps, device, args.repeats, args.warmup)
    speedup = seconds["hf+peft"] / seconds["minway"]
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu-{torch.get_num_threads()}threads"
    print(f"{args.shape}, batch {args.batch}, {args.tokens} tokens, {args.prompt} prompt tokens, {args.dtype}, "
          f"{device_name}")
    print(f"{'':10} {'s/step':>9}")
    for name, s in seconds.items():
        print(f"{name:10} {s:9.3f}")
    print(f"speed-up of minway: {speedup:.2f}x")

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    out = ROOT / "benchmarks" / "results" / (f"{device_name.replace(' ', '_')}-{date.today()}-llama-step-{args.shape}-"
                                             f"{args.dtype}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "benchmark": "prompt-tuning step, Llama family", "device": device_name, "date": str(date.today()),
        "commit": commit, "torch": torch.__version__, "platform": platform.platform(), "args": vars(args),
        "seconds_per_step": seconds, "speedup": speedup}, indent=2, allow_nan=False) + "\n")
    print(f"written: {out}")


if __name__ == "__main__":
    main()
